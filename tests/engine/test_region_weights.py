"""spotlight/kernel.py (what the client's Region.weights and the score route run) equals the engine's weights."""

from __future__ import annotations

import numpy as np
import pytest

from spotlight import kernel
from tests.engine.conftest import planted_problem
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
        mine = kernel.region_weights(x, region.to_dict())
        assert mine.shape == (600,)
        assert np.max(np.abs(mine - result.weights[:, k])) < 2e-4
        assert (mine > 0.01).sum() > 0  # a region with members, not two arrays of zeros


def test_pca_regions_refuse_rather_than_answer_wrongly() -> None:
    x, loss, _ = planted_problem(n=300, d=8)
    result = search(
        x,
        loss,
        {"n_spotlights": 1, "steps": 20, "restarts": 1, "spotlight_size": 0.05, "pca_components": 3, "device": "cpu"},
    )
    with pytest.raises(kernel.RegionSpaceError, match="pca_components"):
        kernel.region_weights(x, result.regions[0].to_dict())


def test_dimension_mismatch_is_a_clear_error() -> None:
    region = {"center": [0.0, 0.0], "precision": 1.0, "kernel": "flat"}
    with pytest.raises(ValueError, match="n x 2"):
        kernel.region_weights(np.zeros((3, 5)), region)
    assert kernel.region_weights(np.zeros((1, 2)), region).tolist() == [1.0]
