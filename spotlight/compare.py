"""Weak spots across runs: two jobs on the same rows, or a job and new data (numpy only).

**Two jobs on the same evaluation rows** (an old and a new model evaluated on one set). Rows are
matched by the caller's ids (:func:`match_rows`, compared as given: the string ``"7"`` is not the
integer ``7``); rows present in one job only are counted and reported, never guessed, and a
comparison with fewer than ``MIN_MATCHED_ROWS`` matched rows, or fewer than ``MIN_MATCHED_SHARE``
of either job's rows, is refused. Everything below is measured on the matched rows only.

Embedding spaces of two models differ, so regions are never compared by their centres: a region is
its member set (spotlight/members.py), a set of rows, and rows are what both jobs share.

- **Pairing.** A region of the old job and one of the new job are the same weak spot when their
  matched member sets overlap: ``|A & B| / min(|A|, |B|) >= PAIR_MIN_OVERLAP``. Pairs are made
  greedily, highest overlap first, each region in at most one pair; a pair is shown once.
- **The honest side.** A region's members were chosen on its own job's losses, so their mean loss
  there is selected (biased up); the *other* job's losses on those rows were not used to choose them.
  Each weak spot is measured on one member set — the old region's for a pair or an old region alone,
  the new region's for a new region alone — and the side whose losses did not choose it carries an
  interval: the members' lift there, ``mean(loss[M]) / mean(loss[all matched rows])``, with a
  percentile bootstrap interval over the members at ``1 - level`` (``N_BOOTSTRAP`` resamples; the
  mean over all matched rows, thousands of rows, is taken as fixed).
- **Elevated** on a side: that interval's lower bound is above 1 (the members do worse than that
  model's average, at the level). **Worse**: measured on the old region's members, elevated under
  the new model and the paired bootstrap interval of ``lift_new / lift_old`` lies above
  ``WORSE_RATIO`` (1.25: a quarter worse at least; two trainings of one model differ by more than
  rounding, and a 10 % shift is not a weak spot getting worse). The old lift there is selected (too
  high), which favours the old model, so a "worse" verdict is conservative, never an artefact of selection.
- **Fine** on a side: that interval's upper bound is below ``FINE_MAX_LIFT`` (2.0): at the level,
  the members lose less than twice that model's average — no weak spot (bench/compare.py: at 1.5 the
  heavy tail of cross-entropy left a fixed weak spot "unclear" on 5 of 10 seeds, at 2.0 on 2, with the
  identical retrain clean on 10 of 10 both ways). Fixed and new
  need the honest side *fine*, not merely *not elevated*: a heavy-tailed loss gives a wide interval,
  and absence of evidence is not evidence that the weak spot is gone (or was not there).
- **Own verdict.** A region calls something fixed or new only if its own job established it as a
  weak spot: the region's ``significant`` when the record has one, else ``p_value < level`` (the job's
  permutation test, ``n_permutations > 0``), else unknown; and never when its members' lift on its
  own job is below ``FINE_MAX_LIFT``: fine by the line that calls the other side fine, even on the
  (selected, too high) losses that chose them. A kernel-weighted figure can pass the permutation test
  while the member set a person reads is no weak spot; and a mild region's selected lift of 1.3 is
  mostly selection (on the digits null, a region of selected lift 1.34 measured 0.83 [0.43, 1.31] on the other model).

Status of each weak spot (``STATUSES``):

=============== ============================================================================
``worse``       elevated under the new model and its lift there significantly over 1.25 x the old one
``still_there`` elevated on the honest side (the members still do worse than the new model's
                average; for a new region alone: they did already under the old model)
``fixed``       an old region whose members are fine under the new model
``new``         a new region whose members were fine under the old model
``unclear``     neither elevated nor fine on the honest side: the interval cannot tell
``unconfirmed`` not elevated on the honest side, and its own job's test found it not significant
                (or its own members' lift is below 2): noise or too mild, not a weak spot
=============== ============================================================================

``significant``: for fixed and new, the own verdict (True, False never occurs — that is
unconfirmed —, None when its job has no test); for still_there and worse, True (the honest side's
interval is the test). Gate on ``new and significant`` to fail only on established new weak spots.

**A job and new data for the same model** (:func:`drift`): the job's regions are scored on the new
rows with the score route's machinery (spotlight/kernel.py, the member threshold of members.py), the
original rows by the same threshold on the stored weights; per region, the share of new rows that fall
in it against the share in the original data, the ratio with a Katz log interval at ``1 - level``,
and ``drift`` when that interval lies above 1. New data that brings losses gets the members' mean
loss and lift there too (the region was found on other rows: honest).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_LEVEL = 0.05
N_BOOTSTRAP = 1000
# bootstrap work is capped: with more members than this / N_BOOTSTRAP, fewer resamples (>= 200)
MAX_BOOTSTRAP_DRAWS = 20_000_000
PAIR_MIN_OVERLAP = 0.5
# "fine" on the honest side (fixed, new): the lift's interval lies below this
FINE_MAX_LIFT = 2.0
# "worse": the members' lift under the new model at least this many times the old one's, at the level
WORSE_RATIO = 1.25
MIN_MATCHED_ROWS = 30
MIN_MATCHED_SHARE = 0.5
STATUSES = ("worse", "still_there", "fixed", "new", "unclear", "unconfirmed")
EXAMPLES = 6  # members shown per weak spot (the report's both sides): the origin side's highest losses
_UNMATCHED_EXAMPLES = 5


class CompareRefused(ValueError):
    """The two jobs cannot be compared as asked (ids missing, duplicated, too few in common)."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = dict(details or {})


