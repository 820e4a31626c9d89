"""Speed benchmark: one optimiser step against the paper's formulation and the memory floor.

    python -m bench.speed              # n = 50 000, d = 512 and 2048, then 5 regions at d = 512
    python -m bench.speed --n 20000    # smaller, for a smoke test

Per step, measured in this one run on the same matrix X (n x d, float32):
- engine: one step of this engine (objective + gradient of all `restarts` starts at once, via
  ||x||^2 - 2 x.mu + ||mu||^2: X M forward, G X backward, two passes), exactly the function the
  search loop calls;
- paper:  the authors' formulation, sum(((x - mu) @ P) * (x - mu)) with a d x d precision matrix P
  and autograd, one start, timed over a few steps (it is O(n d^2));
- floor:  two passes over X, X @ v and X^T @ c (matrix-vector products): what a two-pass
  O(n d) gradient step must read; timed on X and on a transposed copy, the faster counts.
Engine and floor are timed in turn, 15 rounds of a few back-to-back calls each (see
`_interleaved`); the ratios printed are medians of per-round ratios (robust to the drift of a
shared machine), the times medians of their own.
Then the wall time of a complete default search (5 regions) at d = 512.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from spotlight.params import SearchParams
from worker.engine import core, search


def _interleaved(fns: dict[str, Callable[[], object]], rounds: int, block: int = 4) -> dict[str, list[float]]:
    """Per round, the wall time (seconds) of each fn: the median of `block` - 1 back-to-back calls,
    after one call that is not counted. Fns take turns, round after round, after one warm-up each.

    Why interleaved: on a shared machine the speed drifts by tens of percent over a minute; timing
    the engine and the floor in turn and taking the median of per-round *ratios* cancels that drift,
    where medians of separately timed blocks do not. Why back to back, first call dropped: a search
    runs its steps back to back, while the call right after a different kind of work pays for that
    work's leftovers (after a torch product its OpenMP threads spin on both cores for a while, which
    slowed the next step by ~20 %); every fn is timed the same way.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            calls = []
            for _ in range(block - 1):
                t = time.perf_counter()
                fn()
                calls.append(time.perf_counter() - t)
            times[name].append(statistics.median(calls))
    return times


def _timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn() over `repeats` runs after one warm-up (seconds)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ReLU-like embeddings (non-negative, off-centre) with a planted high-loss cluster (2 % of rows,
    shifted along 16 dimensions), so that the search has something real to find."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(size=(n, d)).astype(np.float32) + 0.3, 0)
    cluster = rng.choice(n, size=n // 50, replace=False)
    x[np.ix_(cluster, np.arange(min(16, d)))] += 1.5
    loss = rng.exponential(0.5, size=n).astype(np.float32)
    loss[cluster] += 2.0
    return x, loss


def step_times(x_np: np.ndarray, loss: np.ndarray, restarts: int, paper_steps: int) -> dict[str, float]:
    x = torch.from_numpy(x_np)
    n, d = x.shape
    z = (x - x.mean(0)) / x.std()
    data = core.EmbeddingMatrix(z)
    scores = torch.from_numpy(loss)
    w = torch.ones(n)
    active = None  # as the search passes it when every sample weight is positive
    g = torch.Generator().manual_seed(0)

    ws = w * scores  # once per region in the search, so not part of a step

    def engine(r: int) -> Callable[[], object]:
        mu = torch.randn(d, r, generator=g) * 0.1
        theta = torch.full((1, r), -1.0)
        return lambda: core.objective_and_gradient(
            data, mu, theta, scores, w, active, "gaussian", 0.02 * n, 0.5 * n, 1.0, None, ws
        )

    v, c = torch.randn(d, generator=g), torch.randn(n, generator=g)
    zt = z.t().contiguous()
    t = _interleaved(
        {
            "engine": engine(restarts),
            "engine_1": engine(1),
            "floor_rows": lambda: (z @ v, c @ z),
            "floor_cols": lambda: (v @ zt, zt @ c),
        },
        rounds=15,
    )

    # the floor of a round is the faster of the two layouts: the least two passes can cost here
    floor = [min(a, b) for a, b in zip(t["floor_rows"], t["floor_cols"], strict=True)]
    out = {
        "engine": statistics.median(t["engine"]),
        "engine_1": statistics.median(t["engine_1"]),
        "floor": statistics.median(floor),
        "ratio": statistics.median(e / f for e, f in zip(t["engine"], floor, strict=True)),
        "ratio_1": statistics.median(e / f for e, f in zip(t["engine_1"], floor, strict=True)),
    }
    mu = torch.zeros(d, requires_grad=True)
    log_tau = torch.tensor(float(np.log(1e-4)), requires_grad=True)

    def paper() -> None:
        precision = torch.eye(d) * torch.exp(log_tau)
        diff = z - mu
        k = torch.exp(-torch.sum((diff @ precision) * diff, dim=1) / 2)
        obj = (k / k.sum()) @ scores
        obj.backward()

    out["paper"] = _timed(paper, paper_steps)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--paper-steps", type=int, default=2, help="timed steps of the O(n d^2) formulation")
    parser.add_argument(
        "--kernels",
        nargs="+",
        default=["auto"],
        help="kernels timed in the full search, one after another (auto: the one it resolves to)",
    )
    args = parser.parse_args()
    params = SearchParams(device="cpu")
    print(
        f"# bench.speed — {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} (shared machine)"
    )
    print(f"# per-step times, n = {args.n}, float32; engine = {params.restarts} restarts at once (torch, two passes)")
    print(
        f"{'d':>5s} | {'engine ms':>9s} | {'engine 1 start':>14s} | {'floor ms':>8s} | {'paper ms':>9s} | "
        f"{'engine/floor':>12s} | {'1 start/floor':>13s} | {'paper/engine':>12s} | {'paper/(engine/R)':>16s}"
    )
    for d in args.dims:
        x, loss = make_data(args.n, d)
        t = step_times(x, loss, params.restarts, args.paper_steps)
        print(
            f"{d:5d} | {t['engine'] * 1e3:9.1f} | {t['engine_1'] * 1e3:14.1f} | {t['floor'] * 1e3:8.1f} | "
            f"{t['paper'] * 1e3:9.0f} | {t['ratio']:12.2f} | {t['ratio_1']:13.2f} | "
            f"{t['paper'] / t['engine']:12.0f} | {t['paper'] / (t['engine'] / params.restarts):16.0f}"
        )
        del x
    x, loss = make_data(args.n, 512)
    for kernel in args.kernels:
        p = params.model_copy(update={"kernel": kernel})
        t = time.perf_counter()
        result = search(x, loss, p)
        wall = time.perf_counter() - t
        steps = [r.steps_run for r in result.regions]
        lifts = [round(r.lift, 2) for r in result.regions]
        default = " (default)" if kernel == params.kernel else ""
        ran = result.regions[0].kernel
        resolved = f" -> {ran}" if ran != kernel else ""
        print(
            f"# full search, {p.n_spotlights} regions, {kernel}{default}{resolved}, restarts "
            f"{p.restarts}, cap {p.steps} steps, n = {args.n}, d = 512: {wall:.1f} s "
            f"({wall / sum(steps) * 1e3:.1f} ms a step, everything included); steps per region {steps}; "
            f"lifts {lifts}; load {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    main()
