"""The passes over X (`core.EmbeddingMatrix`): one product layout whatever the caller hands in.

Why it matters: BLAS takes X P with P contiguous (d x R) on a path 2.5-3.5x slower than with P^T
contiguous (R x d) at R = 4 (docs/engine.md, "The forward product's layout"), and the two paths round
differently. The search's centres are d x R blocks, so without the matrix choosing the layout itself a
step would pay the slow path, and the same centres would give other bits from another call site.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.engine import core


def _matrix(n: int = 1000, d: int = 128) -> core.EmbeddingMatrix:
    g = torch.Generator().manual_seed(0)
    return core.EmbeddingMatrix(torch.randn(n, d, generator=g))


@pytest.mark.parametrize("restarts", [1, 2, 4])
def test_forward_products_do_not_depend_on_the_operands_layout(restarts: int) -> None:
    data = _matrix()
    g = torch.Generator().manual_seed(1)
    point = torch.randn(data.shape[1] + 3, restarts, generator=g)  # centres as the step loop holds them
    mu = point[: data.shape[1]]
    as_rows = mu.t().contiguous()
    assert torch.equal(data.norms_minus_twice(mu.t()), data.norms_minus_twice(as_rows))
    assert torch.equal(data.project(mu.t()), data.project(as_rows))


def test_forward_products_are_the_distances_they_stand_for() -> None:
    data = _matrix(300, 24)
    mu = torch.randn(24, 4, generator=torch.Generator().manual_seed(2))
    x = data.x.double().numpy()
    m = mu.double().numpy()
    want = (x * x).sum(1)[None, :] - 2.0 * (x @ m).T
    got = data.norms_minus_twice(mu.t()).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(data.project(mu.t()).double().numpy(), (x @ m).T, rtol=1e-5, atol=1e-3)