# ----- the region record: the only place this module reads a region's fields -----
def region_index(region: Mapping[str, Any]) -> int:
    return int(region["index"])


def region_verdict(region: Mapping[str, Any], level: float) -> bool | None:
    """Whether the region's own job established it as a weak spot: its ``significant`` when the
    record has one, else its permutation ``p_value`` below `level`, else None (not tested)."""
    flag = region.get("significant")
    if isinstance(flag, bool):
        return flag
    p = region.get("p_value")
    if isinstance(p, (int, float)) and math.isfinite(p):
        return float(p) < level
    return None


@dataclass
class JobRows:
    """What a comparison reads of one finished job: its rows' ids and losses, its regions, and
    each region's member set (row indices into this job's dataset)."""

    job: str
    ids: Sequence[Any] | None
    losses: np.ndarray
    regions: Sequence[Mapping[str, Any]]
    members: Sequence[np.ndarray]


@dataclass
class Matched:
    """Rows of two jobs with equal ids: ``old[i]`` and ``new[i]`` are the same row."""

    old: np.ndarray
    new: np.ndarray
    only_old: int
    only_new: int
    examples_only_old: list[Any]
    examples_only_new: list[Any]


def match_rows(
    ids_old: Sequence[Any] | None,
    ids_new: Sequence[Any] | None,
    min_rows: int = MIN_MATCHED_ROWS,
    min_share: float = MIN_MATCHED_SHARE,
) -> Matched:
    """Pair rows by id; CompareRefused without ids, with a repeated id, or with too few in common."""
    for side, ids in (("old", ids_old), ("new", ids_new)):
        if ids is None:
            raise CompareRefused(
                f"the {side} job's dataset has no ids: rows of two jobs are matched by the ids you uploaded "
                "(the `ids` field), never by position; upload both evaluation sets with their ids",
                {"side": side},
            )
    assert ids_old is not None and ids_new is not None
    a, b = _id_array(ids_old), _id_array(ids_new)
    for side, arr, ids in (("old", a, ids_old), ("new", b, ids_new)):
        repeated = _repeated(arr, ids)
        if repeated is not None:
            raise CompareRefused(f"the {side} job's ids repeat {repeated!r}: a row must have one id", {"id": repeated})
    if a.dtype.kind != b.dtype.kind:  # strings on one side, integers on the other: "7" is not 7
        old_idx, new_idx = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    else:
        _, old_idx, new_idx = np.intersect1d(a, b, assume_unique=True, return_indices=True)
    in_old = np.zeros(len(ids_old), dtype=bool)
    in_old[old_idx] = True
    in_new = np.zeros(len(ids_new), dtype=bool)
    in_new[new_idx] = True
    only_old = [ids_old[int(i)] for i in np.flatnonzero(~in_old)[:_UNMATCHED_EXAMPLES]]
    only_new = [ids_new[int(i)] for i in np.flatnonzero(~in_new)[:_UNMATCHED_EXAMPLES]]
    matched = int(old_idx.size)
    n_old, n_new = len(ids_old), len(ids_new)
    counts = {"matched": matched, "rows_old": n_old, "rows_new": n_new, "min_rows": min_rows, "min_share": min_share}
    if matched < min_rows or matched < min_share * n_old or matched < min_share * n_new:
        raise CompareRefused(
            f"only {matched} rows have the same id in both jobs (old {n_old} rows, new {n_new}); a comparison "
            f"needs at least {min_rows} and at least {min_share:.0%} of each job's rows, so that both jobs were "
            "evaluated on the same set. Compare jobs of one evaluation set, uploaded with the same ids.",
            {**counts, "examples_only_old": only_old, "examples_only_new": only_new},
        )
    return Matched(
        old_idx.astype(np.int64),
        new_idx.astype(np.int64),
        n_old - matched,
        n_new - matched,
        only_old,
        only_new,
    )


