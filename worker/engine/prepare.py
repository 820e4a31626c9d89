"""Turning the caller's arrays into what the optimiser works on, and regions back into the caller's units.

The search runs on standardised embeddings z = (x - m) / s (m the weighted mean, s one scalar: the
root-mean-square deviation per dimension), optionally projected on principal components and
rescaled the same way. One scalar scale keeps spherical regions spherical, and makes the result
independent of the embeddings' units: translating or scaling every x changes m and s, not z.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spotlight.contract import evidence as evidence_columns

ArrayLike = Any  # np.ndarray | torch.Tensor (anything np.asarray accepts)


def resolve_device(name: str) -> torch.device:
    """'auto' -> the first CUDA device when torch sees one, else the CPU. CUDA is touched only here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def _rows(a: ArrayLike, start: int, stop: int, device: torch.device, order: np.ndarray | None = None) -> torch.Tensor:
    """Rows [start, stop) of a numpy array (memory-mapped or not) or tensor, as float64 on `device`;
    with `order`, the rows order[start:stop].

    float32/float64 rows travel as they are and are widened on the device (half the transfer of
    widening on the host); other dtypes are converted to float64 on the host first.
    """
    pick: slice | np.ndarray = slice(start, stop) if order is None else order[start:stop]
    if isinstance(a, torch.Tensor):
        index = pick if isinstance(pick, slice) else torch.from_numpy(pick).to(a.device)
        return a[index].detach().to(device=device).to(torch.float64)
    rows = np.asarray(a[pick])
    if rows.dtype not in (np.float32, np.float64):
        rows = rows.astype(np.float64)
    if not rows.flags.writeable:  # a read-only memory map: torch wants writable memory, copy the chunk
        rows = np.array(rows, copy=True)
    return torch.from_numpy(np.ascontiguousarray(rows)).to(device).to(torch.float64)


def as_vector(a: ArrayLike | None, n: int, name: str, dtype: Any = np.float64) -> np.ndarray | None:
    """A length-n 1-D numpy vector, or a ValueError that says what is wrong."""
    if a is None:
        return None
    v = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    v = v.reshape(-1) if v.ndim == 2 and 1 in v.shape else v
    if v.ndim != 1 or v.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(np.shape(a))}")
    if np.issubdtype(np.dtype(dtype), np.integer):
        if not np.issubdtype(v.dtype, np.integer):
            if not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
                raise ValueError(f"{name} must be integers")
        v = v.astype(np.int64)
        if v.size and v.min() < 0:
            raise ValueError(f"{name} must be non-negative integers")
        return v
    v = v.astype(dtype)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf")
    return v


