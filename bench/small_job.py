"""Cost of the small default job's search, this checkout against another, side by side (issue 23).

    python -m bench.small_job --other /tmp/before            # 2 000 x 128, then 50 000 x 512 once each
    python -m bench.small_job --other /tmp/before --large-n 0 --rounds 5

The search a default job runs (`bench.speed.job_like_search`: half the rows held out at sample weight 0,
labels, so the evidence check's four one-region searches run first) on `bench.speed.labelled_data`,
timed in a fresh process per measurement that imports the engine of one checkout; the checkouts
alternate within each round, so both see the same load. Each measurement: one warm-up search, then
`--repeats` timed ones (CPU seconds by `time.process_time`, wall by `time.perf_counter`), on one torch
thread and at the machine's default thread count, and the optimiser steps they took (every call of
`_optimise_region`, the evidence check's included), so CPU per step too. Medians over the rounds.
The large set (`auto` runs the ball there) shows the change costs nothing at large n.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child(n: int, d: int, threads: int, repeats: int) -> dict[str, float]:
    """Time the job-like search of the checkout on sys.path (run in a fresh process)."""
    import importlib
    import time

    import torch

    from bench.speed import job_like_search, labelled_data
    from spotlight.contract.params import SearchParams

    search_module = importlib.import_module("worker.engine.search")
    if threads:
        torch.set_num_threads(threads)
    steps = [0]
    optimise = search_module._optimise_region

    def counted(*args, **kwargs):
        found = optimise(*args, **kwargs)
        steps[0] += found.steps_run
        return found

    search_module._optimise_region = counted
    x, loss, labels, _ = labelled_data(n, d)
    params = SearchParams(device="cpu")
    job_like_search(x, loss, labels, params)  # warm-up
    steps[0] = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        result = job_like_search(x, loss, labels, params)
    cpu, wall = (time.process_time() - cpu0) / repeats, (time.perf_counter() - wall0) / repeats
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "steps": steps[0] / repeats,
        "cpu_ms_per_step": 1e3 * cpu / max(1, steps[0] / repeats),
        "kernel": result.regions[0].kernel,
        "lift": [round(r.lift, 6) for r in result.regions],
    }


def measure(checkout: Path, n: int, d: int, threads: int, repeats: int) -> dict[str, float]:
    # imported here, not at the top: the child executes this file in a checkout that may not have it
    from bench.checkout_child import call_in_checkout

    # this file's `child` runs in a process whose sys.path starts with `checkout` (its engine, its bench.speed)
    return call_in_checkout(checkout, __file__, f"child({n}, {d}, {threads}, {repeats})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--other", type=Path, required=True, help="the checkout to compare with (e.g. git archive main)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large-n", type=int, default=50_000, help="rows of the d = 512 set (0: skip)")
    args = parser.parse_args()
    checkouts = {"before": args.other.resolve(), "after": REPO}
    cases = [(2000, 128, 1, args.rounds, args.repeats), (2000, 128, 0, args.rounds, args.repeats)]
    if args.large_n:
        cases.append((args.large_n, 512, 1, 1, 1))
        cases.append((args.large_n, 512, 0, 1, 1))
    print(f"load average at start: {os.getloadavg()}")
    for n, d, threads, rounds, repeats in cases:
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in checkouts}
        for _ in range(rounds):
            for name, path in checkouts.items():
                runs[name].append(measure(path, n, d, threads, repeats))
        label = f"{n} x {d}, {'1 thread' if threads else 'default threads'}"
        for name in checkouts:
            r = runs[name]
            med = {k: statistics.median(x[k] for x in r) for k in ("cpu_s", "wall_s", "steps", "cpu_ms_per_step")}
            print(
                f"{label:32s} {name:6s} CPU {med['cpu_s']:.3f} s  wall {med['wall_s']:.3f} s  "
                f"steps {med['steps']:.0f}  CPU/step {med['cpu_ms_per_step']:.3f} ms  "
                f"(CPU per round {[round(x['cpu_s'], 3) for x in r]}; kernel {r[0]['kernel']}; lifts {r[0]['lift']})"
            )
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
