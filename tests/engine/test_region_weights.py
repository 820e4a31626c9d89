"""spotlight/contract/kernel.py (what the client's Region.weights and the score route run) equals the engine's weights."""

from __future__ import annotations

import numpy as np
import pytest

from spotlight.contract import kernel
from spotlight.contract.records import RegionKernel
from tests.engine.conftest import float32_tolerance, planted_problem
from worker.engine import search


@pytest.mark.parametrize("kernel_name", ["flat", "gaussian"])
@pytest.mark.parametrize("shape", ["spherical", "diagonal"])
def test_numpy_formula_gives_the_engines_weights(kernel_name: str, shape: str) -> None:
    x, loss, _ = planted_problem(n=600, d=6)
    x = x * 3.0 + 5.0  # caller units differ from the engine's standardised ones
    result = search(
        x,
        loss,
        {
            "n_spotlights": 2,
            "steps": 40,
            "restarts": 2,
            "spotlight_size": 0.05,
            "kernel": kernel_name,
            "shape": shape,
            "device": "cpu",
        },
    )
    for k, region in enumerate(result.regions):
        mine = kernel.region_weights(x, region.kernel_record())
        assert mine.shape == (600,)
        assert np.max(np.abs(mine - result.weights[:, k])) < 2e-4
        assert (mine > 0.01).sum() > 0  # a region with members, not two arrays of zeros


@pytest.mark.parametrize(
    ("kernel_name", "shape"),
    [(k, s) for k in ("flat", "gaussian", "ball") for s in ("spherical", "diagonal") if (k, s) != ("ball", "diagonal")],
)
def test_pca_regions_with_the_searchs_basis_give_the_engines_weights(kernel_name: str, shape: str) -> None:
    x, loss, _ = planted_problem(n=400, d=8)
    x = x * 3.0 + 5.0
    params = {"n_spotlights": 2, "steps": 30, "restarts": 1, "spotlight_size": 0.05, "pca_components": 3}
    result = search(x, loss, {**params, "kernel": kernel_name, "shape": shape, "device": "cpu"})
    assert result.basis is not None and result.basis.shape == (8, 3)
    assert np.allclose(result.basis.T @ result.basis, np.eye(3), atol=1e-10)  # orthonormal columns
    for k, region in enumerate(result.regions):
        stored = region.kernel_record()
        assert stored.precision_space == "pca"
        mine = kernel.region_weights(x, stored, result.basis)
        assert np.max(np.abs(mine - result.weights[:, k])) <= float32_tolerance(stored)
        assert (mine > 0.01).sum() > 0
        with pytest.raises(kernel.RegionSpaceError, match="pca_components"):
            kernel.region_weights(x, stored)  # without the basis: refused, never a wrong answer
        with pytest.raises(ValueError, match="3 components"):
            kernel.region_weights(x, stored, result.basis[:, :2])


def test_a_search_without_pca_carries_no_basis() -> None:
    x, loss, _ = planted_problem(n=200, d=4)
    result = search(x, loss, {"n_spotlights": 1, "steps": 10, "restarts": 1, "device": "cpu"})
    assert result.basis is None and "precision_space" not in result.regions[0].to_dict()


def test_dimension_mismatch_is_a_clear_error() -> None:
    region = RegionKernel(center=[0.0, 0.0], precision=1.0, kernel="flat", shape="spherical", objective="max_loss")
    with pytest.raises(ValueError, match="n x 2"):
        kernel.region_weights(np.zeros((3, 5)), region)
    assert kernel.region_weights(np.zeros((1, 2)), region).tolist() == [1.0]
