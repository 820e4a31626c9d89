"""Weak spots across runs: two jobs on the same rows, or a job and new data (numpy only).

**Two jobs on the same evaluation rows** (an old and a new model evaluated on one set). Rows are
matched by the caller's ids (:func:`match_rows`, compared as given: the string ``"7"`` is not the
integer ``7``); rows present in one job only are counted and reported, never guessed, and a
comparison with fewer than ``MIN_MATCHED_ROWS`` matched rows, or fewer than ``MIN_MATCHED_SHARE``
of either job's rows, is refused. Everything below is measured on the matched rows only.

Embedding spaces of two models differ, so regions are never compared by their centres: a region is
its member set (spotlight/contract/members.py), a set of rows, and rows are what both jobs share.

- **Pairing.** A region of the old job and one of the new job are the same weak spot when their
  matched member sets overlap: ``|A & B| / min(|A|, |B|) >= PAIR_MIN_OVERLAP``. Pairs are made
  greedily, highest overlap first, each region in at most one pair; a pair is shown once.
- **The rows it is tested on.** A region's members were chosen by its own job's search, so their
  loss on that job is selected (biased up: a region picked because its rows lose most regresses
  toward the mean on any other model). A job with the verdict (spotlight/contract/verdict.py) searched a
  seeded half of its rows; its region's members in the other half (``JobRows.held_out``) were admitted
  by the kernel without their losses being seen. Each weak spot is measured on one member set — the
  old region's for a pair or an old region alone, the new region's for a new region alone — and
  tested on that set's **held-out members** (``tested_on: "held_out_members"``, ``tested_members``):
  both models' losses there are honest, and every figure (``before``, ``after``) comes from those
  rows. A job without the split (too few rows for a verdict) is tested on all its region's members
  (``tested_on: "all_members"``) and its side is marked ``selected``.
- **The statistic: percentiles, paired.** Cross-entropy is heavy-tailed: one row with loss 30 among
  ten with loss 0 makes a mean's interval useless. Each model's losses on the matched rows become
  mid-rank percentiles (0.5 is a typical row, 1 the worst); a member set's ``rank`` is its mean
  percentile, the chance that a member loses more than a random row. Intervals are percentile
  bootstraps over the tested rows at ``1 - level`` (``rank_ci``; ``N_BOOTSTRAP`` resamples), the same
  resamples for both models, so every comparison of the two sides is paired row by row. Decisions are
  one-sided tests at ``level`` (the matching end of a ``1 - 2 level`` interval).
- **Elevated** on a side: the tested rows' rank is above 0.5 at the level.
- **Shrunk** (fixed, new): the other model keeps less than ``FIXED_SHARE`` (half) of the origin
  model's excess over a typical row: ``(rank_other - 0.5) - FIXED_SHARE (rank_origin - 0.5) < 0`` at
  the level (``excess_kept``: the share kept; ``excess_kept_test_ci``: that difference's interval).
  A relative line, because a fixed weak spot need not become average (the restored 8s of
  bench/compare stay a little harder than a typical digit) and a retrain of the same model keeps
  its weak spots whole.
- **Established**: the region's own job called it a weak spot (``significant`` when the record has
  one, else ``p_value < level``; None when untested counts as not refuted) and its tested rows are
  elevated on that job's losses too. A mean-loss verdict carried by a few extreme losses is not a
  place where the model does worse.
- **Worse**: elevated under the new model and the paired ratio of the members' mean-loss lifts, new
  over old, above ``WORSE_RATIO`` (1.25) at the level (``lift_ratio_ci``).
- Fewer than ``MIN_TESTED`` tested rows: figures are given, nothing is decided (unclear / unconfirmed).

Status of each weak spot (``STATUSES``), first match wins:

=============== ============================================================================
``worse``       an old region: elevated under the new model and its lift there over 1.25 x the old one
``still_there`` an old region the new job's own region overlaps and shows elevated on that region's
                held-out members
``fixed``       an old region, established, shrunk under the new model
``new``         a new region alone, established, shrunk under the old model (fine there before)
``still_there`` elevated under the other model (a new region: it was there already)
``unconfirmed`` not established: its job's test found it not significant, or its tested rows do
                not lose more than a typical row on its own model (noise, or a few extreme losses)
``unclear``     established, but the other side is neither elevated nor shrunk at the level
=============== ============================================================================

``significant``: for fixed and new, the own job's verdict (True; None when its job has no test);
for still_there and worse, True (the comparison's own test). Gate on ``new and significant`` to fail
only on new weak spots their own job established. Under the null (an identical retrain) a fixed or
new needs a region its job wrongly called significant (the verdict's Holm level) whose untouched
members are also elevated by rank on its own model: bench/compare measures none on 10 of 10 seeds.

**A job and new data for the same model** (:func:`drift`): the job's regions are scored on the new
rows with the score route's machinery (spotlight/contract/kernel.py, the member threshold of members.py), the
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
MAX_BOOTSTRAP_DRAWS = 2_000_000
PAIR_MIN_OVERLAP = 0.5
# a weak spot is classed on at least this many untouched members; fewer: unclear (or unconfirmed)
MIN_TESTED = 10
# fixed / new: the other model keeps less than this share of the members' excess percentile
FIXED_SHARE = 0.5
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
    held_out: np.ndarray | None = None  # rows its search never used (the verdict's split); None: every row


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
def _resampled_means(columns: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of each column of `columns` (m rows x k), the same resamples for every column
    (so that any comparison of two columns is paired row by row)."""
    m = columns.shape[0]
    boots = max(200, min(n_boot, MAX_BOOTSTRAP_DRAWS // max(1, m)))
    draws = rng.integers(0, m, size=(boots, m), dtype=np.int32)
    by_column = np.ascontiguousarray(columns.T)
    return np.stack([np.take(col, draws).sum(axis=1) for col in by_column], axis=1) / m


def percentiles(losses: np.ndarray) -> np.ndarray:
    """Each row's mid-rank percentile among `losses`, in (0, 1): 0.5 is a typical row's. A heavy tail
    of cross-entropy cannot stretch it: the worst row counts as 1, however large its loss."""
    ordered = np.sort(losses)
    below = np.searchsorted(ordered, losses, side="left")
    at_or_below = np.searchsorted(ordered, losses, side="right")
    return (below + at_or_below) / (2.0 * losses.size)


def _figures(losses: np.ndarray, rows: np.ndarray, overall: float) -> dict[str, Any]:
    mean = float(losses[rows].mean()) if rows.size else None
    return {"mean_loss": mean, "lift": (mean / overall) if mean is not None and overall > 0 else None}


def _lower(samples: np.ndarray, level: float) -> float:
    """The one-sided lower bound at 1 - level: a decision's test at the level."""
    return float(np.quantile(samples, level))


def _upper(samples: np.ndarray, level: float) -> float:
    return float(np.quantile(samples, 1 - level))


def _interval(samples: np.ndarray, level: float) -> list[float]:
    lo, hi = np.quantile(samples, [level / 2, 1 - level / 2])
    return [float(lo), float(hi)]


@dataclass
class _Side:
    """One model's losses on the matched rows, with their percentiles and mean."""

    losses: np.ndarray
    ranks: np.ndarray
    mean: float

    @classmethod
    def of(cls, losses: np.ndarray) -> _Side:
        return cls(losses, percentiles(losses), float(losses.mean()))


# ----- two jobs -----
def compare_jobs(
    old: JobRows, new: JobRows, level: float = DEFAULT_LEVEL, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, Any]:
    """Every weak spot of either job, classed (see the module docstring); the result is plain JSON."""
    if not 0 < level < 0.5:
        raise ValueError("level must be in (0, 0.5)")
    rows = match_rows(old.ids, new.ids)
    side_old = _Side.of(np.asarray(old.losses, dtype=np.float64)[rows.old])
    side_new = _Side.of(np.asarray(new.losses, dtype=np.float64)[rows.new])
    # members as positions among the matched rows, and the positions each job's search never used
    sets_old = [_positions(rows.old, m) for m in old.members]
    sets_new = [_positions(rows.new, m) for m in new.members]
    held_old = _held_mask(rows.old, old.held_out)
    held_new = _held_mask(rows.new, new.held_out)
    pairs = _pairs(sets_old, sets_new)
    rng = np.random.default_rng(seed)
    spots: list[dict[str, Any]] = []
    paired_new = {j for _, j, _ in pairs}
    paired_old = {i: (j, share) for i, j, share in pairs}
    for i, region in enumerate(old.regions):
        j, share = paired_old.get(i, (None, None))
        partner = None
        if j is not None:  # the new job's own region on these rows: its untouched members under the new model
            partner_rows = _tested(sets_new[j], held_new)
            partner = _elevated(side_new.ranks, partner_rows, level, n_boot, rng)
        spots.append(
            _spot(
                "old",
                region,
                new.regions[j] if j is not None else None,
                share,
                sets_old[i],
                len(old.members[i]),
                held_old,
                partner,
                side_old,
                side_new,
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
                held_new,
                None,
                side_old,
                side_new,
                level,
                n_boot,
                rng,
            )
        )
    for spot in spots:
        spot["examples"] = _examples(
            spot.pop("_rows"), spot["measured_on"], rows, old, new, side_old.losses, side_new.losses
        )
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
        "mean_loss": {"old": side_old.mean, "new": side_new.mean},
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


def _held_mask(matched: np.ndarray, held_out: np.ndarray | None) -> np.ndarray | None:
    """Which matched positions the job's search never used (None: it used every row)."""
    if held_out is None:
        return None
    mask = np.zeros(matched.size, dtype=bool)
    mask[_positions(matched, np.asarray(held_out, dtype=np.int64))] = True
    return mask


def _tested(rows: np.ndarray, held: np.ndarray | None) -> np.ndarray:
    """The rows a weak spot is tested on: its held-out members when its job has them, else all of them."""
    return rows if held is None else rows[held[rows]]


def _elevated(ranks: np.ndarray, rows: np.ndarray, level: float, n_boot: int, rng: np.random.Generator) -> bool:
    """Whether the rows' mean percentile is above a typical row's (0.5) at the level."""
    if rows.size < MIN_TESTED:
        return False
    return _lower(_resampled_means(ranks[rows][:, None], n_boot, rng)[:, 0], level) > 0.5


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
    held: np.ndarray | None,
    partner_elevated: bool | None,
    old: _Side,
    new: _Side,
    level: float,
    n_boot: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """One weak spot: the member set `rows` of the `origin` job's region, tested on `tested` (its
    members that job's search never used, `held`), both models' figures on those rows."""
    tested = _tested(rows, held)
    own, other = (old, new) if origin == "old" else (new, old)
    before, after = _figures(old.losses, tested, old.mean), _figures(new.losses, tested, new.mean)
    for f in (before, after):
        f.update(lift_ci=None, rank=None, rank_ci=None, selected=False)
    if held is None:  # every row was searched: the origin side's figures are those that chose the members
        (before if origin == "old" else after)["selected"] = True
    own_up = other_up = shrunk = ratio_up = False
    kept_ci = ratio_ci = None
    kept: float | None = None
    if tested.size >= 2:  # figures from two rows up, decisions from MIN_TESTED
        # one set of resamples for all four columns: every comparison of the two sides is paired
        columns = np.column_stack([old.ranks[tested], new.ranks[tested], old.losses[tested], new.losses[tested]])
        means = _resampled_means(columns, n_boot, rng)
        boot = {"old": means[:, 0], "new": means[:, 1]}
        loss_b = {"old": means[:, 2], "new": means[:, 3]}
        for name, side, f in (("old", old, before), ("new", new, after)):
            f["rank"] = float(side.ranks[tested].mean())
            f["rank_ci"] = _interval(boot[name], level)
            f["lift_ci"] = _interval(loss_b[name] / side.mean, level) if side.mean > 0 else None
        own_b, other_b = (boot["old"], boot["new"]) if origin == "old" else (boot["new"], boot["old"])
        decides = tested.size >= MIN_TESTED
        own_up = decides and _lower(own_b, level) > 0.5
        other_up = decides and _lower(other_b, level) > 0.5
        # what is left of the origin side's excess over a typical row: fixed / new below FIXED_SHARE of it
        left = (other_b - 0.5) - FIXED_SHARE * (own_b - 0.5)
        kept_ci = _interval(left, level)
        shrunk = decides and _upper(left, level) < 0
        own_excess = float(own.ranks[tested].mean()) - 0.5
        kept = (float(other.ranks[tested].mean()) - 0.5) / own_excess if own_excess > 0 else None
        if old.mean > 0 and new.mean > 0:
            # the ratio of the members' lifts, new over old, resampled on the same rows
            after_b, before_b = loss_b["new"] / new.mean, loss_b["old"] / old.mean
            ratio_b = after_b / np.maximum(before_b, 1e-12)
            ratio_ci = _interval(ratio_b, level)
            ratio_up = decides and _lower(ratio_b, level) > WORSE_RATIO
    region = old_region if origin == "old" else new_region
    verdict = region_verdict(region, level) if region is not None else None
    established = verdict is not False and own_up
    significant: bool | None
    if origin == "old" and other_up and ratio_up:
        status, significant = "worse", True
    elif origin == "old" and partner_elevated:
        status, significant = "still_there", True  # the new job's own untouched members show it
    elif established and shrunk:
        status, significant = ("fixed" if origin == "old" else "new"), verdict
    elif other_up:
        status, significant = "still_there", True
    elif not established:
        status, significant = "unconfirmed", False
    else:
        status, significant = "unclear", False
    return {
        "status": status,
        "significant": significant,
        "old_region": region_index(old_region) if old_region is not None else None,
        "new_region": region_index(new_region) if new_region is not None else None,
        "overlap": overlap,
        "measured_on": f"{origin}_region_members",
        "tested_on": "all_members" if held is None else "held_out_members",
        "members": int(rows.size),
        "tested_members": int(tested.size),
        "members_unmatched": int(n_members - rows.size),
        "own_verdict": verdict,
        "before": before,
        "after": after,
        "excess_kept": kept,
        "excess_kept_test_ci": kept_ci,
        "lift_ratio_ci": ratio_ci,
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


def spot_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per weak spot (the table, the DataFrame and the gate read these names)."""
    out = []
    for s in result.get("weak_spots", []):
        before, after = s["before"], s["after"]
        b_ci, a_ci = before.get("lift_ci") or [None, None], after.get("lift_ci") or [None, None]
        b_rank, a_rank = before.get("rank_ci") or [None, None], after.get("rank_ci") or [None, None]
        out.append(
            {
                "status": s["status"],
                "significant": s["significant"],
                "old_region": s["old_region"],
                "new_region": s["new_region"],
                "overlap": s["overlap"],
                "measured_on": s["measured_on"],
                "tested_on": s.get("tested_on", "all_members"),
                "members": s["members"],
                "tested_members": s.get("tested_members", s["members"]),
                "selected_before": bool(before.get("selected")),
                "selected_after": bool(after.get("selected")),
                "rank_before": before.get("rank"),
                "rank_before_ci_low": b_rank[0],
                "rank_before_ci_high": b_rank[1],
                "rank_after": after.get("rank"),
                "rank_after_ci_low": a_rank[0],
                "rank_after_ci_high": a_rank[1],
                "excess_kept": s.get("excess_kept"),
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


# ----- the gate over a comparison's rows (spotlight/client/gate.py's grammar, these fields) -----
GATE_FIELDS: dict[str, str] = {
    "worse": "1 when the weak spot got worse (elevated under the new model, lift significantly over 1.25 x)",
    "still_there": "1 when the weak spot is still there",
    "fixed": "1 when the new model keeps less than half of an old weak spot's excess rank",
    "new": "1 when the old model had less than half of a new weak spot's excess rank",
    "unclear": "1 when the other model's rank is neither elevated nor shrunk at the level",
    "unconfirmed": "1 when the region's own job does not establish it (noise, or a few extreme losses)",
    "significant": "1 when the status is established at the level (a job's own test for fixed and new)",
    "rank_before": "the tested members' mean loss percentile under the old model (0.5: a typical row)",
    "rank_after": "the tested members' mean loss percentile under the new model (0.5: a typical row)",
    "excess_kept": "the other model's excess rank over the origin model's (fixed / new below 0.5)",
    "tested_members": "members the weak spot is tested on (held out from its job's search)",
    "lift_before": "the members' lift under the old model",
    "lift_after": "the members' lift under the new model",
    "loss_before": "the members' mean loss under the old model",
    "loss_after": "the members' mean loss under the new model",
    "members": "matched members of the region the weak spot is measured on",
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
