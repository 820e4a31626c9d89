"""The verdict: is a region more than noise? Sample splitting, one rule used by the worker, the API and bench/trust.

Why splitting (docs/engine.md, "The verdict", has the measurements): a search in many dimensions
over few rows can carve out almost any set of rows, so the figures of the rows it chose are
inflated by the choice itself (the winner's curse), and an interval that resamples those rows
cannot see it. Rows the search never used can. So:

1. **Split** (:func:`split`): a seeded random half of the rows (by the job's seed) is searched; the
   other half is held out. The search sees the held-out rows with sample weight 0 and a loss it
   cannot learn from (:func:`search_inputs`), so the engine runs unchanged, its weights cover every
   row, and a plain search of the same job costs the same.
2. **Apply** (:func:`region_rows`): a region's held-out members are the held-out rows its kernel
   admits by the same member rule as everywhere (spotlight/contract/members.py: weight > 0 and >=
   ``member_min_weight``, the threshold drawn on the searched rows).
3. **Test** (:func:`kernel_test`): the region's kernel-weighted mean loss over every held-out row
   against the same mean with the held-out losses permuted; one-sided (the other way for
   ``min_loss``). Under the null (loss unrelated to place) the weights are fixed without looking
   at the held-out losses, so this p-value is valid for each region as it stands.
4. **Correct** (:func:`holm`): Holm's step-down adjustment over the job's regions, so that the
   chance that a job on pure noise shows *any* significant region is at most ``level``.

The region's honest figures (mean loss, lift, error rate and an interval) are measured on its
held-out members (:func:`holdout_test`). numpy only: the client side, the API (the tiny-n rule at submit) and the
worker all import it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spotlight.contract import members

METHOD = "holdout"
HOLDOUT_SHARE = 0.5  # of the rows held out from the search
DEFAULT_LEVEL = 0.05
# A verdict needs room: the held-out half must be expected to hold this many members of a region of
# the requested size (fewer, and even a real weak spot cannot reach the level after correction).
MIN_HOLDOUT_MEMBERS = 5
MIN_ROWS = 20  # below this there is nothing to split
MAX_DRAWS = 5_000  # permutations a p-value counts against at most (floor 1/(draws + 1): 2e-4, under Holm's 0.05/50)
MIN_DRAWS = 1_000  # the cap on any held-out size: floor 1/1001, under Holm's 0.05/50 still
_WORK = 1_000_000  # permutations x held-out rows per region: the cap on permutations between the two above
EXACT_ROWS = 5_000  # up to this many held-out rows, exact permutations; beyond, losses drawn with replacement
STOP_AFTER = 10  # permutations reaching the observed statistic after which the count stops (Besag & Clifford)
N_BOOTSTRAP = 1000
_SEED_SALT = 0x7E57  # the split's stream is not the search's


@dataclass(frozen=True)
class Split:
    """Which rows the search uses (`searched`) and which it never sees (`held_out`); both sorted int64."""

    searched: np.ndarray
    held_out: np.ndarray

    @property
    def n(self) -> int:
        return int(self.searched.size + self.held_out.size)

    def searched_mask(self) -> np.ndarray:
        mask = np.zeros(self.n, dtype=bool)
        mask[self.searched] = True
        return mask


def split(n: int, seed: int, share: float = HOLDOUT_SHARE) -> Split:
    """A seeded random split of n rows: ``round(share * n)`` held out, the rest searched."""
    rng = np.random.default_rng([int(seed), _SEED_SALT])
    order = rng.permutation(n)
    k = int(round(share * n))
    return Split(searched=np.sort(order[k:]).astype(np.int64), held_out=np.sort(order[:k]).astype(np.int64))


def search_size(spotlight_size: float, share: float = HOLDOUT_SHARE) -> float:
    """The spotlight size to search the searched rows with: a fraction stays (a share of the rows
    searched is that share of all rows); a count is scaled to the searched share, so the region
    holds about that many rows of the whole dataset."""
    if spotlight_size < 1:
        return spotlight_size
    return float(max(1, round(spotlight_size * (1.0 - share))))


def search_inputs(losses: np.ndarray, sample_weights: np.ndarray | None, parts: Split) -> tuple[np.ndarray, np.ndarray]:
    """(losses, sample_weights) for the engine: held-out rows weigh 0, and their loss is replaced by
    the searched rows' smallest (so not even the engine's loss shift can depend on them)."""
    loss = np.array(losses, dtype=np.float32, copy=True).ravel()
    w = np.ones(loss.size) if sample_weights is None else np.array(sample_weights, dtype=np.float64).ravel()
    if parts.searched.size:
        loss[parts.held_out] = np.min(loss[parts.searched])
    w = w.copy()
    w[parts.held_out] = 0.0
    return loss, w


def too_few_rows(n: int, spotlight_size: float, share: float = HOLDOUT_SHARE) -> str | None:
    """Why a dataset of n rows is too small for a verdict at this spotlight size, or None.

    Such a job still runs (on every row) and says so: its regions are untested, its summary reads
    "No verdict: …" (spotlight/contract/records.py), and none is significant."""
    if n < MIN_ROWS:
        return (
            f"The dataset has {n} rows; a verdict on its regions needs at least {MIN_ROWS} "
            "(half of them are held out to test each region)."
        )
    expected = spotlight_size * n * share if spotlight_size < 1 else search_size(spotlight_size, share)
    if expected < MIN_HOLDOUT_MEMBERS:
        need = math.ceil(MIN_HOLDOUT_MEMBERS / (n * share) * 1000) / 1000
        return (
            f"With {n} rows and spotlight_size {spotlight_size:g}, a region would hold about {expected:.1f} of the "
            f"held-out rows that test it; a verdict needs at least {MIN_HOLDOUT_MEMBERS}. Use spotlight_size "
            f">= {need:g} (or a count >= {math.ceil(MIN_HOLDOUT_MEMBERS / (1 - share))}), or more rows."
        )
    return None


@dataclass(frozen=True)
class RegionRows:
    """One region's member set split by the verdict: `searched` (the member rule on the searched
    rows), `held_out` (held-out rows at or above `min_weight`, the threshold the searched ones drew:
    the rows its honest figures are measured on), and `all` (both, highest weight first, ties by row)."""

    searched: np.ndarray
    held_out: np.ndarray
    all: np.ndarray
    min_weight: float | None


def region_rows(
    weights_k: np.ndarray, kernel: str, parts: Split | None, sample_weights: np.ndarray | None = None
) -> RegionRows:
    """The member set of one region over every row (spotlight/contract/members.py's rule, drawn on the searched
    rows and applied to the held-out ones as to any other data). `parts` None: every row was searched."""
    column = np.asarray(weights_k)
    n = column.shape[0]
    counts = np.ones(n) if sample_weights is None else np.asarray(sample_weights, dtype=np.float64).ravel()
    held = parts.held_out if parts is not None else np.empty(0, dtype=np.int64)
    searched_counts = counts.copy()
    searched_counts[held] = 0.0
    in_search = members.member_set(column, kernel, searched_counts)
    threshold = members.member_min_weight(column, kernel, in_search)
    held_members = held[members.members_at_or_above(column[held], threshold)] if held.size else held
    held_members = held_members[counts[held_members] > 0]
    rows = np.concatenate([in_search, held_members])
    ordered = rows[np.lexsort((rows, -column[rows]))].astype(np.int64)
    return RegionRows(in_search, np.sort(held_members).astype(np.int64), ordered, threshold)


@dataclass
class HoldoutFigures:
    """One region on the held-out rows: its members there and what they lose."""

    n_members: int
    p_value: float | None  # unadjusted, one-sided (kernel_test); None when no held-out row has weight
    mean_loss: float | None
    mean_loss_ci: list[float] | None
    lift: float | None
    lift_ci: list[float] | None
    error_rate: float | None
    holdout_mean_loss: float | None
    n_draws: int


def holdout_test(
    losses: np.ndarray,
    members: np.ndarray,
    held_out: np.ndarray,
    weights_k: np.ndarray,
    *,
    objective: str = "max_loss",
    sample_weights: np.ndarray | None = None,
    wrong: np.ndarray | None = None,
    seed: int = 0,
    ci_level: float = 0.95,
) -> HoldoutFigures:
    """One region on the held-out rows: the p-value of :func:`kernel_test` (its kernel weights
    `weights_k` (n,) over every `held_out` row) and the figures of its held-out `members` (rows of
    the dataset, all in `held_out`: :func:`region_rows`).

    `wrong` (n, bool): label != prediction per row, for the error rate. Rows with a non-finite loss
    or a sample weight of 0 take no part.
    """
    loss = np.asarray(losses, dtype=np.float64).ravel()
    s = np.ones(loss.size) if sample_weights is None else np.asarray(sample_weights, dtype=np.float64).ravel()
    pool = np.asarray(held_out, dtype=np.int64)
    pool = pool[np.isfinite(loss[pool]) & (s[pool] > 0)]
    idx = np.asarray(members, dtype=np.int64)
    idx = idx[np.isfinite(loss[idx]) & (s[idx] > 0)]
    base = float(np.average(loss[pool], weights=s[pool])) if pool.size else None
    p, draws = kernel_test(loss, weights_k, pool, objective=objective, sample_weights=s, seed=seed)
    m = int(idx.size)
    if m == 0 or pool.size == 0:
        return HoldoutFigures(0, p, None, None, None, None, None, base, draws)
    w_in = s[idx]
    mean = float(np.average(loss[idx], weights=w_in))
    rng = np.random.default_rng([int(seed), _SEED_SALT, m])
    ci = _bootstrap(loss[idx], w_in, rng, ci_level)
    lift = mean / base if base and base > 0 else None
    err = None
    if wrong is not None:
        err = float(np.average(np.asarray(wrong, dtype=np.float64)[idx], weights=w_in))
    return HoldoutFigures(
        n_members=m,
        p_value=p,
        mean_loss=mean,
        mean_loss_ci=ci,
        lift=lift,
        lift_ci=[c / base for c in ci] if base and base > 0 else None,
        error_rate=err,
        holdout_mean_loss=base,
        n_draws=draws,
    )


def kernel_test(
    losses: np.ndarray,
    weights_k: np.ndarray,
    held_out: np.ndarray,
    *,
    objective: str = "max_loss",
    sample_weights: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[float | None, int]:
    """One-sided p-value of the region's kernel-weighted mean loss over every held-out row, against
    the same mean with the held-out losses permuted over the held-out rows; and the permutations run.

    Why not only the held-out members: in many dimensions a region fitted around a handful of
    searched rows admits few held-out rows by its member threshold (often none), so a test of its
    members has little or nothing to see; but its kernel still *ranks* every held-out row, and a
    real weak spot shows as higher losses at higher weight (docs/engine.md, "The verdict", measures
    both). The weights are fixed before any held-out loss is read, so under the null (losses
    exchangeable over the held-out rows) the p-value is valid. Rows whose weight is under 1e-9 of the
    heaviest held-out row's add nothing measurable and are left out (a rule on the weights alone).

    Up to ``EXACT_ROWS`` held-out rows the losses are permuted; beyond, each weighted row draws a
    held-out loss with replacement (4x cheaper there; its null is a little wider, so conservative:
    for weights summing to 1 its variance is sum(w^2) times the losses', at least the permutation's).
    Monte Carlo with Besag & Clifford's (1991) sequential stop: permutations run until
    ``STOP_AFTER`` of them reach the observed mean (p = STOP_AFTER / permutations run, still valid)
    or the cap is hit (p = (1 + reached) / (1 + cap)). A region of noise stops after a few dozen
    permutations; only a clear one runs the cap, whose floor 1 / (1 + cap) stays under the level
    after Holm. None when no held-out row has weight.
    """
    loss = np.asarray(losses, dtype=np.float64).ravel()
    s = np.ones(loss.size) if sample_weights is None else np.asarray(sample_weights, dtype=np.float64).ravel()
    k = np.asarray(weights_k, dtype=np.float64).ravel()
    pool = np.asarray(held_out, dtype=np.int64)
    pool = pool[np.isfinite(loss[pool]) & (s[pool] > 0)]
    w = np.where(np.isfinite(k[pool]) & (k[pool] > 0), k[pool], 0.0) * s[pool]
    if pool.size == 0 or not np.any(w > 0):
        return None, 0
    heavy = np.flatnonzero(w >= 1e-9 * w.max())
    w = w[heavy] / w[heavy].sum()
    pool_loss = loss[pool]
    sign = -1.0 if objective == "min_loss" else 1.0
    observed = sign * float(w @ pool_loss[heavy])
    tol = 1e-12 * max(1.0, abs(observed))
    cap = int(min(MAX_DRAWS, max(MIN_DRAWS, _WORK // pool.size)))
    rng = np.random.default_rng([int(seed), _SEED_SALT, int(pool.size), 1])
    exact = pool.size <= EXACT_ROWS
    at_least = 0
    done = 0
    batch = 64
    while done < cap:
        b = min(batch, cap - done)
        if exact:
            dealt = rng.permuted(np.broadcast_to(pool_loss, (b, pool.size)), axis=1)[:, heavy]
        else:
            dealt = pool_loss[rng.integers(0, pool.size, size=(b, heavy.size))]
        reached = sign * (dealt @ w) >= observed - tol
        total = np.cumsum(reached)
        if at_least + int(total[-1]) >= STOP_AFTER:
            run = done + int(np.searchsorted(total, STOP_AFTER - at_least)) + 1
            return STOP_AFTER / run, run
        at_least += int(total[-1])
        done += b
        batch = min(2 * batch, 1024)
    return float((1 + at_least) / (1 + cap)), cap


# Poisson(1) by its inverse CDF: the CDF, and for each of _CELLS equal cells of [0, 1) the count of every u
# in it, or -1 where a CDF step falls inside the cell (then u is compared with the CDF itself).
_CELLS = 1 << 16
_POISSON1_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(20)])


def _poisson1_cells() -> np.ndarray:
    edges = np.arange(_CELLS + 1) / _CELLS
    low = np.searchsorted(_POISSON1_CDF, edges[:-1], side="right")
    high = np.searchsorted(_POISSON1_CDF, np.nextafter(edges[1:], 0.0), side="right")
    return np.where(low == high, low, -1).astype(np.int8)


_POISSON1_CELLS = _poisson1_cells()


def poisson1(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Poisson(1) counts (float64), exact by the inverse CDF of one uniform each: a table lookup per
    draw, and a search of the CDF for the few draws whose cell holds a step of it.

    Why not ``rng.poisson``: the bootstraps (here and worker/describe.py) draw a count per member per
    resample, and numpy's Poisson sampler costs ~80-100 ns a count against ~5 ns here; on a 2 000-row
    job they took a tenth of the time outside the search (docs/engine.md, speed)."""
    u = rng.random(shape)
    counts = _POISSON1_CELLS[(u * _CELLS).astype(np.int64)].astype(np.float64)
    edge = counts < 0
    if edge.any():
        counts[edge] = np.searchsorted(_POISSON1_CDF, u[edge], side="right")
    return counts


def _bootstrap(loss: np.ndarray, w: np.ndarray, rng: np.random.Generator, level: float) -> list[float]:
    """Percentile interval of the weighted mean under the Poisson bootstrap of the members."""
    stats = np.empty(N_BOOTSTRAP)
    full = float(np.average(loss, weights=w))
    for start in range(0, N_BOOTSTRAP, 128):
        b = min(128, N_BOOTSTRAP - start)
        c = poisson1(rng, (b, loss.size)) * w
        den = c.sum(axis=1)
        stats[start : start + b] = np.where(den > 0, (c @ loss) / np.where(den > 0, den, 1.0), full)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and is not counted).

    Region j is significant at level a when its adjusted p <= a; the chance that any region of a job
    on noise is, is then at most a, whatever the dependence between regions (Holm, 1979).
    """
    tested = [(p, j) for j, p in enumerate(p_values) if p is not None]
    m = len(tested)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, j) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * float(p)))
        out[j] = running
    return out
