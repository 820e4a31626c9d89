"""Weak spots across runs (issue 24): does `spotlight/contract/compare.py` say fixed, new and still there
where they are, and nothing fixed or new between two trainings of one model?

One evaluation set (the held-out half of augmented digits, `bench.quality`'s split), three MLPs
trained on the other half with planted problems:

- **v1** (production): 97 % of the training 8s removed (*rare 8s*) and 60 % of the training 5s
  given random labels (*noisy 5s*).
- **v2** (candidate): the 8s restored (rare 8s fixed), the noisy 5s kept, and the heavy-ink 7s
  relabelled 1 (*heavy-ink 7s*, new).
- **v3** (the null): v1's recipe and data, another initialisation seed: an identical retrain.

Each model's held-out 64-d embeddings and losses are searched as a job searches them (default
parameters, 5 regions, seeded): the verdict's split (spotlight/contract/verdict.py) searches half of the rows,
each region's members cover every row (`verdict.region_rows`), and its own verdict is the held-out
test, Holm-adjusted (`significant`); then `compare_jobs(v1, v2)` and `compare_jobs(v1, v3)` as the
API runs them, at the default level.

Scored per seed: a planted mode is *reported X* when a weak spot of status X is measured on members
of which at least half are the mode's rows (the mode's precision among the members); v1 -> v2 should
report rare 8s fixed, heavy-ink 7s new and noisy 5s still there (or worse); v1 -> v3 should report
nothing fixed and nothing new (significant or not). A comparison classes the regions the two searches
found, so the table also says on how many seeds v2's job has a region that is mostly heavy-ink 7s at
all: the ceiling of "new". Beside it, what a user would do instead: compare the members' in-sample
lift of each job's regions, the naive reading ("a region of v1 whose lift under v2 dropped below 1.5
is fixed; a v2 region with lift > 1.5 that no v1 region overlaps is new") — on v1 -> v3 it counts how
often that reading calls noise fixed or new.

Why "new" is missed where it is: the column *v2's heavy-ink region* describes, per seed, the weak spot
whose members hold the most heavy-ink 7s — its status, its share of 7s and of heavy-ink 7s, and the
mean loss percentile under v1 -> v2 of its *other* 7s (the lighter ones, below the planted ink cut),
on its held-out members. v2 learnt the relabelling as a smooth function of ink, so it also fails
lighter 7s that v1 got right; a region that is all 7s but under half heavy-ink is v2's new weak spot
as v2 has it, though not "mostly the planted rows".

``--probe`` also searches v2's rows another way per seed (same split, seeded, default parameters but
the one named) and prints the largest heavy-ink share among any region's members: the *change*
between the models ("where did v2 get worse?", in v2's embedding space) as v2's loss percentile minus
v1's, and as v2's loss minus v1's; ``sizing="grow"``; ``spotlight_size=0.01``; ``n_spotlights=10``;
and the best ball of the job's region size (the rows nearest one heavy-ink 7 in v2's standardised
embedding: a spherical region, where the search fits a diagonal gaussian).

``--regions`` lists, after the table, every weak spot of v1 -> v2 per seed: status, regions, members
(tested), ranks v1 -> v2, its own verdict, the three commonest labels among its members and their
heavy-ink share.

``--spotlight-size`` runs all three jobs at another spotlight size than the default (what a user
who asks for smaller regions gets; the goal is at the defaults).

    python -m bench.compare [--seeds 10] [--first-seed 0] [--probe] [--regions] [--spotlight-size 0.01]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.digits import augmented_digits, train_mlp
from spotlight.contract import compare, verdict
from spotlight.contract.params import SearchParams
from worker.engine import search as engine_search

MODES = ("rare 8s", "noisy 5s", "heavy-ink 7s")
EXPECTED = {"rare 8s": {"fixed"}, "noisy 5s": {"still_there", "worse"}, "heavy-ink 7s": {"new"}}
MODE_PRECISION = 0.5


@dataclass
class Version:
    name: str
    losses: np.ndarray
    regions: list[dict]
    members: list[np.ndarray]
    elapsed_s: float
    held_out: np.ndarray  # rows the search never used (the verdict's split)


def _data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    x, y, ids = augmented_digits(seed)
    rng = np.random.default_rng(seed)
    test_ids = rng.permutation(ids.max() + 1)[: (ids.max() + 1) // 2]
    is_test = np.isin(ids, test_ids)
    return x[~is_test], y[~is_test].copy(), x[is_test], y[is_test], rng


def _train(x: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Module:
    return train_mlp(x, y, seed)


def _held_out(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from bench.quality import _held_out as held

    emb, loss, _ = held(model, x, y)
    return emb, loss


def _search(name: str, emb: np.ndarray, loss: np.ndarray, seed: int, **update: Any) -> Version:
    """The job's search and verdict (worker/task.py's steps on arrays): half the rows searched, members
        over every row, each region tested by its kernel weights over the held-out rows (figures on its held-out
    members), Holm over the job's regions."""
    start = time.perf_counter()
    params = SearchParams(device="cpu", seed=seed, **update)
    parts = verdict.split(loss.size, seed)
    masked, weights = verdict.search_inputs(loss, None, parts)
    searched = params.model_copy(update={"spotlight_size": verdict.search_size(params.spotlight_size)})
    result = engine_search(emb, masked, searched, sample_weights=weights)
    rows = [verdict.region_rows(result.weights[:, k], r.kernel, parts) for k, r in enumerate(result.regions)]
    tests = [
        verdict.holdout_test(loss, r.held_out, parts.held_out, result.weights[:, k], seed=seed + k)
        for k, r in enumerate(rows)
    ]
    adjusted = verdict.holm([t.p_value for t in tests])
    regions = []
    for k, region in enumerate(result.regions):
        entry = region.to_dict()
        entry["index"] = k
        entry["p_value"] = adjusted[k]
        entry["significant"] = adjusted[k] is not None and float(adjusted[k] or 1.0) <= params.level
        regions.append(entry)
    members = [r.all for r in rows]
    elapsed = time.perf_counter() - start
    return Version(name, np.asarray(loss, dtype=np.float64), regions, members, elapsed, parts.held_out)


