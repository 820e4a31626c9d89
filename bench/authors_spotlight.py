"""A small re-implementation of the authors' spotlight optimiser, written from the paper's description.

Used only by `bench.quality` as the baseline this project must beat. It keeps every choice of the
published setup: the flat kernel max(0, 1 - tau * ||x - mu||^2) with a spherical precision, mu
started at the origin and tau at 1e-4, Adam with learning rate 1e-2, the barrier slack on a geometric
schedule from (n - S) to 0.05 S over 5000 steps, learning-rate halving after 10 steps without
improvement (the scheduler restarting its patience after each halving), the *final* iterate returned,
and later regions searched on losses scaled by (1 - k / max k). Distances are computed directly
as sum((x - mu)^2) * tau, which is what the authors' tau * identity precision matrix computes.

No guard against an empty support is added: when every kernel value is 0 the weights are 0/0 = NaN,
exactly as in the original, and the caller counts such outcomes.
"""

from __future__ import annotations

import numpy as np
import torch


def run_region(
    x: torch.Tensor,
    losses: torch.Tensor,
    size: float,
    steps: int = 5000,
    lr: float = 1e-2,
    barrier_scale: float = 1.0,
    patience: int = 10,
) -> torch.Tensor:
    """One region; returns the unnormalised kernel values of the final iterate (may contain NaN)."""
    n, d = x.shape
    mu = torch.zeros(d, dtype=x.dtype, requires_grad=True)
    log_tau = torch.tensor(float(np.log(1e-4)), dtype=x.dtype, requires_grad=True)
    opt = torch.optim.Adam([mu, log_tau], lr=lr)
    slacks = np.geomspace(n - size, 0.05 * size, steps)
    best, wait = float("inf"), 0
    for t in range(steps):
        opt.zero_grad()
        k = torch.clamp(1 - torch.exp(log_tau) * ((x - mu) ** 2).sum(1), min=0)
        total = k.sum()
        objective = (k / total) @ losses
        if total < size + slacks[t]:
            objective = objective - barrier_scale * (total - (size + slacks[t])) ** 2 / slacks[t] ** 2
        (-objective).backward()
        opt.step()
        value = -float(objective.detach())
        if value < best * (1 - 1e-4):  # torch's ReduceLROnPlateau, mode 'min', threshold 1e-4 'rel'
            best, wait = value, 0
        else:
            wait += 1
            if wait > patience:
                for group in opt.param_groups:
                    group["lr"] *= 0.5
                best, wait = float("inf"), 0  # the authors' ResetOnPlateau
    with torch.no_grad():
        return torch.clamp(1 - torch.exp(log_tau) * ((x - mu) ** 2).sum(1), min=0)


def run(
    embeddings: np.ndarray, losses: np.ndarray, size: float, n_regions: int, steps: int = 5000
) -> tuple[np.ndarray, int]:
    """n_regions regions in sequence; returns (n x n_regions weights normalised like the authors', NaN count)."""
    torch.manual_seed(0)
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    y = torch.from_numpy(np.asarray(losses, dtype=np.float32)).clone()
    out = np.zeros((x.shape[0], n_regions), dtype=np.float32)
    nan_regions = 0
    for j in range(n_regions):
        k = run_region(x, y, size, steps=steps)
        normalised = (k / k.sum()).numpy()  # the authors' `weights`: NaN when the support is empty
        if not np.all(np.isfinite(normalised)):
            nan_regions += 1
        out[:, j] = normalised
        k_max = k.max()
        y = y * (1 - k / k_max)  # NaN propagates into later regions, as in the original
    return out, nan_regions
