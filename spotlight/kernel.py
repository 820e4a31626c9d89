"""A region's kernel weight of any embedding: the formula the engine optimises, in numpy, in one place.

A region (spotlight/records.py's `RegionRecord`, as `GET /v1/jobs/{id}/regions` returns it)
is a centre c and a precision p (one float: spherical; d floats: diagonal) in the caller's
embedding units, and a kernel:

    u(x) = sum_j p_j (x_j - c_j)^2
    flat:      k(x) = max(0, 1 - u)
    gaussian:  k(x) = exp(-u / 2)
    ball:      k(x) = exp(-max(0, u - radius_u) / 2)   (1 on the core u <= radius_u; the region
               carries radius_u, the u of the row that closed its core of spotlight_size rows)

The engine searches standardised coordinates z = (x - m) / s; its precision there, tau, is
reported as p = tau / s^2, so u is the same number in both units and these weights equal the
engine's (up to float32 rounding of z). A search with `pca_components` measures distance inside
its principal subspace: u is then measured on (x - c) @ basis, the basis (d x k, orthonormal columns)
the worker stores beside the regions (`protocol.BASIS_FILE`, `GET /v1/jobs/{id}/basis`). It is not
part of the region, so such regions (``precision_space: "pca"``) need `basis`, else `region_weights`
refuses rather than answer wrongly. A search with
label/prediction evidence (`evidence_weight`, spotlight/evidence.py) adds a term to u that needs
the rows' labels (and predictions): such regions carry an ``evidence`` object, and
`region_weights` refuses rows given without what it needs.

Used by the client (`Region.weights(X)`), the API's score route and a test against the engine.
numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spotlight import evidence as evidence_terms
from spotlight.records import RegionKernel

KERNELS = ("flat", "gaussian", "ball")
ROW_CHUNK = 65536


class RegionSpaceError(ValueError):
    """The region's distance is measured in a space this call was not given (a PCA basis, labels)."""


def kernel_of(u: np.ndarray, kernel: str, radius_u: float | None = None) -> np.ndarray:
    """Kernel value of scaled squared distances u >= 0 (`radius_u`: the ball's core, needed for 'ball')."""
    if kernel == "flat":
        return np.maximum(0.0, 1.0 - u)
    if kernel == "gaussian":
        return np.exp(-0.5 * u)
    if kernel == "ball":
        if radius_u is None or not np.isfinite(radius_u):
            raise ValueError("a 'ball' region needs its radius_u (the core's edge as a value of u)")
        return np.exp(-0.5 * np.maximum(0.0, u - float(radius_u)))
    raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")


def weights(
    x: Any,
    center: Any,
    precision: float | Any,
    kernel: str,
    basis: Any | None = None,
    extra_u: np.ndarray | None = None,
    radius_u: float | None = None,
) -> np.ndarray:
    """k(x) for every row of x (n x d), float64 in [0, 1]; rows are processed in chunks.

    `extra_u` (n): a part of each row's u measured outside the embeddings (the evidence term).
    `radius_u`: the ball's core edge, for kernel 'ball'."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    c = np.asarray(center, dtype=np.float64).ravel()
    if x.ndim != 2 or x.shape[1] != c.shape[0]:
        raise ValueError(f"embeddings must be n x {c.shape[0]} (the region's dimension), got shape {list(x.shape)}")
    p = np.asarray(precision, dtype=np.float64)
    b = None if basis is None else np.asarray(basis, dtype=np.float64)
    if b is not None and (b.ndim != 2 or b.shape[0] != c.shape[0]):
        raise ValueError(f"basis must be {c.shape[0]} x k (the region's dimension), got shape {list(b.shape)}")
    width = c.shape[0] if b is None else b.shape[1]
    if p.ndim > 0 and p.size not in (1, width):
        raise ValueError(f"precision has {p.size} entries; expected 1 or {width}")
    # one float (spherical) or one per dimension (diagonal): broadcasting covers both
    p = p.reshape(-1) if p.size > 1 else p.reshape(())
    out = np.empty(x.shape[0], dtype=np.float64)
    for i in range(0, x.shape[0], ROW_CHUNK):
        r = np.asarray(x[i : i + ROW_CHUNK], dtype=np.float64) - c
        if b is not None:
            r = r @ b
        u = (r * r * p).sum(axis=1)
        if extra_u is not None:
            u = u + extra_u[i : i + ROW_CHUNK]
        out[i : i + ROW_CHUNK] = kernel_of(u, kernel, radius_u)
    return out


def region_weights(
    x: Any,
    region: RegionKernel,
    basis: Any | None = None,
    labels: Any | None = None,
    predictions: Any | None = None,
) -> np.ndarray:
    """`weights` of one region (spotlight/records.py: a `RegionRecord`, or its `RegionKernel` part).

    `basis`: the job's PCA basis (d x k), used by regions found with `pca_components`
    (``precision_space: "pca"``) and ignored by others, so one job's basis can be passed for all of
    its regions; a PCA region without it raises RegionSpaceError. A region with an ``evidence``
    term needs the rows' `labels` (and `predictions`, for the kinds that use them): without them
    it raises RegionSpaceError rather than answer wrongly."""
    if region.precision_space != "pca":
        basis = None
    elif basis is None:
        raise RegionSpaceError(
            "this region was found with pca_components: its distance is measured along the job's principal "
            "axes, which centre and precision do not include; give the job's basis (the client's "
            "Job.basis(), GET /v1/jobs/{id}/basis)"
        )
    elif region.pca_components is not None and np.ndim(basis) == 2 and np.shape(basis)[1] != region.pca_components:
        raise ValueError(
            f"basis has {np.shape(basis)[1]} columns; this region was found on {region.pca_components} components"
        )
    extra_u = None
    if region.evidence is not None:
        n = int(np.shape(x)[0]) if np.ndim(x) == 2 else 1
        try:
            extra_u = evidence_terms.term(region.evidence.model_dump(), labels, predictions, n)
        except evidence_terms.EvidenceMissing as exc:
            raise RegionSpaceError(
                f"this region was found with labels as evidence (evidence_weight > 0): {exc} to be weighed; "
                "give them with the rows, or search again with evidence_weight 0 for regions of embedding space alone"
            ) from None
    return weights(x, region.center, region.precision, region.kernel, basis, extra_u, region.radius_u)
