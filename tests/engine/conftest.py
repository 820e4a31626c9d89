"""Small synthetic problems shared by the engine tests (kept small: the suite runs on 2 shared cores)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


def planted_problem(n: int = 2000, d: int = 12, frac: float = 0.04, seed: int = 0):
    """Gaussian cloud whose examples nearest to one anchor (a ball holding `frac` of them) have high loss."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    dist = np.linalg.norm(x - x[0], axis=1)
    planted = dist <= np.quantile(dist, frac)
    loss = (rng.exponential(0.5, size=n) + 2.0 * planted).astype(np.float32)
    return x, loss, planted


def float32_tolerance(region: Any) -> float:
    """How far spotlight/contract/kernel.py's float64 weights may sit from the engine's, by float32 rounding alone.

    The engine rounds z to float32 and projects it on a float32 copy of the PCA basis, so its u
    carries a relative error of a few float32 epsilons (at most 8 eps assumed; 1-2 eps measured). A
    kernel's weight moves by |dk/du| * du: <= du for the flat kernel (u < 1 where k > 0), and
    <= e^(-(u - R)/2) * 8 eps * u / 2 <= 4 eps (R + 2) for the gaussian (R = 0) and the ball (R =
    radius_u: a core far out gives large u near its edge). One eps more for weights.npy's float32.
    """
    eps = float(np.finfo(np.float32).eps)
    radius = region.get("radius_u") if isinstance(region, dict) else region.radius_u  # JSON or a typed record
    return eps * (4.0 * (float(radius or 0.0) + 2.0) + 1.0)


@pytest.fixture
def planted():
    return planted_problem()
