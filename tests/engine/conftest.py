"""Small synthetic problems shared by the engine tests (kept small: the suite runs on 2 shared cores)."""

from __future__ import annotations

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


@pytest.fixture
def planted():
    return planted_problem()
