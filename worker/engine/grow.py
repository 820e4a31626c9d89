"""A region as big as its weak spot: grow a found region along its own ordering while it stays a weak spot.

The search finds each region at the spotlight size S (`spotlight_size`, here the floor). Real weak
spots come in many sizes; one several times S would otherwise come back as an S-sized sliver plus
near-copies. So once a region is found (`sizing="grow"`):

1. The rows are ordered by the region's own scaled distance u from its centre (the order its kernel
   ranks them in). Beyond the first S of weight, they are taken in rings of RING x S of weight.
2. A ring is added while its weighted mean score (the deflated loss scores the region was found on)
   is significantly above the mean of all rows: ring mean - mean > Z x sd / sqrt(ring weight), a
   one-sided z-test on rows the region's own objective did not count (they lie outside its size).
   The first ring that fails stops the growth (no skipping ahead), and the region grows to at most
   MAX_SHARE of the weight.
3. The region is then refitted to that size at the same centre, so that its members
   (`spotlight.contract.members`) are the grown rows: the ball's core is recomputed with the new size; the
   gaussian's precisions are all scaled by one factor so that its kernel weight sums to the new size
   (bisection on that factor; u scales with it); the flat kernel's so that its support ends at the
   first row left out. A precision only ever falls (every row's weight rises), so the size constraint
   still holds.

Why this rule: a ring is "more of the weak spot" exactly when its rows still fail more than the data
as a whole, and testing rings the objective never saw keeps the rule honest about selection (on
shuffled losses the ring just outside a region is as good as any other rows, so a region of noise
does not grow; measured in docs/engine.md). Deflation then removes the whole grown region, so the
next region shows another weak spot, not a near-copy.

Cost: one scaled-distance pass over X per region (O(n d)) and a sort of n numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from spotlight.contract.params import GROW_MAX_SHARE, GROW_RING_SHARE
from worker.engine import core

# shared with the API, which refuses sizing="grow" where not one ring fits (SearchParams.idle_settings)
RING = GROW_RING_SHARE  # ring width, in units of S
Z = 3.0  # one-sided z a ring must clear (p ~ 0.0013 per ring)
MAX_SHARE = GROW_MAX_SHARE  # a region grows to at most this share of the total weight


def grown_size(u: np.ndarray, scores: np.ndarray, weights: np.ndarray, size: float) -> float:
    """The size a region grows to (>= size): rings beyond `size` along ascending u, each kept while its
    weighted mean score clears mean + Z sd / sqrt(ring weight) (module docstring)."""
    total = float(weights.sum())
    if total <= 0 or size <= 0:
        return size
    mean = float(np.average(scores, weights=weights))
    sd = math.sqrt(float(np.average((scores - mean) ** 2, weights=weights)))
    if sd <= 0:
        return size
    order = np.argsort(u, kind="stable")
    order = order[weights[order] > 0]
    cum = np.cumsum(weights[order])
    ring = max(RING * size, 1.0)
    limit = MAX_SHARE * total
    grown = size
    start = int(np.searchsorted(cum, size, side="left")) + 1  # first row beyond the region's S
    while grown + ring <= limit:
        stop = int(np.searchsorted(cum, grown + ring, side="left")) + 1
        if stop <= start or stop > order.size:
            break
        rows = order[start:stop]
        w = weights[rows]
        ring_mean = float(np.average(scores[rows], weights=w))
        if ring_mean - mean <= Z * sd / math.sqrt(float(w.sum())):
            break
        grown = float(cum[stop - 1])
        start = stop
    return grown


def precision_shift(
    u: torch.Tensor, weights: torch.Tensor, weight: Callable[[torch.Tensor], torch.Tensor], size: float
) -> float:
    """c such that sum_i w_i K(e^c u_i) = size for the kernel K = `weight` (bisection on c: the total
    falls as c rises)."""

    def total(c: float) -> float:
        return float((weight(u * math.exp(c)) * weights).sum())

    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if total(mid) >= size:
            lo = mid
        else:
            hi = mid
    return lo


def support_shift(u: torch.Tensor, weights: torch.Tensor, size: float) -> float:
    """c such that a support kernel's support (e^c u < 1) is the rows that count `size` nearest the centre."""
    order = torch.argsort(u)
    keep = order[weights[order] > 0]
    cum = torch.cumsum(weights[keep], 0)
    last = int(torch.searchsorted(cum, torch.tensor([size], dtype=cum.dtype, device=cum.device))[0])
    if last + 1 >= keep.numel():
        return 0.0
    edge = float(u[keep[last + 1]])  # the first row left out: its u maps to 1
    return -math.log(edge) if edge > 0 else 0.0


def grow_region(
    data: core.EmbeddingMatrix,
    mu: torch.Tensor,
    theta: torch.Tensor,
    shift: Callable[[torch.Tensor, torch.Tensor, float], float | None],
    weights: torch.Tensor,
    scores: torch.Tensor,
    size: float,
) -> tuple[torch.Tensor, float]:
    """The region's theta refitted to its grown size, and that size (theta unchanged when it does not grow).

    `shift(u, weights, size)` is the variant's refit (`Variant.size_shift`); None keeps theta (the
    ball's core is sized by its `region_weights` with the returned size)."""
    with torch.no_grad():
        u = core.scaled_distances(data, mu[:, None], theta[:, None])[0]
        new_size = grown_size(
            u.double().cpu().numpy(), scores.double().cpu().numpy(), weights.double().cpu().numpy(), size
        )
        if new_size <= size:
            return theta, new_size
        c = shift(u.double(), weights.double(), new_size)
        return (theta, new_size) if c is None else (theta + min(c, 0.0), new_size)
