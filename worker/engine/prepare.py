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

ArrayLike = Any  # np.ndarray | torch.Tensor (anything np.asarray accepts)


def resolve_device(name: str) -> torch.device:
    """'auto' -> the first CUDA device when torch sees one, else the CPU. CUDA is touched only here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def _rows(a: ArrayLike, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Rows [start, stop) of a numpy array (memory-mapped or not) or tensor, as float64 on `device`.

    float32/float64 rows travel as they are and are widened on the device (half the transfer of
    widening on the host); other dtypes are converted to float64 on the host first.
    """
    if isinstance(a, torch.Tensor):
        return a[start:stop].detach().to(device=device).to(torch.float64)
    rows = np.asarray(a[start:stop])
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
class Frame:
    """How standardised coordinates z map back to the caller's: x = mean + scale * (basis @ z).

    `basis` is None without PCA (identity); otherwise d x k with orthonormal columns.
    """

    mean: np.ndarray  # d, float64
    scale: float
    basis: np.ndarray | None

    def center(self, z: np.ndarray) -> np.ndarray:
        v = z if self.basis is None else self.basis @ z
        return self.mean + self.scale * v

    def precision(self, tau: np.ndarray | float) -> np.ndarray | float:
        """Precision per unit of squared caller distance (measured inside the PCA subspace if any)."""
        return np.asarray(tau, dtype=np.float64) / self.scale**2


def standardise(
    embeddings: ArrayLike, weights: np.ndarray, device: torch.device, chunk: int
) -> tuple[torch.Tensor, Frame]:
    """(X - m) / s as float32 on `device`, with m and s computed in float64 over row chunks.

    s = sqrt(sum_i w_i ||x_i - m||^2 / (d sum_i w_i)); s = 1 when every x is the same point.
    Three passes over the input (mean, scale, copy); never holds more than one float32 n x d copy
    plus one float64 chunk.
    """
    n, d = embeddings.shape
    w = torch.from_numpy(weights).to(device)
    mean = torch.zeros(d, dtype=torch.float64, device=device)
    for i in range(0, n, chunk):
        rows = _rows(embeddings, i, i + chunk, device)
        if not torch.isfinite(rows).all():
            raise ValueError("embeddings contain NaN or inf")
        mean += w[i : i + chunk] @ rows
    mean /= w.sum()
    sq = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(0, n, chunk):
        rows = _rows(embeddings, i, i + chunk, device) - mean
        sq += w[i : i + chunk] @ (rows * rows).sum(1)
    scale = float(torch.sqrt(sq / (d * w.sum())))
    if not np.isfinite(scale) or scale <= 1e-10 * float(mean.abs().max()) or scale < 1e-300:
        scale = 1.0  # every embedding is (numerically) the same point: nothing to standardise
    z = torch.empty(n, d, dtype=torch.float32, device=device)
    for i in range(0, n, chunk):
        # Rounded to float32 once, from float64: translated or rescaled copies of the same data give
        # the same z up to float64 rounding of m and s, far below float32 resolution.
        z[i : i + chunk] = (_rows(embeddings, i, i + chunk, device) - mean) / scale
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
