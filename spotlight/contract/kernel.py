"""The kernels, in one place: each kernel's name, formula (numpy), member rule and support bound
(`SPECS`), and a region's kernel weight of any embedding.

Adding a kernel: one `KernelSpec` line here (params, the member rule, the score route and the
client read `SPECS`), plus its search variant in the engine (worker/engine/variants/, its own file and
its name in `VARIANTS`; docs/engine.md, "Adding a kernel").

A region (spotlight/contract/records.py's `RegionRecord`, as `GET /v1/jobs/{id}/regions` returns it)
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
label/prediction evidence (`evidence_weight`, spotlight/contract/evidence.py) adds a term to u that needs
the rows' labels (and predictions): such regions carry an ``evidence`` object, and
`region_weights` refuses rows given without what it needs.

Used by the client (`Region.weights(X)`), the API's score route, the member rule
(spotlight/contract/members.py), SearchParams (spotlight/contract/params.py), the engine (its support bounds) and a test
against the engine. numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from spotlight.contract import evidence as evidence_terms
from spotlight.contract.records import RegionKernel

ROW_CHUNK = 65536

# How a region's member set is drawn from its weights (spotlight/contract/members.py): 'support' = every row
# of weight > 0; 'core' = the rows of weight 1; 'mass' = the heaviest rows counting as many examples
# as the region does.
MemberRule = Literal["support", "core", "mass"]


def _flat(u: np.ndarray, radius_u: float | None) -> np.ndarray:
    return np.maximum(0.0, 1.0 - u)


def _gaussian(u: np.ndarray, radius_u: float | None) -> np.ndarray:
    return np.exp(-0.5 * u)


def _ball(u: np.ndarray, radius_u: float | None) -> np.ndarray:
    if radius_u is None or not np.isfinite(radius_u):
        raise ValueError("a 'ball' region needs its radius_u (the core's edge as a value of u)")
    return np.exp(-0.5 * np.maximum(0.0, u - float(radius_u)))


@dataclass(frozen=True)
class KernelSpec:
    """One kernel, everything about it outside the engine's optimiser: its name, its weight of a
    scaled squared distance u (numpy), its member rule and its support bound.

    `max_min_u`: the engine's projection bound on a restart's smallest u (worker/engine/core.py `support_rescale`, through `Variant.support`):
    keeping min_i u_i at or below it keeps at least one example inside the kernel (flat: k >= 0.1;
    gaussian: k >= e^-20, far from float32 underflow), so a region's total weight never reaches 0,
    its weighted mean is never 0/0 and the barrier always has a gradient. The gaussian bound is loose
    on purpose: in high dimension even the nearest example of a tight gaussian region sits at u >> 1.
    None for a kernel that is 1 on a core of S rows: feasible by construction, it needs neither the
    barrier nor the support projection.
    """

    name: str
    weight: Callable[[np.ndarray, float | None], np.ndarray]
    members: MemberRule
    max_min_u: float | None


# The kernels a search runs, each in one line; SearchParams' `kernel` accepts these and "auto".
SPECS: dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (
        KernelSpec("flat", _flat, members="support", max_min_u=0.9),  # the published paper's
        KernelSpec("gaussian", _gaussian, members="mass", max_min_u=40.0),
        KernelSpec("ball", _ball, members="core", max_min_u=None),
    )
}
KERNELS = tuple(SPECS)
AUTO = "auto"  # the engine picks 'ball' or 'gaussian' from the data (worker/engine/search.py resolve_auto)
KERNEL_CHOICES = (AUTO, *KERNELS)
SUPPORT_KERNELS = frozenset(name for name, spec in SPECS.items() if spec.members == "support")
CORE_KERNELS = frozenset(name for name, spec in SPECS.items() if spec.members == "core")


class RegionSpaceError(ValueError):
    """The region's distance is measured in a space this call was not given (a PCA basis, labels)."""


def kernel_of(u: np.ndarray, kernel: str, radius_u: float | None = None) -> np.ndarray:
    """Kernel value of scaled squared distances u >= 0 (`radius_u`: the ball's core, needed for 'ball')."""
    spec = SPECS.get(kernel)
    if spec is None:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")
    return spec.weight(u, radius_u)


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
    """`weights` of one region (spotlight/contract/records.py: a `RegionRecord`, or its `RegionKernel` part).

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
