"""Speed benchmark: one optimiser step against the paper's formulation and the memory floor.

    python -m bench.speed              # n = 50 000, d = 512 and 2048, 5 regions at d = 512, end to end
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
Then the wall time of a complete default search (5 regions) at d = 512, its passes over X per region
(`SearchResult.passes`: products with X or X^T over all rows, the machine-independent cost), the same
by phase of the search (`SearchResult.passes_by_phase`: starts, steps, member centres, refits, edge
fit, region weights, evidence check) and its ratio to the memory floor (wall time over passes x one
floor pass), with its CPU seconds (on a shared machine the steadier figure).

    python -m bench.speed --dims 512 --job-like   # then the default search as a job runs it

`--job-like`: half the rows held out for the verdict at sample weight 0 (spotlight/contract/verdict.py), labels
(so the evidence check runs first), the spotlight size for the searched share: what worker/task.py
hands the engine.

Then, end to end through the API (skip with `--no-e2e`; `--e2e-only` runs only this part):

    python -m bench.speed --e2e-only --e2e-repo /path/to/other/checkout   # before/after

A whole service in a temporary folder (`bench.load.Service`: embedded Redis and the checkout's own
`spotlight up` with one search worker; `--e2e-plain`: the API and one plain `spotlight worker`) runs
default 5-region jobs on a 2 000 x 128 set with labels and on `--e2e-large` n x 512 (0 to skip), each
submitted as soon as the previous one is finished (a warm-up job first), timed from the submission to
the first poll that sees `finished` (polled every 20 ms). Beside each set, in the same run: the job's
search phase and passes over X per region (from the task's summary), the search a job runs timed alone
in this process (`job_like_search`), both as a ratio to the memory floor on those rows (wall over
passes x one floor pass), and on the small set the Domino-style mixture slicer (`bench.mixture_slicer`,
5 slices): what a user would run instead.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from spotlight.contract.params import SearchParams
from worker.engine import SearchResult, core, search
from worker.engine.variants import smooth
from worker.engine.variants.gaussian import Gaussian


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
        ctx = core.StepContext(data, w, active, 0.02 * n)
        return lambda: smooth.spherical_step(Gaussian, ctx, mu, theta, ws, 0.5 * n)

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
    parser.add_argument(
        "--job-like", action="store_true", help="then the default search as a job runs it (held-out rows, labels)"
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end part (see above)")
    parser.add_argument("--e2e-only", action="store_true", help="only the end-to-end part")
    parser.add_argument("--e2e-large", type=int, default=50_000, help="rows of the large end-to-end set (0: none)")
    parser.add_argument("--e2e-jobs", type=int, default=3, help="timed jobs per set (after one warm-up)")
    parser.add_argument("--e2e-repo", type=Path, default=Path(__file__).resolve().parents[1], help="service checkout")
    parser.add_argument("--e2e-plain", action="store_true", help="the API and one plain worker, not `spotlight up`")
    args = parser.parse_args()
    if args.e2e_only:
        end_to_end(args.e2e_repo.resolve(), args.e2e_large, args.e2e_jobs, args.e2e_plain)
        return
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
    floor_at_512 = 0.0
    for d in args.dims:
        x, loss = make_data(args.n, d)
        t = step_times(x, loss, params.restarts, args.paper_steps)
        floor_at_512 = t["floor"] if d == 512 or not floor_at_512 else floor_at_512
        print(
            f"{d:5d} | {t['engine'] * 1e3:9.1f} | {t['engine_1'] * 1e3:14.1f} | {t['floor'] * 1e3:8.1f} | "
            f"{t['paper'] * 1e3:9.0f} | {t['ratio']:12.2f} | {t['ratio_1']:13.2f} | "
            f"{t['paper'] / t['engine']:12.0f} | {t['paper'] / (t['engine'] / params.restarts):16.0f}"
        )
        del x
    x, loss = make_data(args.n, 512)
    for kernel in args.kernels:
        p = params.model_copy(update={"kernel": kernel})
        t, cpu = time.perf_counter(), time.process_time()
        result = search(x, loss, p)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        per_region = result.passes / len(result.regions)
        floor_pass = floor_at_512 / 2.0  # the floor is two passes
        steps = [r.steps_run for r in result.regions]
        lifts = [round(r.lift, 2) for r in result.regions]
        default = " (default)" if kernel == params.kernel else ""
        ran = result.regions[0].kernel
        resolved = f" -> {ran}" if ran != kernel else ""
        print(
            f"# full search, {p.n_spotlights} regions, {kernel}{default}{resolved}, restarts "
            f"{p.restarts}, cap {p.steps} steps, n = {args.n}, d = 512: {wall:.1f} s "
            f"({wall / sum(steps) * 1e3:.1f} ms a step, everything included); steps per region {steps}; "
            f"passes over X per region {per_region:.1f}; wall / (passes x floor pass) "
            f"{wall / (result.passes * floor_pass):.2f}; lifts {lifts}; CPU {cpu:.1f} s; load {os.getloadavg()[0]:.2f}"
        )
        print(f"#   {phase_passes(result)}")
    if args.job_like:
        x, loss, labels, _ = labelled_data(args.n, 512)
        t, cpu = time.perf_counter(), time.process_time()
        result = job_like_search(x, loss, labels, params)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        print(
            f"# as a job searches (half the rows held out for the verdict, labels, evidence check), defaults, "
            f"n = {args.n}, d = 512: {wall:.1f} s, CPU {cpu:.1f} s ({result.regions[0].kernel}); "
            f"load {os.getloadavg()[0]:.2f}"
        )
        print(f"#   {phase_passes(result)}")
    if not args.no_e2e:
        end_to_end(args.e2e_repo.resolve(), args.e2e_large, args.e2e_jobs, args.e2e_plain)


def phase_passes(result: SearchResult) -> str:
    """Passes over X per region, by phase of the search (`SearchResult.passes_by_phase`)."""
    regions = max(1, len(result.regions))
    parts = ", ".join(f"{name} {count / regions:.1f}" for name, count in result.passes_by_phase.items())
    return f"passes over X per region {result.passes / regions:.1f}: {parts}"


def job_like_search(
    x: np.ndarray,
    loss: np.ndarray,
    labels: np.ndarray,
    params: SearchParams,
    predictions: np.ndarray | None = None,
) -> SearchResult:
    """The search a default job runs (worker/task.py): the verdict's held-out rows
    (`verdict.split(n, params.seed)`) at sample weight 0 with their losses masked, the spotlight size for
    the searched share, the labels (and predictions) as evidence (so the evidence check runs first)."""
    from spotlight.contract import verdict

    parts = verdict.split(x.shape[0], params.seed)
    masked, weights = verdict.search_inputs(loss, None, parts)
    p = params.model_copy(update={"spotlight_size": verdict.search_size(params.spotlight_size)})
    return search(x, masked, p, labels=labels, predictions=predictions, sample_weights=weights)


def labelled_data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`make_data` with 10 classes: labels, predicted probabilities (right on most rows, wrong on the
    planted high-loss ones) and losses, as a user's upload holds them."""
    x, loss = make_data(n, d, seed)
    rng = np.random.default_rng(seed + 1)
    labels = rng.integers(0, 10, size=n)
    logits = rng.normal(size=(n, 10))
    logits[np.arange(n), labels] += np.where(loss > 2.0, -2.0, 3.0)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return x, loss, labels.astype(np.int64), probs


