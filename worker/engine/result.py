"""What a search returns. Plain dataclasses of numpy arrays and floats: no torch, JSON-ready."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spotlight.contract.records import RegionKernel


class SearchCanceled(Exception):
    """Raised by `search` when its `should_stop` callback returned True between steps."""


class SearchYielded(Exception):
    """Raised by `search` when its `should_yield` callback returned True between two regions.

    Carries the regions found so far as a `SearchResult` (weights n x j): handed back to `search`
    as ``resume=SearchResume.of(partial)``, the search goes on with region j and ends with the
    regions an uninterrupted run finds. Why an exception: the caller (the worker task) gives the
    worker to another tenant's job and comes back later, so the search must unwind, not wait.
    """

    def __init__(self, partial: SearchResult) -> None:
        super().__init__(f"yielded after {len(partial.regions)} region(s)")
        self.partial = partial


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Region:
        """The inverse of `to_dict` (keys it does not know go back into `extra`); float64 round trip is exact."""
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        prec = data["precision"]
        return cls(
            index=int(data["index"]),
            center=np.asarray(data["center"], dtype=np.float64),
            precision=float(prec) if isinstance(prec, float | int) else np.asarray(prec, dtype=np.float64),
            kernel=str(data["kernel"]),
            shape=str(data["shape"]),
            objective=str(data["objective"]),
            size_requested=float(data["size_requested"]),
            total_weight=float(data["total_weight"]),
            weighted_loss=float(data["weighted_loss"]),
            mean_loss=float(data["mean_loss"]),
            lift=float(data["lift"]),
            feasible=bool(data["feasible"]),
            steps_run=int(data["steps_run"]),
            converged=bool(data["converged"]),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def kernel_record(self) -> RegionKernel:
        """The region's kernel as the contract types it (spotlight/contract/records.py): what scoring rows needs."""
        return RegionKernel.model_validate(self.to_dict())

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
    # float64, d x k with orthonormal columns: the principal axes a search with `pca_components` measured
    # distance along (None without PCA). A region's centre and precision alone do not say which
    # subspace its distance lives in, so whoever scores other rows (spotlight/contract/kernel.py) needs this too.
    basis: np.ndarray | None = None
    # Products with X or X^T over all n rows (`core.EmbeddingMatrix.passes`) the search took, all
    # regions together: the machine-independent measure of its cost (bench/speed prints it per region).
    # A pass over part of the rows (a job's searched rows, the evidence check's halves) counts as its share.
    passes: float = 0.0
    # The same, by the phase of the search that took them ("starts", "steps", "member centres", ...).
    passes_by_phase: dict[str, float] = field(default_factory=dict)


@dataclass
class SearchResume:
    """Where a yielded search goes on from: the regions it had found, in order, and their kernel values.

    `weights` is the n x len(regions) float32 matrix of the partial result. The engine deflates the
    scores by these columns exactly as the uninterrupted run did (the same float32 values, in the
    same order) and seeds region j's restarts by [seed, j] as always, so resuming changes nothing
    the objective defines.
    """

    regions: list[Region]
    weights: np.ndarray

    @classmethod
    def of(cls, partial: SearchResult) -> SearchResume:
        return cls(regions=list(partial.regions), weights=partial.weights)