def build(seed: int, **update: Any) -> tuple[dict[str, Version], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The three versions searched (default parameters but `update`), the planted modes' rows, and
    the context the diagnosis reads (the 7s, and v2's embeddings for --probe)."""
    x_tr, y_tr, x_te, y_te, rng = _data(seed)
    ink_tr, ink_te = x_tr.sum(1), x_te.sum(1)
    cut = np.quantile(ink_tr[y_tr == 7], 0.6)
    noisy = y_tr.copy()
    flip = (y_tr == 5) & (rng.random(len(y_tr)) < 0.6)
    noisy[flip] = rng.integers(0, 10, size=int(flip.sum()))
    without_8s = (y_tr != 8) | (rng.random(len(y_tr)) < 0.03)
    inked = noisy.copy()
    inked[(y_tr == 7) & (ink_tr > cut)] = 1
    trained = {
        "v1": _train(x_tr[without_8s], noisy[without_8s], seed),
        "v2": _train(x_tr, inked, seed),
        "v3": _train(x_tr[without_8s], noisy[without_8s], seed + 1000),
    }
    versions = {}
    context: dict[str, np.ndarray] = {"7s": y_te == 7, "labels": y_te}
    for name, model in trained.items():
        emb, loss = _held_out(model, x_te, y_te)
        versions[name] = _search(name, emb, loss, seed, **update)
        context[f"emb {name}"] = emb
    modes = {"rare 8s": y_te == 8, "noisy 5s": y_te == 5, "heavy-ink 7s": (y_te == 7) & (ink_te > cut)}
    return versions, modes, context


def _rows(v: Version, ids: list[int]) -> compare.JobRows:
    return compare.JobRows(v.name, ids, v.losses, v.regions, v.members, v.held_out)


def reported(result: dict, modes: dict[str, np.ndarray], versions: dict[str, Version]) -> dict[str, set[str]]:
    """Per planted mode, the statuses of the weak spots whose members are mostly that mode's rows."""
    out: dict[str, set[str]] = {m: set() for m in modes}
    for spot in result["weak_spots"]:
        rows = _members(spot, result, versions)
        for name, mask in modes.items():
            if rows.size and mask[rows].mean() >= MODE_PRECISION:
                out[name].add(spot["status"])
    return out


def best_share(result: dict, mask: np.ndarray, versions: dict[str, Version]) -> float:
    """The largest share of one mode's rows among any weak spot's members (why a mode went unreported)."""
    return max(
        (float(mask[m].mean()) for s in result["weak_spots"] if (m := _members(s, result, versions)).size), default=0.0
    )


def _members(spot: dict, result: dict, versions: dict[str, Version]) -> np.ndarray:
    origin = "old" if spot["measured_on"].startswith("old") else "new"
    job = result["old_job"] if origin == "old" else result["new_job"]
    return versions[job].members[spot["old_region"] if origin == "old" else spot["new_region"]]


def heavy_ink_region(result: dict, versions: dict[str, Version], heavy: np.ndarray, sevens: np.ndarray) -> str:
    """The weak spot whose members hold the most heavy-ink 7s: its status, share of 7s and of heavy-ink
    7s among its members, and its other (lighter) 7s' mean loss percentile v1 -> v2 on its held-out
    members (the rows no search chose: honest on both models)."""
    spots = [(float(heavy[m].mean()), s, m) for s in result["weak_spots"] if (m := _members(s, result, versions)).size]
    if not spots:
        return "—"
    share, spot, rows = max(spots, key=lambda t: t[0])
    origin = "v1" if spot["measured_on"].startswith("old") else "v2"
    held = rows[np.isin(rows, versions[origin].held_out)]
    light = held[sevens[held] & ~heavy[held]]
    r1, r2 = compare.percentiles(versions["v1"].losses), compare.percentiles(versions["v2"].losses)
    ranks = f"{r1[light].mean():.2f} -> {r2[light].mean():.2f} ({light.size})" if light.size else "— (0)"
    return f"{spot['status']}, 7s {sevens[rows].mean():.2f}, heavy-ink {share:.2f}, other 7s {ranks}"


def describe(result: dict, versions: dict[str, Version], heavy: np.ndarray, labels: np.ndarray) -> list[str]:
    """Every weak spot of a comparison, one line each (--regions)."""
    out = []
    for spot in result["weak_spots"]:
        rows = _members(spot, result, versions)
        counts = np.bincount(labels[rows], minlength=10) if rows.size else np.zeros(10, dtype=np.int64)
        common = ", ".join(f"{c}s {counts[c]}" for c in np.argsort(-counts, kind="stable")[:3] if counts[c])
        before, after = spot["before"]["rank"], spot["after"]["rank"]
        ranks = f"{before:.2f} -> {after:.2f}" if before is not None and after is not None else "—"
        share = f"{heavy[rows].mean():.2f}" if rows.size else "—"
        out.append(
            f"- {spot['status']}: v1 region {spot['old_region']}, v2 region {spot['new_region']}, "
            f"{spot['members']} members ({spot['tested_members']} tested), rank v1 -> v2 {ranks}, "
            f"own verdict {spot['own_verdict']}; {common}; heavy-ink {share}"
        )
    return out


def probe(
    seed: int, versions: dict[str, Version], heavy: np.ndarray, emb_v2: np.ndarray, base: dict[str, Any]
) -> dict[str, float]:
    """The largest heavy-ink share among any region's members when v2's rows are searched another way
    (the job's split and seed), and the best ball of the job's region size around a heavy-ink 7."""
    ranks_change = compare.percentiles(versions["v2"].losses) - compare.percentiles(versions["v1"].losses)
    loss_change = versions["v2"].losses - versions["v1"].losses
    # shifted to be >= 0 (a loss); the objective, a weighted mean, is invariant to the shift
    runs: dict[str, tuple[np.ndarray, dict[str, Any]]] = {
        "rank change": (ranks_change + 1.0, {}),
        "loss change": (loss_change - loss_change.min(), {}),
        "grow": (versions["v2"].losses, {"sizing": "grow"}),
        "size 0.01": (versions["v2"].losses, {"spotlight_size": 0.01}),
        "10 regions": (versions["v2"].losses, {"n_spotlights": 10}),
    }
    out = {}
    for label, (loss, update) in runs.items():
        members = _search("probe", emb_v2, loss, seed, **{**base, **update}).members
        out[label] = max((float(heavy[m].mean()) for m in members if m.size), default=0.0)
    size = int(round(np.median([m.size for m in versions["v2"].members])))
    e = np.asarray(emb_v2, dtype=np.float64)
    z = (e - e.mean(0)) / (e.std(0) + 1e-12)
    sq = (z * z).sum(1)
    dist = sq[heavy][:, None] + sq[None, :] - 2.0 * z[heavy] @ z.T
    nearest = np.argpartition(dist, size - 1, axis=1)[:, :size]
    out["best ball"] = float(heavy[nearest].mean(1).max())
    return out


def searched_out(v: Version, mask: np.ndarray) -> bool:
    """Whether the job has any region whose members are mostly the mode's rows: the ceiling of what a
    comparison can report about that mode (it classes the regions the searches found)."""
    return any(m.size and mask[m].mean() >= MODE_PRECISION for m in v.members)


def naive(old: Version, new: Version) -> tuple[int, int]:
    """What a user would do by hand: in-sample lifts of each job's regions, members matched by row.
    Returns (called fixed, called new): v1 regions whose lift under v2 < 1.5 (with in-sample lift
    > 1.5), v2 regions with in-sample lift > 1.5 that overlap no v1 region by half."""
    mu_old, mu_new = old.losses.mean(), new.losses.mean()
    fixed = sum(
        1 for m in old.members if m.size and old.losses[m].mean() / mu_old > 1.5 and new.losses[m].mean() / mu_new < 1.5
    )
    fresh = 0
    for m in new.members:
        if not m.size or new.losses[m].mean() / mu_new <= 1.5:
            continue
        if all(np.intersect1d(m, a).size < 0.5 * min(m.size, a.size) for a in old.members if a.size):
            fresh += 1
    return fixed, fresh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--probe", action="store_true", help="also search v2's rows other ways (module docstring)")
    ap.add_argument("--regions", action="store_true", help="list every weak spot of v1 -> v2 per seed")
    ap.add_argument(
        "--spotlight-size", type=float, default=None, help="every job's spotlight_size (default: the default)"
    )
    args = ap.parse_args()
    update = {} if args.spotlight_size is None else {"spotlight_size": args.spotlight_size}
    torch.set_num_threads(1)
    hits = {"fixed": 0, "new": 0, "still there": 0}
    null_clean = 0
    found = {"new": 0}
    naive_null = 0
    timings = []
    probes: list[dict[str, float]] = []
    listed: list[str] = []
    print(
        "| seed | v1 -> v2: rare 8s | heavy-ink 7s | noisy 5s | counts | v1 -> v3 (null) counts | null clean "
        "| naive null (fixed, new) | v2's heavy-ink region: status, shares, other 7s' rank v1 -> v2 (held-out n) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        versions, modes, context = build(seed, **update)
        ids = list(range(len(versions["v1"].losses)))
        start = time.perf_counter()
        forward = compare.compare_jobs(_rows(versions["v1"], ids), _rows(versions["v2"], ids))
        timings.append(time.perf_counter() - start)
        null = compare.compare_jobs(_rows(versions["v1"], ids), _rows(versions["v3"], ids))
        seen = reported(forward, modes, versions)
        ok = {m: bool(seen[m] & EXPECTED[m]) for m in MODES}
        hits["fixed"] += ok["rare 8s"]
        hits["new"] += ok["heavy-ink 7s"]
        hits["still there"] += ok["noisy 5s"]
        loud = [s for s in null["weak_spots"] if s["status"] in ("fixed", "new")]
        found["new"] += searched_out(versions["v2"], modes["heavy-ink 7s"])
        null_clean += not loud
        nf, nn = naive(versions["v1"], versions["v3"])
        naive_null += bool(nf or nn)

        def fmt(counts: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in counts.items() if v)

        shown = {
            m: "/".join(sorted(seen[m])) or f"— (best share {best_share(forward, modes[m], versions):.2f})"
            for m in MODES
        }

        print(
            f"| {seed} | {shown['rare 8s']} | {shown['heavy-ink 7s']} "
            f"| {shown['noisy 5s']} | {fmt(forward['counts'])} | {fmt(null['counts'])} "
            f"| {'yes' if not loud else 'NO'} | {nf}, {nn} "
            f"| {heavy_ink_region(forward, versions, modes['heavy-ink 7s'], context['7s'])} |",
            flush=True,
        )
        if args.regions:
            listed += [f"\nseed {seed}, v1 -> v2:"] + describe(
                forward, versions, modes["heavy-ink 7s"], context["labels"]
            )
        if args.probe:
            probes.append(probe(seed, versions, modes["heavy-ink 7s"], context["emb v2"], update))
    n = args.seeds
    print(
        f"\nrare 8s reported fixed on {hits['fixed']}/{n}; heavy-ink 7s new on {hits['new']}/{n}; "
        f"noisy 5s still there on {hits['still there']}/{n}; identical retrain: nothing fixed or new "
        f"on {null_clean}/{n} (goal >= 9/{n}); the naive lift reading calls something fixed or "
        f"new on the retrain on {naive_null}/{n}"
    )
    print(f"v2's job has a region that is mostly heavy-ink 7s (what a comparison can class) on {found['new']}/{n}")
    for line in listed:
        print(line)
    if probes:
        print("\n| seed | " + " | ".join(probes[0]) + " |")
        print("|---" * (len(probes[0]) + 1) + "|")
        for seed, row in zip(range(args.first_seed, args.first_seed + args.seeds), probes, strict=True):
            print(f"| {seed} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |")
        print(
            "seeds with a region (or ball) at least half heavy-ink 7s: "
            + ", ".join(f"{k} {sum(r[k] >= MODE_PRECISION for r in probes)}/{n}" for k in probes[0])
        )
    print(
        f"compare_jobs on {len(versions['v1'].losses)} rows: median {1000 * float(np.median(timings)):.0f} ms; "
        f"one job's search and verdict {np.mean([v.elapsed_s for v in versions.values()]):.1f} s"
    )


if __name__ == "__main__":
    main()
