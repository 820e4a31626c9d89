"""kernel="auto" (the default): the gaussian on low-dimensional data, the ball where squared distances
concentrate, decided by `prepare.concentration` of the standardised embeddings (docs/engine.md).

Asserted: the kernel each region records, that the auto search is the explicit one's (same weights),
and for the high-dimension cloud the planted slice as the region's core (what the objective defines).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spotlight.members import member_set
from tests.engine.conftest import planted_problem
from tests.engine.test_ball_kernel import highdim_slice
from worker.engine import search
from worker.engine.prepare import concentration
from worker.engine.search import AUTO_BALL_ABOVE

FAST = {"device": "cpu", "steps": 300, "n_spotlights": 2}


def _c(x: np.ndarray, w: np.ndarray | None = None) -> float:
    z = torch.from_numpy(x - x.mean(0))
    return concentration(z, np.ones(len(x)) if w is None else w, 1000)


def test_auto_is_the_gaussian_on_a_low_dimension_cloud() -> None:
    x, loss, planted = planted_problem(n=2000, d=12)
    auto = search(x, loss, FAST)
    gauss = search(x, loss, {**FAST, "kernel": "gaussian"})
    assert [r.kernel for r in auto.regions] == ["gaussian", "gaussian"]
    assert np.array_equal(auto.weights, gauss.weights)


def test_auto_is_the_ball_on_a_concentrated_high_dimension_cloud_and_finds_the_slice() -> None:
    x, loss, planted = highdim_slice(4000, 128)
    auto = search(x, loss, FAST)
    ball = search(x, loss, {**FAST, "kernel": "ball"})
    assert [r.kernel for r in auto.regions] == ["ball", "ball"]
    assert np.array_equal(auto.weights, ball.weights)
    members = member_set(auto.weights[:, 0], "ball")
    assert planted[members].mean() >= 0.9
    assert auto.regions[0].lift >= 0.8 * float(loss[planted].mean() / loss.mean())
    # label evidence columns are appended after the measurement: they do not change the choice
    labels = np.arange(len(x)) % 3
    with_labels = search(x, loss, {**FAST, "n_spotlights": 1, "steps": 5}, labels=labels)
    assert with_labels.regions[0].kernel == "ball" and with_labels.regions[0].extra.get("evidence")


@pytest.mark.parametrize("d", [16, 64, 256])
def test_concentration_grows_like_root_half_the_dimension(d: int) -> None:
    """An isotropic cloud: squared distances ~ 2d +- 2 sqrt(d), c ~ m / s = sqrt(d / 2), a little more
    at small d (their 2 % tail is shorter than a normal's: chi-square); 0.83-0.99 sqrt(d) measured."""
    x = np.random.default_rng(d).normal(size=(4000, d))
    assert 0.75 < _c(x) / np.sqrt(d) < 1.1


def test_concentration_is_low_for_clusters_in_high_dimension_and_robust_to_outliers() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(10, 512)) * 3
    clusters = centres[rng.integers(0, 10, 5000)] + rng.normal(size=(5000, 512)) * 0.3
    assert _c(clusters) < AUTO_BALL_ABOVE / 2  # a row's cluster is far nearer than the median row
    cloud = rng.normal(size=(5000, 512))
    clean = _c(cloud)
    cloud[:20] *= 1e3  # a few far outliers do not make a concentrated cloud look spread out
    assert clean > 2 * AUTO_BALL_ABOVE and _c(cloud) == pytest.approx(clean, rel=0.05)
    w = np.ones(5000)
    w[:2500] = 0.0  # rows of weight 0 do not count
    mixed = np.concatenate([clusters[:2500], cloud[2500:]])
    assert _c(mixed, w) > AUTO_BALL_ABOVE > _c(mixed, 1.0 - w)
    assert _c(np.zeros((50, 8))) == 0.0