def losses_from_logits(logits: ArrayLike, labels: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy of integer labels under the logits (computed stably, float64)."""
    lg = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    if lg.ndim != 2 or lg.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must have shape ({labels.shape[0]}, classes), got {lg.shape}")
    if labels.size and labels.max() >= lg.shape[1]:
        raise ValueError("a label is >= the number of logit columns")
    t = torch.from_numpy(np.asarray(lg, dtype=np.float64))
    if not torch.isfinite(t).all():
        raise ValueError("logits contain NaN or inf")
    return torch.nn.functional.cross_entropy(t, torch.from_numpy(labels), reduction="none").numpy()


@dataclass
class Evidence:
    """Label/prediction columns appended after the embedding coordinates (spotlight/contract/evidence.py).

    In z they are `scale` * (column - `mean`): a one-hot 1 is worth `scale` standardised units, with
    scale = evidence_weight * sqrt(k) (k embedding coordinates searched), so two rows that differ in
    one label are evidence_weight^2 times as far apart as two typical rows of the cloud
    (E ||z_i - z_j||^2 = 2k; a label difference adds 2 scale^2 = 2 k weight^2).
    """

    kind: str
    weight: float
    n_labels: int
    n_predictions: int
    scale: float
    mean: np.ndarray  # per evidence column, the weighted mean subtracted (keeps z centred)

    @property
    def width(self) -> int:
        return int(self.mean.shape[0])

    def describe(self, mu_tail: np.ndarray, tau_tail: np.ndarray) -> dict[str, Any]:
        """The region's `evidence` object: centre and precision per column in one-hot units."""
        precision = np.asarray(tau_tail, dtype=np.float64).ravel() * self.scale**2
        return {
            "kind": self.kind,
            "weight": self.weight,
            "n_labels": self.n_labels,
            "n_predictions": self.n_predictions,
            "center": (self.mean + np.asarray(mu_tail, dtype=np.float64) / self.scale).tolist(),
            "precision": float(precision[0]) if precision.size == 1 else precision.tolist(),
        }


@dataclass
class Frame:
    """How standardised coordinates z map back to the caller's: x = mean + scale * (basis @ z).

    `basis` is None without PCA (identity); otherwise d x k with orthonormal columns. With
    `evidence`, z ends with `evidence.width` label/prediction columns that are not embedding
    coordinates: `center` drops them (`Evidence.describe` reports them).
    """

    mean: np.ndarray  # d, float64
    scale: float
    basis: np.ndarray | None
    evidence: Evidence | None = None

    @property
    def tail(self) -> int:
        """How many trailing coordinates of z are evidence columns."""
        return 0 if self.evidence is None else self.evidence.width

    def center(self, z: np.ndarray) -> np.ndarray:
        z = z[: z.shape[0] - self.tail]
        v = z if self.basis is None else self.basis @ z
        return self.mean + self.scale * v

    def precision(self, tau: np.ndarray | float) -> np.ndarray | float:
        """Precision per unit of squared caller distance (measured inside the PCA subspace if any).

        A diagonal tau's evidence entries are dropped (`region_extra` reports them)."""
        t = np.asarray(tau, dtype=np.float64)
        if t.ndim == 1 and t.size > 1 and self.tail:
            t = t[: t.size - self.tail]
        return t / self.scale**2

    def region_extra(self, mu: np.ndarray, tau: np.ndarray) -> dict[str, Any]:
        """What a region carries besides centre and precision: its PCA space, its evidence term."""
        extra: dict[str, Any] = {}
        if self.basis is not None:
            extra = {"pca_components": int(self.basis.shape[1]), "precision_space": "pca"}
        if self.evidence is not None:
            tail = self.evidence.width
            tau_tail = tau if tau.size == 1 else tau[tau.size - tail :]
            extra["evidence"] = self.evidence.describe(mu[mu.size - tail :], tau_tail)
        return extra


def standardise(
    embeddings: ArrayLike, weights: np.ndarray, device: torch.device, chunk: int, order: np.ndarray | None = None
) -> tuple[torch.Tensor, Frame]:
    """(X - m) / s as float32 on `device`, with m and s computed in float64 over row chunks; with
    `order`, row i of the result is row order[i] of X (`weights` are then given in that order).

    s = sqrt(sum_i w_i ||x_i - m||^2 / (d sum_i w_i)); s = 1 when every x is the same point.
    Three passes over the input (mean, scale, copy); never holds more than one float32 n x d copy
    plus one float64 chunk.
    """
    n, d = embeddings.shape
    w = torch.from_numpy(weights).to(device)
    mean = torch.zeros(d, dtype=torch.float64, device=device)
    for i in range(0, n, chunk):
        rows = _rows(embeddings, i, i + chunk, device, order)
        if not torch.isfinite(rows).all():
            raise ValueError("embeddings contain NaN or inf")
        mean += w[i : i + chunk] @ rows
    mean /= w.sum()
    sq = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(0, n, chunk):
        rows = _rows(embeddings, i, i + chunk, device, order) - mean
        sq += w[i : i + chunk] @ (rows * rows).sum(1)
    scale = float(torch.sqrt(sq / (d * w.sum())))
    if not np.isfinite(scale) or scale <= 1e-10 * float(mean.abs().max()) or scale < 1e-300:
        scale = 1.0  # every embedding is (numerically) the same point: nothing to standardise
    z = torch.empty(n, d, dtype=torch.float32, device=device)
    for i in range(0, n, chunk):
        # Rounded to float32 once, from float64: translated or rescaled copies of the same data give
        # the same z up to float64 rounding of m and s, far below float32 resolution.
        z[i : i + chunk] = (_rows(embeddings, i, i + chunk, device, order) - mean) / scale
    return z, Frame(mean=mean.cpu().numpy(), scale=scale, basis=None)


def project_pca(
    z: torch.Tensor, weights: np.ndarray, frame: Frame, components: int, chunk: int
) -> tuple[torch.Tensor, Frame]:
    """Project standardised z on its top `components` principal axes (weighted), then rescale.

    The covariance is d x d, built once (chunked, float64) and eigendecomposed once: a one-off
    O(n d^2) cost outside the optimisation loop. Component signs are fixed (largest entry positive)
    so the projection is deterministic.
    """
    n, d = z.shape
    if components >= d:
        return z, frame
    w = torch.from_numpy(weights).to(z.device)
    cov = torch.zeros(d, d, dtype=torch.float64, device=z.device)
    for i in range(0, n, chunk):
        rows = z[i : i + chunk].double()
        cov += rows.t() @ (rows * w[i : i + chunk, None])
    cov /= w.sum()
    _, vecs = torch.linalg.eigh(cov)
    basis = vecs[:, -components:].flip(1)
    signs = torch.sign(basis.gather(0, basis.abs().argmax(0, keepdim=True)))
    basis = basis * torch.where(signs == 0, torch.ones_like(signs), signs)
    proj = z @ basis.to(torch.float32)
    sq = float((w.to(torch.float32) @ (proj * proj).sum(1)).double() / (components * w.sum()))
    scale = float(np.sqrt(sq)) if sq > 0 and np.isfinite(sq) else 1.0
    proj /= scale
    return proj, Frame(mean=frame.mean, scale=frame.scale * scale, basis=basis.cpu().numpy() * 1.0)


def add_evidence(
    z: torch.Tensor,
    frame: Frame,
    labels: np.ndarray | None,
    predictions: np.ndarray | None,
    weights: np.ndarray,
    kind: str,
    weight: float,
) -> tuple[torch.Tensor, Frame]:
    """z with label/prediction columns appended (spotlight/contract/evidence.py), or z unchanged.

    Nothing is appended when `weight` is 0, the job lacks what `kind` needs (labels, and for
    'labels_predictions'/'mismatch' predictions too), or the codes need more than
    `evidence.MAX_COLUMNS` columns: evidence is used when there is some, of a readable width. The
    columns are centred (weighted) and scaled as `Evidence` says; a copy of z with c more columns
    is made (c = classes of labels + classes of predictions, or 1 for 'mismatch').
    """
    if not evidence_columns.applies(kind, weight, labels is not None, predictions is not None):
        return z, frame
    n_labels, n_predictions = evidence_columns.widths(kind, labels, predictions)
    if not evidence_columns.usable(n_labels, n_predictions):
        return z, frame
    cols = evidence_columns.columns(kind, labels, predictions, n_labels, n_predictions)
    mean = np.average(cols, axis=0, weights=weights)
    k = z.shape[1]
    scale = float(weight * np.sqrt(k))
    cols -= mean.astype(np.float32)
    cols *= np.float32(scale)
    tail = torch.from_numpy(cols).to(z.device)
    ev = Evidence(
        kind=kind, weight=float(weight), n_labels=n_labels, n_predictions=n_predictions, scale=scale, mean=mean
    )
    return torch.cat([z, tail], dim=1), Frame(mean=frame.mean, scale=frame.scale, basis=frame.basis, evidence=ev)


# `local_dimension`: reference rows, and the two shares of rows whose distance quantiles bracket a
# reference row's spotlight-sized neighbourhood (DIMENSION_OUTER: the default spotlight size).
DIMENSION_REFERENCES = 32
DIMENSION_INNER = 0.005
DIMENSION_OUTER = 0.02
# Past this many rows of positive weight, the distances are measured to a sample of this many rows.
# The 0.5 % quantile of N draws sits at rank 0.005 N +- sqrt(0.005 * 0.995 * N): at N = 65 536 that
# is 328 +- 18 rows (5.5 %), which moves one reference row's k by about 4 % (the 2 % quantile's
# error, 2.7 %, adds less); the median over 32 references by about 1 %. The full computation's cost
# (an n x 32 float64 table, 32 sorts of n numbers) no longer grows with n.
DIMENSION_SAMPLE = 65_536


def local_dimension(z: torch.Tensor, weights: np.ndarray, chunk: int, sample: int = DIMENSION_SAMPLE) -> float:
    """The intrinsic dimension of a row's spotlight-sized neighbourhood, k, from a few reference rows.

    For each of DIMENSION_REFERENCES rows (drawn with a fixed seed among rows of positive weight):
    q_a and q_b the weighted 0.5 % and 2 % quantiles of its squared distances to the other rows; with
    k dimensions around the row, the weight within squared distance D grows like D^(k/2), so
    k = 2 ln(0.02 / 0.005) / ln(q_b / q_a); the median over the references. Why this: the kernels
    differ on whether a spotlight-sized neighbourhood has a sharp edge. Where k is high, the rows
    just outside it are barely farther than the rows inside (a gaussian that must count S rows
    spreads over many times more); where k is low (a manifold, as in a trained model's embeddings),
    a gaussian ranks the rest of a slice larger than the region. Measured inside the neighbourhood,
    it sees the dimension of a cluster whatever the clusters' spacing (ten 256-d gaussian classes:
    k ~ 43 whether their centres are 0.6 or 2 standard deviations apart), where the median distance
    of the whole cloud mostly measures the spacing. Quantiles, so that a few far outliers do not
    decide it. z is the standardised embeddings (after PCA, before evidence columns). A reference row
    counts 0 when its two quantiles coincide: 0.5 % of the weight on its own point (duplicates), or
    too few rows to tell them apart (under ~50), so such data keeps the gaussian.

    Cost: with at most `sample` rows of positive weight, D to every row (one product of z with the
    reference rows, O(n d), and a sort of n numbers per reference). With more, D to `sample` rows
    drawn with a fixed seed, with replacement, each with probability proportional to its weight (so
    a row of weight 0 is never drawn, and the draws' plain quantiles estimate the weighted ones):
    O(sample d) whatever n (DIMENSION_SAMPLE says how close).
    """
    active = np.flatnonzero(weights > 0)
    if active.size < 2:
        return 0.0
    rng = np.random.default_rng(0)
    refs = np.sort(rng.choice(active, size=min(DIMENSION_REFERENCES, active.size), replace=False))
    rows_idx, w = measured_rows(weights, active, rng, sample)
    anchors = z[torch.from_numpy(refs).to(z.device)].double()  # r x d
    anchor_sq = (anchors * anchors).sum(1)
    dist = torch.empty(rows_idx.size, refs.size, dtype=torch.float64, device=z.device)
    for i in range(0, rows_idx.size, chunk):
        rows = z[torch.from_numpy(rows_idx[i : i + chunk]).to(z.device)].double()
        part = (rows * rows).sum(1)[:, None] + anchor_sq[None, :] - 2.0 * rows @ anchors.t()
        dist[i : i + chunk] = part.clamp_(min=0.0)
    d_np = dist.cpu().numpy()
    values = []
    for j in range(refs.size):
        w_j = np.where(rows_idx == refs[j], 0.0, w)  # a row is not its own neighbour
        order = np.argsort(d_np[:, j], kind="stable")
        cum = np.cumsum(w_j[order])
        sorted_d = d_np[order, j]
        inner = sorted_d[min(int(np.searchsorted(cum, DIMENSION_INNER * cum[-1])), sorted_d.size - 1)]
        outer = sorted_d[min(int(np.searchsorted(cum, DIMENSION_OUTER * cum[-1])), sorted_d.size - 1)]
        if outer > inner > 0.0:
            values.append(2.0 * np.log(DIMENSION_OUTER / DIMENSION_INNER) / np.log(outer / inner))
        else:
            values.append(0.0)
    return float(np.median(values))


def measured_rows(
    weights: np.ndarray, active: np.ndarray, rng: np.random.Generator, sample: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, their weights in the quantiles) that `local_dimension` measures distances to: every row of
    positive weight (`active`) with its weight, or past `sample` of them, `sample` draws (sorted) with
    probability proportional to weight, each counting 1."""
    if active.size <= sample:
        return active, weights[active]
    w_active = weights[active]
    drawn = rng.choice(active, size=sample, replace=True, p=w_active / w_active.sum())
    return np.sort(drawn), np.ones(sample)
