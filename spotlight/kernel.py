"""A region's kernel weight of any embedding: the formula the engine optimises, in numpy, in one place.

A region (worker/engine/result.py's `Region.to_dict()`, as `GET /v1/jobs/{id}/regions` returns it)
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
its principal subspace, whose basis is not part of the region: such regions need `basis`
(d x k, orthonormal columns), else weights() refuses rather than answer wrongly.

Used by the client (`Region.weights(X)`), the API's score route and a test against the engine.
numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

KERNELS = ("flat", "gaussian", "ball")
ROW_CHUNK = 65536


class RegionSpaceError(ValueError):
    """The region's distance is measured in a space this call was not given (a PCA basis)."""


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
    radius_u: float | None = None,
) -> np.ndarray:
    """k(x) for every row of x (n x d), float64 in [0, 1]; rows are processed in chunks."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    c = np.asarray(center, dtype=np.float64).ravel()
    if x.ndim != 2 or x.shape[1] != c.shape[0]:
        raise ValueError(f"embeddings must be n x {c.shape[0]} (the region's dimension), got shape {list(x.shape)}")
    p = np.asarray(precision, dtype=np.float64)
    b = None if basis is None else np.asarray(basis, dtype=np.float64)
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
        out[i : i + ROW_CHUNK] = kernel_of((r * r * p).sum(axis=1), kernel, radius_u)
    return out


def region_weights(x: Any, region: Mapping[str, Any], basis: Any | None = None) -> np.ndarray:
    """`weights` of one region as the API returns it (a dict with center, precision, kernel)."""
    if region.get("precision_space") == "pca" and basis is None:
        raise RegionSpaceError(
            "this region was found with pca_components: its distance is measured in a principal subspace "
            "whose basis the results do not include, so its weights cannot be recomputed from centre and "
            "precision; use the job's stored weights (GET /v1/jobs/{id}/weights) instead"
        )
    radius = region.get("radius_u")
    return weights(
        x,
        region["center"],
        region["precision"],
        str(region["kernel"]),
        basis,
        None if radius is None else float(radius),
    )
