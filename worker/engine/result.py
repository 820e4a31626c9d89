"""What a search returns. Plain dataclasses of numpy arrays and floats: no torch, JSON-ready."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class SearchCanceled(Exception):
    """Raised by `search` when its `should_stop` callback returned True between steps."""


def _finite(x: float) -> float:
    """Outputs must never be NaN or inf; a non-finite value here is a bug worth failing on."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"non-finite value in a search result: {x}")
    return x


@dataclass
class Region:
    """One spotlight, in the caller's coordinates.

    `center` has d entries (the caller's embedding space, after undoing standardisation and PCA);
    `precision` is a float (spherical) or d floats (diagonal), such that the kernel of example x is
    k(x) = max(0, 1 - sum(precision * (x - center)**2)) for 'flat' and
    exp(-sum(precision * (x - center)**2) / 2) for 'gaussian', and
    exp(-max(0, sum(precision * (x - center)**2) - radius_u) / 2) for 'ball' (`radius_u` in `extra`).
    `feasible` is False when no iterate met the size constraint (total_weight < size_requested):
    the region is then the best infeasible one, flagged rather than hidden.
    """

    index: int
    center: np.ndarray
    precision: float | np.ndarray
    kernel: str
    shape: str
    objective: str
    size_requested: float
    total_weight: float
    weighted_loss: float
    mean_loss: float
    lift: float
    feasible: bool
    steps_run: int
    converged: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        prec = self.precision
        return {
            "index": self.index,
            "center": [_finite(v) for v in np.asarray(self.center).ravel()],
            "precision": (
                _finite(float(prec))
                if isinstance(prec, float | int)
                else [_finite(v) for v in np.asarray(prec).ravel()]
            ),
            "kernel": self.kernel,
            "shape": self.shape,
            "objective": self.objective,
            "size_requested": _finite(self.size_requested),
            "total_weight": _finite(self.total_weight),
            "weighted_loss": _finite(self.weighted_loss),
            "mean_loss": _finite(self.mean_loss),
            "lift": _finite(self.lift),
            "feasible": bool(self.feasible),
            "steps_run": int(self.steps_run),
            "converged": bool(self.converged),
            **self.extra,
        }


@dataclass
class SearchResult:
    regions: list[Region]
    weights: np.ndarray  # float32, n x k: kernel value of every example in every region, in [0, 1]
    losses: np.ndarray  # float32, n: the losses searched (computed from logits + labels when not given)
    device: str  # the torch device the search ran on, e.g. "cpu" or "cuda:0"
    elapsed_s: float