def floor_pass_s(x: np.ndarray, rounds: int = 5) -> float:
    """One pass over these rows at the memory floor (seconds): half the faster of two matrix-vector
    passes, X v and X^T c, on X and on a transposed copy, timed as `step_times` times the floor."""
    z = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    g = torch.Generator().manual_seed(0)
    v, c = torch.randn(z.shape[1], generator=g), torch.randn(z.shape[0], generator=g)
    zt = z.t().contiguous()
    t = _interleaved({"rows": lambda: (z @ v, c @ z), "cols": lambda: (v @ zt, zt @ c)}, rounds=rounds)
    return statistics.median(min(a, b) for a, b in zip(t["rows"], t["cols"], strict=True)) / 2.0


def end_to_end(repo: Path, large_n: int, jobs: int, plain: bool = False) -> None:
    """Through the API (`bench.load.Service`: embedded Redis and the checkout's `spotlight up` with one
    search worker; `plain`: the API and one plain worker), beside the engine alone and the floor.

    Per set: submit to finished of `jobs` default jobs (after a warm-up), each submitted as soon as the
    previous one is finished, its report not waited for (a pipeline submitting jobs), with the task's
    search phase (`phases_s`) and the passes over X per region of the job's own search (RQ's copy of the
    task's summary; a checkout that does not return them shows "?"); then in this process the search
    the job runs (`job_like_search`) timed alone, its passes per region, and both against the floor:
    wall / (passes x one floor pass on these rows); on the small set, the mixture slicer."""
    import httpx
    import redis
    from rq.job import Job

    from bench import mixture_slicer
    from bench.load import Service, auth

    sets = [("2000 x 128", *labelled_data(2000, 128))]
    if large_n:
        sets.append((f"{large_n} x 512", *labelled_data(large_n, 512)))
    how = "api + one plain worker" if plain else "spotlight up, one search worker"
    with tempfile.TemporaryDirectory(prefix="spotlight-speed-") as tmp:
        service = Service(Path(tmp), workers=1, tenants=1, repo=repo, up=not plain)
        try:
            service.start()
            conn = redis.Redis.from_url(service.redis.url)
            with httpx.Client(base_url=service.url, timeout=600) as c:
                for name, x, loss, labels, probs in sets:
                    buf = io.BytesIO()
                    np.savez(buf, embeddings=x, losses=loss, labels=labels)
                    files = {"file": ("d.npz", buf.getvalue(), "application/octet-stream")}
                    r = c.post("/v1/datasets", headers=auth(0), files=files)
                    assert r.status_code in (200, 201), r.text
                    dataset = r.json()["id"]
                    runs = [_job_run(c, conn, Job, dataset, auth(0)) for _ in range(jobs + 1)][1:]  # first: warm-up
                    t, cpu = time.perf_counter(), time.process_time()
                    engine = job_like_search(x, loss, labels, SearchParams(device="cpu"))
                    alone, cpu = time.perf_counter() - t, time.process_time() - cpu
                    floor = floor_pass_s(x)
                    regions = max(1, len(engine.regions))
                    walls = " / ".join(f"{run['wall']:.2f}" for run in runs)
                    searches = " / ".join(f"{run['search']:.2f}" if run["search"] else "?" for run in runs)
                    passes = {f"{run['passes'] / regions:.1f}" if run["passes"] else "?" for run in runs}
                    ratios = " / ".join(
                        f"{run['search'] / (run['passes'] * floor):.1f}" if run["search"] and run["passes"] else "?"
                        for run in runs
                    )
                    line = (
                        f"# end to end ({repo.name}, {how}), {name}, 5 regions, defaults, labels: submit to finished "
                        f"{walls} s (search phase {searches} s; {'/'.join(sorted(passes))} passes per region; "
                        f"search / (passes x floor pass) {ratios}); engine alone as the job searches (this checkout) "
                        f"{alone:.2f} s, CPU {cpu:.2f} s ({engine.regions[0].kernel}, "
                        f"{engine.passes / regions:.1f} passes per region; wall / (passes x floor pass) "
                        f"{alone / (engine.passes * floor):.1f}; floor pass {floor * 1e6:.0f} µs)"
                    )
                    if name.startswith("2000"):
                        t = time.perf_counter()
                        mixture_slicer.fit_slices(x, labels, probs, loss, n_slices=5)
                        line += f"; mixture slicer {time.perf_counter() - t:.2f} s"
                    print(line + f"; load {os.getloadavg()[0]:.2f}", flush=True)
        finally:
            service.stop()


def _job_run(c, conn, job_class, dataset: str, headers: dict[str, str]) -> dict[str, float | None]:
    """One job: seconds from POST /v1/jobs to the first poll that sees it finished, then its search
    phase and passes as the task returned them to RQ (None when this checkout's task does not)."""
    t = time.perf_counter()
    r = c.post("/v1/jobs", headers=headers, json={"dataset": dataset, "params": {"device": "cpu"}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    while True:
        status = c.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"]
        if status == "finished":
            wall = time.perf_counter() - t
            break
        if status in ("failed", "canceled"):
            raise SystemExit(f"job {job_id} ended {status}")
        time.sleep(0.02)
    job = job_class.fetch(job_id, connection=conn)
    deadline = time.perf_counter() + 10
    while not job.is_finished and time.perf_counter() < deadline:  # RQ saves its result after our meta says so
        time.sleep(0.01)
    summary = job.return_value() or {}
    return {
        "wall": wall,
        "search": (summary.get("phases_s") or {}).get("search"),
        "passes": summary.get("passes"),
    }


if __name__ == "__main__":
    main()
