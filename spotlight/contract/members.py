"""Which rows are a region's *members*: the one rule, used by the worker, the API and the benchmarks.

A region is soft: every row i has a kernel weight k_i in [0, 1] (and, when the caller gave
``sample_weights``, a count s_i). A person, though, reads a region as a set of rows. The member set
is that set, and its size is of the order of the region:

- **flat kernel**: the region's support, every row with k_i > 0. The paper's flat kernel is zero
  outside a ball, so the ball *is* the region.
- **ball kernel**: its core, every row with k_i = 1: the rows nearest the centre that together
  count the spotlight size (the kernel is 1 there and decays beyond, so the core *is* the region;
  its edge only ranks the rows outside).
- **gaussian (and any other kernel that is never zero)**: the heaviest rows that together count as many
  examples as the region does. The region counts S = sum(s_i * k_i) examples (its ``total_weight``,
  the effective size); its members are the rows of highest k_i, taken in that order until their
  counts s_i reach S (without sample weights: the ceil(S) heaviest rows). It is the hard set with
  the same mass as the soft one: the rows the region's weight is mostly made of.

Ties in k are broken by row index (lower first), so the set is deterministic. Rows with k_i * s_i
= 0 (or a non-finite value) are never members, so a region whose weights are all 0 has no members.

**Other data** (``POST /v1/jobs/{id}/score``): the ceil(S) rule is defined on the dataset the
region was found on; rows of another dataset are members by the threshold it drew there. Each
region stores ``member_min_weight`` (see :func:`member_min_weight`): 0 for the flat kernel, 1 for
the ball (its core), the smallest kernel weight among its members for the others, and None when it has no members. A row of
other data is a member when its weight is above 0 and at least that (:func:`members_at_or_above`):
for the flat kernel that is the support again; for the gaussian, the rows at least as deep in the
region as its shallowest member. So the job's own rows score as its member set, up to rows whose
weight is within 1e-4 (relative) of that member's: the comparison allows that much below the
threshold, because weights recomputed from the region's centre and precision (spotlight/contract/kernel.py,
float64) differ from the engine's float32 ones by rounding and the shallowest member must not drop
out for it; and rows tied with it, which the ceil(S) rule may cut by row index.

The overlap of two regions is the share of one's members that are also members of the other:
``overlap_share(a, b) = |a & b| / |a|`` (0 when a is empty). Regions report it against every
earlier region: "what share of this region was already shown".

numpy only, so the client side, the API and the worker all import it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from spotlight.contract.kernel import CORE_KERNELS, SUPPORT_KERNELS

# S within this relative distance below an integer counts as that integer: ceil(40.000000001) is 41
# but a region of 40 rows whose float32 weights sum to 40.000000001 has 40 members.
_MASS_TOLERANCE = 1e-6
# a core kernel's members are the rows of weight 1, within this of it (SUPPORT_KERNELS, CORE_KERNELS:
# each kernel's member rule, spotlight/contract/kernel.py)
_CORE_TOLERANCE = 1e-6
# weights of other data within this relative distance below a region's member_min_weight still reach it
_WEIGHT_RTOL = 1e-4


def _usable(weights_k: np.ndarray, sample_weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(weights_k, dtype=np.float64).ravel()
    s = np.ones_like(k) if sample_weights is None else np.asarray(sample_weights, dtype=np.float64).ravel()
    if s.shape != k.shape:
        raise ValueError(f"sample_weights has {s.size} entries but the weights have {k.size}")
    ok = np.isfinite(k) & np.isfinite(s) & (k > 0) & (s > 0)
    return np.where(ok, k, 0.0), np.where(ok, s, 0.0)


def effective_size(weights_k: np.ndarray, sample_weights: np.ndarray | None = None) -> float:
    """S = sum(s_i * k_i): how many examples the region counts (its ``total_weight``)."""
    k, s = _usable(weights_k, sample_weights)
    return float(k @ s)


def member_set(weights_k: np.ndarray, kernel: str, sample_weights: np.ndarray | None = None) -> np.ndarray:
    """The region's members (see the module docstring), highest weight first, ties by row (int64).

    Parameters
    ----------
    weights_k : (n,) array
        The region's kernel weight of every row (a column of the job's weights).
    kernel : str
        The region's kernel: 'flat' takes the support, 'ball' its core (weight 1); any other kernel
        the heaviest rows that
        count as many examples as the region.
    sample_weights : (n,) array, optional
        The caller's per-row counts; a row with count 0 is never a member.
    """
    k, s = _usable(weights_k, sample_weights)
    candidates = np.flatnonzero(k > 0)
    order = candidates[np.lexsort((candidates, -k[candidates]))]
    if kernel in SUPPORT_KERNELS or order.size == 0:
        return order.astype(np.int64)
    if kernel in CORE_KERNELS:
        return order[k[order] >= 1.0 - _CORE_TOLERANCE].astype(np.int64)
    mass = float(k @ s)
    need = math.ceil(mass * (1.0 - _MASS_TOLERANCE))
    counted = np.cumsum(s[order])
    # the fewest heaviest rows whose counts reach the region's mass (at least one: the region is not empty)
    m = int(np.searchsorted(counted, need * (1.0 - _MASS_TOLERANCE), side="left")) + 1
    return order[: max(1, min(m, order.size))].astype(np.int64)


def member_min_weight(weights_k: np.ndarray, kernel: str, members: np.ndarray) -> float | None:
    """The weight at or above which a row of other data is a member (and above 0); None: no row is.

    0.0 for the flat kernel (its members are its support, whatever the data); just under 1 for the
    ball (its core, whatever the data); for any other kernel
    the smallest weight among `members`, the region's member set on the data it was found on.
    """
    if kernel in SUPPORT_KERNELS:
        return 0.0
    if kernel in CORE_KERNELS:
        return 1.0 - _CORE_TOLERANCE
    idx = np.asarray(members, dtype=np.int64)
    if idx.size == 0:
        return None
    return float(np.min(np.asarray(weights_k, dtype=np.float64)[idx]))


def members_at_or_above(weights_k: np.ndarray, min_weight: float | None) -> np.ndarray:
    """Rows of other data that are members: finite weight > 0 and >= `min_weight` (None: none),
    highest weight first, ties by row (int64)."""
    k = np.asarray(weights_k, dtype=np.float64).ravel()
    if min_weight is None:
        return np.empty(0, dtype=np.int64)
    ok = np.isfinite(k) & (k > 0) & (k >= float(min_weight) * (1.0 - _WEIGHT_RTOL))
    rows = np.flatnonzero(ok)
    return rows[np.lexsort((rows, -k[rows]))].astype(np.int64)


def overlap_share(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a|: the share of a's members that are also b's members (0.0 when a is empty)."""
    a = np.asarray(a, dtype=np.int64)
    if a.size == 0:
        return 0.0
    return float(np.isin(a, np.asarray(b, dtype=np.int64)).sum() / a.size)


def overlaps_with_earlier(member_sets: Sequence[np.ndarray]) -> list[list[dict[str, float | int]]]:
    """For region j, one entry per earlier region i < j: ``{"region": i, "shared": |M_j & M_i|,
    "share": |M_j & M_i| / |M_j|}`` — what share of region j's members region i already held."""
    sets = [np.asarray(m, dtype=np.int64) for m in member_sets]
    out: list[list[dict[str, float | int]]] = []
    for j, mj in enumerate(sets):
        row: list[dict[str, float | int]] = []
        for i in range(j):
            shared = int(np.isin(mj, sets[i]).sum())
            row.append({"region": i, "shared": shared, "share": shared / mj.size if mj.size else 0.0})
        out.append(row)
    return out


def overlap_matrix(member_sets: Sequence[np.ndarray]) -> np.ndarray:
    """k x k: entry (j, i) is overlap_share(M_j, M_i), the share of region j's members in region i."""
    sets = [np.asarray(m, dtype=np.int64) for m in member_sets]
    k = len(sets)
    out = np.zeros((k, k))
    for j in range(k):
        for i in range(k):
            out[j, i] = overlap_share(sets[j], sets[i])
    return out
