"""False alarms on real embeddings with labels: the real-text sets with their losses shuffled, run as jobs.

    python -m bench.null_labels                                    # seeds 0-9 of both encoders, 2 shuffles each
    python -m bench.null_labels --seeds 0-4 --shuffles 1 --variant 'unchecked={"evidence_check": false}'

Why: `bench.trust` and `bench.compare` pass no labels, so nothing that depends on label evidence (the
evidence itself, the evidence check) is exercised on null data there. Here every set of `bench.real`
(384-d sentence embeddings of real texts, the head's labels and predictions) gets its losses permuted,
so no region is a weak spot, and is searched as a job is (`spotlight.contract.verdict`: half the rows
searched, each region tested on the other half, Holm over the regions at the job's `level`, 0.05 by default). Per setting: how many
jobs report at least one significant region (a false alarm in a nightly gate), and how many regions in
all. Settings: this checkout's defaults and each `--variant 'name={json params}'`, on the same jobs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os

import numpy as np

from bench.real_jitter import _seeds


def significant_regions(x: np.ndarray, loss: np.ndarray, labels: np.ndarray, predictions: np.ndarray, params) -> int:
    """Regions of one job whose held-out test is significant after Holm (the job's verdict, as
    worker/task.py draws it: region k's test seeded by params.seed + k)."""
    from bench.speed import job_like_search
    from spotlight.contract import verdict

    result = job_like_search(x, loss, labels, params, predictions)
    parts = verdict.split(len(loss), params.seed)  # the split job_like_search searched on
    raw = []
    for k, r in enumerate(result.regions):
        rows = verdict.region_rows(result.weights[:, k], r.kernel, parts)
        test = verdict.holdout_test(
            loss, rows.held_out, parts.held_out, result.weights[:, k], objective=params.objective, seed=params.seed + k
        )
        raw.append(test.p_value)
    return sum(a is not None and a <= params.level for a in verdict.holm(raw))


def main() -> int:
    from bench import real
    from bench.real_data import ENCODERS
    from spotlight.contract.params import SearchParams

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=_seeds, default=_seeds("0-9"), help="e.g. 0-9 or 0,3")
    parser.add_argument("--shuffles", type=int, default=2)
    parser.add_argument("--encoder", choices=ENCODERS, action="append")
    parser.add_argument("--variant", action="append", default=[], help="name={json params}")
    parser.add_argument("--no-default", action="store_true", help="leave out this checkout's defaults")
    args = parser.parse_args()

    settings: dict[str, dict] = {} if args.no_default else {"default": {}}
    for v in args.variant:
        name, _, js = v.partition("=")
        settings[name] = json.loads(js)
    print(
        f"# bench.null_labels — {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{args.shuffles} shuffle(s) per set, load {os.getloadavg()[0]:.2f}"
    )
    alarms = dict.fromkeys(settings, 0)
    regions = dict.fromkeys(settings, 0)
    jobs = 0
    for encoder in args.encoder or ENCODERS:
        for seed in args.seeds:
            s = real.build_set(encoder, seed)
            predictions = s.probs.argmax(1).astype(np.int64)
            for shuffle in range(args.shuffles):
                loss = np.random.default_rng([seed, shuffle, 11]).permutation(s.loss).astype(np.float32)
                jobs += 1
                line = []
                for name, extra in settings.items():
                    params = SearchParams(device="cpu", seed=shuffle, **extra)
                    k = significant_regions(s.x, loss, s.labels, predictions, params)
                    alarms[name] += k > 0
                    regions[name] += k
                    line.append(f"{name} {k}")
                print(f"# {s.name} shuffle {shuffle}: significant regions: {', '.join(line)}", flush=True)
    for name in settings:
        print(f"#   {name}: jobs with a significant region {alarms[name]}/{jobs}; significant regions {regions[name]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
