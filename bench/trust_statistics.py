"""Which held-out statistic confirms a region: five of them on the same searches (docs/engine.md, "The verdict").

    python -m bench.trust_statistics                       # the 400 MiniLM rows of the tests' asset, as in the docs
    python -m bench.trust_statistics --effects 0 --jobs 60 --first-seed 100   # the null column

Jobs are bench/trust.py's (`make_job`: real losses permuted over the rows; planted: `effect` loss
standard deviations on the 3 % of rows nearest a random row), searched as the worker does (a seeded
half, spotlight/contract/verdict.py), 3 regions, 100 steps. On each search, each statistic of the held-out
half gives one p-value per region, Holm over the job's regions, level 0.05:

- ``members``: the held-out rows at or above the region's member threshold (no top-up), their mean
  loss against random same-size sets of held-out rows (the test as first built);
- ``top m`` / ``top 2m``: the m (2m) heaviest held-out rows, m = the region's searched members
  scaled to the held-out half, the same test;
- ``rank``: the rank correlation of kernel weight and loss over every held-out row (permutations);
- ``kernel``: the default, spotlight/contract/verdict.py's kernel_test.

A planted job counts as found by a statistic when a region it calls real has searched members that
are at least half planted rows; ``search found`` counts the jobs where some region's are (the most
any held-out test can confirm).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.trust import FIXTURE, LEVEL, PARAMS, Embeddings, _member_p, make_job
from spotlight.contract import verdict
from spotlight.contract.params import SearchParams
from worker.engine import search

RULES = ("members", "top m", "top 2m", "rank", "kernel")


def _ranks(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.size)
    out[np.argsort(a, kind="stable")] = np.arange(a.size)
    return out


def _rank_p(score: np.ndarray, loss: np.ndarray, rng: np.random.Generator, draws: int = 2000) -> float:
    s = _ranks(score) - (score.size - 1) / 2
    r = _ranks(loss)
    observed = float(s @ r)
    null = r[np.argsort(rng.random((draws, r.size)), axis=1)] @ s
    return float((1 + np.count_nonzero(null >= observed - 1e-9 * abs(observed))) / (1 + draws))


def p_values(job_x: np.ndarray, losses: np.ndarray, planted: np.ndarray | None, seed: int) -> tuple[dict, list[bool]]:
    """Per statistic, the Holm-adjusted calls of the job's regions; and per region, whether the
    search found the planted place (its searched members at least half planted)."""
    n = job_x.shape[0]
    parts = verdict.split(n, seed)
    held = parts.held_out
    search_losses, weights = verdict.search_inputs(losses, None, parts)
    result = search(job_x, search_losses, SearchParams(**PARAMS, seed=seed), sample_weights=weights)
    rng = np.random.default_rng([seed, 5])
    raw: dict[str, list[float | None]] = {r: [] for r in RULES}
    found = []
    for k, region in enumerate(result.regions):
        column = np.asarray(result.weights[:, k], dtype=np.float64)
        rows = verdict.region_rows(result.weights[:, k], region.kernel, parts)
        found.append(planted is not None and rows.searched.size > 0 and planted[rows.searched].mean() >= 0.5)
        order = held[np.lexsort((np.random.default_rng([seed, k]).random(held.size), -column[held]))]
        m = int(round(rows.searched.size * held.size / parts.searched.size))
        raw["members"].append(_member_p(losses, rows.held_out, held, seed + k))
        raw["top m"].append(_member_p(losses, order[:m], held, seed + k))
        raw["top 2m"].append(_member_p(losses, order[: 2 * m], held, seed + k))
        raw["rank"].append(_rank_p(column[held], losses[held].astype(np.float64), rng))
        raw["kernel"].append(verdict.kernel_test(losses, result.weights[:, k], held, seed=seed + k)[0])
    calls = {r: [a is not None and a <= LEVEL for a in verdict.holm(ps)] for r, ps in raw.items()}
    return calls, found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--effects", default="3,4,6,8", help="planted effects in loss sd (0: null jobs)")
    ap.add_argument("--jobs", type=int, default=16, help="jobs per effect")
    ap.add_argument("--first-seed", type=int, default=200)
    args = ap.parse_args()
    data = np.load(FIXTURE)
    e = Embeddings("minilm-384d-asset", data["embeddings"].astype(np.float32), data["losses"])
    print(f"{e.name}: n={e.x.shape[0]}, d={e.x.shape[1]}; {PARAMS}; level {LEVEL}")
    for effect in (float(v) for v in args.effects.split(",")):
        counts = dict.fromkeys(RULES, 0)
        searched = 0
        t = time.perf_counter()
        for seed in range(args.first_seed, args.first_seed + args.jobs):
            job = make_job(e, e.x.shape[0], seed, effect)
            calls, found = p_values(job.x, job.losses, job.planted, seed)
            searched += any(found)
            for r in RULES:
                if effect <= 0:
                    counts[r] += any(calls[r])
                else:
                    counts[r] += any(c and f for c, f in zip(calls[r], found, strict=True))
        what = "null jobs with an alarm" if effect <= 0 else f"planted +{effect:g} sd found"
        cells = "  ".join(f"{r} {counts[r]}/{args.jobs}" for r in RULES)
        tail = "" if effect <= 0 else f"  (search found {searched}/{args.jobs})"
        print(f"{what}: {cells}{tail}  [{(time.perf_counter() - t) / args.jobs:.1f} s/job]", flush=True)


if __name__ == "__main__":
    main()