def _id_array(ids: Sequence[Any]) -> np.ndarray:
    """Ids as a sortable array: all integers (int64) or all strings (unicode); mixed ids are refused."""
    kinds = {type(v) for v in ids}
    if kinds <= {int}:
        return np.asarray(ids, dtype=np.int64)
    if kinds <= {str}:
        return np.asarray(ids, dtype=str)
    raise CompareRefused(
        "ids must be all strings or all integers within one dataset", {"types": sorted(k.__name__ for k in kinds)}
    )


def _repeated(arr: np.ndarray, ids: Sequence[Any]) -> Any:
    """An id that occurs twice, or None."""
    order = np.argsort(arr, kind="stable")
    same = np.flatnonzero(arr[order][1:] == arr[order][:-1])
    return ids[int(order[same[0]])] if same.size else None


# ----- statistics on a member set -----
def _draws(m: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    boots = max(200, min(n_boot, MAX_BOOTSTRAP_DRAWS // max(1, m)))
    return rng.integers(0, m, size=(boots, m), dtype=np.int32)


def lift_interval(
    values: np.ndarray, overall: float, level: float, draws: np.ndarray
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of mean(values) / overall at 1 - level (None with < 2 values)."""
    if values.size < 2 or overall <= 0:
        return None, None
    means = values[draws].mean(axis=1) / overall
    lo, hi = np.quantile(means, [level / 2, 1 - level / 2])
    return float(lo), float(hi)


def _figures(losses: np.ndarray, rows: np.ndarray, overall: float) -> dict[str, Any]:
    mean = float(losses[rows].mean()) if rows.size else None
    return {"mean_loss": mean, "lift": (mean / overall) if mean is not None and overall > 0 else None}


# ----- two jobs -----
def compare_jobs(
    old: JobRows, new: JobRows, level: float = DEFAULT_LEVEL, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, Any]:
    """Every weak spot of either job, classed (see the module docstring); the result is plain JSON."""
    if not 0 < level < 0.5:
        raise ValueError("level must be in (0, 0.5)")
    rows = match_rows(old.ids, new.ids)
    loss_old = np.asarray(old.losses, dtype=np.float64)[rows.old]
    loss_new = np.asarray(new.losses, dtype=np.float64)[rows.new]
    mu_old, mu_new = float(loss_old.mean()), float(loss_new.mean())
    # members as positions among the matched rows
    sets_old = [_positions(rows.old, m) for m in old.members]
    sets_new = [_positions(rows.new, m) for m in new.members]
    pairs = _pairs(sets_old, sets_new)
    rng = np.random.default_rng(seed)
    spots: list[dict[str, Any]] = []
    paired_new = {j for _, j, _ in pairs}
    paired_old = {i: (j, share) for i, j, share in pairs}
    for i, region in enumerate(old.regions):
        j, share = paired_old.get(i, (None, None))
        spots.append(
            _spot(
                "old",
                region,
                new.regions[j] if j is not None else None,
                share,
                sets_old[i],
                len(old.members[i]),
                sets_new[j] if j is not None else None,
                (loss_old, mu_old),
                (loss_new, mu_new),
                level,
                n_boot,
                rng,
            )
        )
    for j, region in enumerate(new.regions):
        if j in paired_new:
            continue
        spots.append(
            _spot(
                "new",
                None,
                region,
                None,
                sets_new[j],
                len(new.members[j]),
                None,
                (loss_old, mu_old),
                (loss_new, mu_new),
                level,
                n_boot,
                rng,
            )
        )
    for spot in spots:
        spot["examples"] = _examples(spot.pop("_rows"), spot["measured_on"], rows, old, new, loss_old, loss_new)
    spots.sort(key=lambda s: (STATUSES.index(s["status"]), -(s["after"]["lift"] or 0.0)))
    counts = {status: sum(s["status"] == status for s in spots) for status in STATUSES}
    return {
        "kind": "jobs",
        "old_job": old.job,
        "new_job": new.job,
        "level": level,
        "rows": {
            "old": len(old.losses),
            "new": len(new.losses),
            "matched": int(rows.old.size),
            "only_old": rows.only_old,
            "only_new": rows.only_new,
            "examples_only_old": rows.examples_only_old,
            "examples_only_new": rows.examples_only_new,
        },
        "mean_loss": {"old": mu_old, "new": mu_new},
        "counts": counts,
        "weak_spots": spots,
    }


def _positions(matched: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Members (rows of one job's dataset) as positions among the matched rows; unmatched members drop out."""
    members = np.asarray(members, dtype=np.int64)
    size = int(max(matched.max(initial=-1), members.max(initial=-1))) + 1
    where = np.full(size, -1, dtype=np.int64)
    where[matched] = np.arange(matched.size)
    found = where[members]
    return np.sort(found[found >= 0])


def _pairs(sets_old: Sequence[np.ndarray], sets_new: Sequence[np.ndarray]) -> list[tuple[int, int, float]]:
    """(old region, new region, overlap) for regions that are the same weak spot, greedy by overlap."""
    candidates = []
    for i, a in enumerate(sets_old):
        for j, b in enumerate(sets_new):
            smaller = min(a.size, b.size)
            if smaller == 0:
                continue
            share = float(np.intersect1d(a, b, assume_unique=True).size / smaller)
            if share >= PAIR_MIN_OVERLAP:
                candidates.append((share, i, j))
    used_old: set[int] = set()
    used_new: set[int] = set()
    out = []
    for share, i, j in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if i in used_old or j in used_new:
            continue
        used_old.add(i)
        used_new.add(j)
        out.append((i, j, share))
    return out


def _spot(
    origin: str,
    old_region: Mapping[str, Any] | None,
    new_region: Mapping[str, Any] | None,
    overlap: float | None,
    rows: np.ndarray,
    n_members: int,
    other_rows: np.ndarray | None,
    old_side: tuple[np.ndarray, float],
    new_side: tuple[np.ndarray, float],
    level: float,
    n_boot: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """One weak spot measured on `rows` (the member set of the `origin` job's region)."""
    (loss_old, mu_old), (loss_new, mu_new) = old_side, new_side
    before, after = _figures(loss_old, rows, mu_old), _figures(loss_new, rows, mu_new)
    draws = _draws(rows.size, n_boot, rng) if rows.size >= 2 else None
    honest_losses, honest_mean, honest = (loss_new, mu_new, after) if origin == "old" else (loss_old, mu_old, before)
    lo, hi = (None, None) if draws is None else lift_interval(honest_losses[rows], honest_mean, level, draws)
    honest["lift_ci"] = [lo, hi] if lo is not None else None
    honest["selected"] = False
    (before if origin == "old" else after)["selected"] = True
    (before if origin == "old" else after)["lift_ci"] = None
    elevated = lo is not None and lo > 1.0
    worse = False
    change_ci = None
    if origin == "old" and draws is not None and mu_old > 0 and mu_new > 0:
        # the ratio of the members' lifts, new over old, resampled on the same members
        after_b = loss_new[rows][draws].mean(axis=1) / mu_new
        before_b = loss_old[rows][draws].mean(axis=1) / mu_old
        ratio = after_b / np.maximum(before_b, 1e-12)
        c_lo, c_hi = np.quantile(ratio, [level / 2, 1 - level / 2])
        change_ci = [float(c_lo), float(c_hi)]
        worse = elevated and c_lo > WORSE_RATIO
    own = old_region if origin == "old" else new_region
    own_figures = before if origin == "old" else after
    verdict = region_verdict(own, level) if own is not None else None
    if own_figures["lift"] is None or own_figures["lift"] < FINE_MAX_LIFT:
        verdict = False  # its own members are fine even on the losses that chose them: not a weak spot
    significant: bool | None
    if worse:
        status, significant = "worse", True
    elif elevated:
        status, significant = "still_there", True
    elif old_region is not None and new_region is not None and other_rows is not None:
        # both searches found these rows: the other region's members are the second chance to show it
        draws_b = _draws(other_rows.size, n_boot, rng) if other_rows.size >= 2 else None
        lo_b = None if draws_b is None else lift_interval(loss_old[other_rows], mu_old, level, draws_b)[0]
        if lo_b is not None and lo_b > 1.0:
            status, significant = "still_there", True
        else:
            status, significant = _gone_or_new(origin, verdict, hi)
    else:
        status, significant = _gone_or_new(origin, verdict, hi)
    return {
        "status": status,
        "significant": significant,
        "old_region": region_index(old_region) if old_region is not None else None,
        "new_region": region_index(new_region) if new_region is not None else None,
        "overlap": overlap,
        "measured_on": f"{origin}_region_members",
        "members": int(rows.size),
        "members_unmatched": int(n_members - rows.size),
        "own_verdict": verdict,
        "before": before,
        "after": after,
        "lift_ratio_ci": change_ci,
        "_rows": rows,
    }


def _examples(
    rows: np.ndarray,
    measured_on: str,
    matched: Matched,
    old: JobRows,
    new: JobRows,
    loss_old: np.ndarray,
    loss_new: np.ndarray,
) -> list[dict[str, Any]]:
    """The measured members with the highest loss on the side that chose them: id, both rows, both losses."""
    origin_loss = loss_old if measured_on.startswith("old") else loss_new
    top = rows[np.argsort(-origin_loss[rows], kind="stable")[:EXAMPLES]]
    return [
        {
            "id": old.ids[int(matched.old[p])] if old.ids is not None else None,
            "old_row": int(matched.old[p]),
            "new_row": int(matched.new[p]),
            "loss_before": float(loss_old[p]),
            "loss_after": float(loss_new[p]),
        }
        for p in top.tolist()
    ]


def _gone_or_new(origin: str, verdict: bool | None, hi: float | None) -> tuple[str, bool | None]:
    """Not elevated on the honest side: fixed / new when that side is clearly fine and the region
    was a weak spot of its own job; unclear when the interval cannot tell; unconfirmed when its job's
    own test says it was none."""
    if verdict is False:
        return "unconfirmed", False
    if hi is None or hi >= FINE_MAX_LIFT:
        return "unclear", False
    return ("fixed" if origin == "old" else "new"), verdict


def spot_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per weak spot (the table, the DataFrame and the gate read these names)."""
    out = []
    for s in result.get("weak_spots", []):
        before, after = s["before"], s["after"]
        b_ci, a_ci = before.get("lift_ci") or [None, None], after.get("lift_ci") or [None, None]
        out.append(
            {
                "status": s["status"],
                "significant": s["significant"],
                "old_region": s["old_region"],
                "new_region": s["new_region"],
                "overlap": s["overlap"],
                "measured_on": s["measured_on"],
                "members": s["members"],
                "loss_before": before["mean_loss"],
                "lift_before": before["lift"],
                "lift_before_ci_low": b_ci[0],
                "lift_before_ci_high": b_ci[1],
                "loss_after": after["mean_loss"],
                "lift_after": after["lift"],
                "lift_after_ci_low": a_ci[0],
                "lift_after_ci_high": a_ci[1],
            }
        )
    return out


# ----- a job and new data -----
def drift(
    region_list: Sequence[Mapping[str, Any]],
    members_original: Sequence[int],
    n_original: int,
    members_new: Sequence[int],
    n_new: int,
    new_losses: np.ndarray | None = None,
    new_member_rows: Sequence[np.ndarray] | None = None,
    level: float = DEFAULT_LEVEL,
) -> list[dict[str, Any]]:
    """Per region: the share of the new rows in it against the share of the original rows.

    `members_original` / `members_new`: per region, how many rows of each dataset are members (by
    the same threshold rule). `new_losses` with `new_member_rows`: the new rows' losses and each
    region's member rows among them, for the members' mean loss and lift there."""
    z = _z(level)
    out = []
    mu = float(np.mean(new_losses)) if new_losses is not None and len(new_losses) else None
    for k, region in enumerate(region_list):
        a, b = int(members_new[k]), int(members_original[k])
        p_new, p_old = a / n_new, b / n_original
        ratio, lo, hi = _ratio_interval(a, n_new, b, n_original, z)
        entry: dict[str, Any] = {
            "region": region_index(region),
            "members_new": a,
            "members_original": b,
            "share_new": p_new,
            "share_new_ci": list(_wilson(a, n_new, z)),
            "share_original": p_old,
            "ratio": ratio,
            "ratio_ci": [lo, hi] if lo is not None else None,
            "drift": lo is not None and lo > 1.0,
            "mean_loss_new": None,
            "lift_new": None,
        }
        if new_losses is not None and new_member_rows is not None and mu is not None:
            rows = np.asarray(new_member_rows[k], dtype=np.int64)
            figures = _figures(np.asarray(new_losses, dtype=np.float64), rows, mu)
            entry["mean_loss_new"], entry["lift_new"] = figures["mean_loss"], figures["lift"]
        out.append(entry)
    return out


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - level / 2)


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _ratio_interval(a: int, n1: int, b: int, n0: int, z: float) -> tuple[float | None, float | None, float | None]:
    """(a/n1) / (b/n0) with the Katz log interval; a zero count gets 0.5 added to each count (Haldane)."""
    if n1 <= 0 or n0 <= 0:
        return None, None, None
    if b == 0 and a == 0:
        return None, None, None
    aa, bb = (a + 0.5, b + 0.5) if a == 0 or b == 0 else (float(a), float(b))
    nn1, nn0 = (n1 + 0.5, n0 + 0.5) if a == 0 or b == 0 else (float(n1), float(n0))
    ratio = (aa / nn1) / (bb / nn0)
    se = math.sqrt(max(0.0, 1 / aa - 1 / nn1 + 1 / bb - 1 / nn0))
    return ratio, ratio * math.exp(-z * se), ratio * math.exp(z * se)


def drift_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per region of a dataset comparison (the table, the DataFrame and the gate)."""
    out = []
    for r in result.get("regions", []):
        ci = r.get("ratio_ci") or [None, None]
        share_ci = r.get("share_new_ci") or [None, None]
        out.append(
            {
                "region": r["region"],
                "drift": r["drift"],
                "share_original": r["share_original"],
                "share_new": r["share_new"],
                "share_new_ci_low": share_ci[0],
                "share_new_ci_high": share_ci[1],
                "ratio": r["ratio"],
                "ratio_ci_low": ci[0],
                "ratio_ci_high": ci[1],
                "members_original": r["members_original"],
                "members_new": r["members_new"],
                "lift_new": r["lift_new"],
            }
        )
    return out


def rows_of(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The flat rows of either kind of comparison."""
    return spot_rows(result) if result.get("kind") == "jobs" else drift_rows(result)


# ----- the gate over a comparison's rows (spotlight/gate.py's grammar, these fields) -----
GATE_FIELDS: dict[str, str] = {
    "worse": "1 when the weak spot got worse (elevated under the new model, lift significantly up)",
    "still_there": "1 when the weak spot is still there",
    "fixed": "1 when an old weak spot's members are fine under the new model",
    "new": "1 when a new region's members were fine under the old model",
    "unclear": "1 when the honest side's interval can tell neither elevated nor fine",
    "unconfirmed": "1 when neither job's losses establish the region (noise)",
    "significant": "1 when the status is established at the level (a job's own test for fixed and new)",
    "lift_before": "the members' lift under the old model",
    "lift_after": "the members' lift under the new model",
    "loss_before": "the members' mean loss under the old model",
    "loss_after": "the members' mean loss under the new model",
    "members": "matched members the weak spot is measured on",
    "overlap": "share of members a paired old and new region have in common",
    "drift": "1 when new rows fall in the region significantly more often than the original rows",
    "ratio": "share of new rows in the region over the share of original rows",
    "share_new": "share of the new rows in the region",
    "lift_new": "the new rows' members' lift (new data with losses)",
}
# the yes/no fields, which stand alone in a gate ("new and significant")
GATE_FLAGS = frozenset({"worse", "still_there", "fixed", "new", "unclear", "unconfirmed", "significant", "drift"})


def gate_value(row: Mapping[str, Any], name: str) -> float | None:
    """A flat row's value of one gate field (None: the row has none, e.g. `drift` on a weak spot)."""
    if name in STATUSES:
        status = row.get("status")
        return None if status is None else float(status == name)
    v = row.get(name)
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    return float(v) if isinstance(v, (int, float)) else None
