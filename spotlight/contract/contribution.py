"""How much each example makes a region a weak spot: its weight times its loss above the floor.

A region's objective is its weighted mean loss, sum(k * l) / sum(k). Example i's share of it is
k_i * l_i, so ranking a region's members by ``weight * (loss - min loss)`` puts first the
examples that are both inside the region and failing: what a person wants to look at. Weight
alone ranks by geometry only and puts an easy example at the centre above a failing one at the
edge. On the planted-slice benchmark (bench/quality.py) this ranking beats both the weight and
plain loss ranking on every setting (docs/engine.md).

The loss is shifted by its minimum (its maximum, negated, for ``min_loss`` searches: there a
region's "worst" examples are the ones with the lowest loss), so contributions are >= 0 and an
example at the floor contributes nothing. numpy only: the API and the worker both use it.
"""

from __future__ import annotations

import numpy as np

from spotlight.contract.params import Objective


def reference_loss(losses: np.ndarray, objective: Objective = "max_loss") -> float:
    """The loss that contributes nothing: the minimum (max_loss) or the maximum (min_loss); 0 when empty."""
    finite = np.asarray(losses, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0
    return float(finite.min() if objective == "max_loss" else finite.max())


def contributions(
    weights: np.ndarray, losses: np.ndarray, objective: Objective = "max_loss", reference: float | None = None
) -> np.ndarray:
    """weight * |loss - reference| (float64, same shape as `weights`; `losses` broadcast along rows).

    `weights` is n or n x k; `losses` n. Never negative, never NaN: a non-finite loss or weight
    contributes 0.
    """
    w = np.asarray(weights, dtype=np.float64)
    loss = np.asarray(losses, dtype=np.float64)
    ref = reference_loss(loss, objective) if reference is None else float(reference)
    excess = loss - ref if objective == "max_loss" else ref - loss
    excess = np.where(np.isfinite(excess), np.maximum(excess, 0.0), 0.0)
    if w.ndim == 2:
        excess = excess[:, None]
    out = w * excess
    return np.where(np.isfinite(out), np.maximum(out, 0.0), 0.0)


def order_by_contribution(
    members: np.ndarray,
    weights: np.ndarray,
    losses: np.ndarray,
    objective: Objective = "max_loss",
    reference: float | None = None,
) -> np.ndarray:
    """`members` (row indices) reordered: highest contribution first, ties by weight, then by row.

    `weights` and `losses` are the full n-vectors (a region's weight column and the dataset's losses).
    """
    idx = np.asarray(members, dtype=np.int64)
    if idx.size == 0:
        return idx
    w = np.asarray(weights, dtype=np.float64)[idx]
    loss = np.asarray(losses, dtype=np.float64)
    ref = reference_loss(loss, objective) if reference is None else reference
    c = contributions(w, loss[idx], objective, ref)
    return idx[np.lexsort((idx, -w, -c))]
