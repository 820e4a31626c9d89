"""kernel="auto" (the default): the gaussian on low-dimensional data, the ball where a row's
spotlight-sized neighbourhood has high intrinsic dimension (clustered or not), decided by
`prepare.local_dimension` of the standardised embeddings (docs/engine.md).

Asserted: the kernel each region records, that the auto search is the explicit one's (same weights),
and for the high-dimension cloud the planted slice as the region's core (what the objective defines).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spotlight.contract.members import member_set
from tests.engine.conftest import planted_problem
from tests.engine.test_ball_kernel import highdim_slice
from worker.engine import search
from worker.engine.prepare import local_dimension
from worker.engine.search import AUTO_BALL_ABOVE

FAST = {"device": "cpu", "steps": 300, "n_spotlights": 2}


def _k(x: np.ndarray, w: np.ndarray | None = None) -> float:
    z = torch.from_numpy(x - x.mean(0))
    return local_dimension(z, np.ones(len(x)) if w is None else w, 1000)


def _classes(rng: np.random.Generator, n: int, latent: int, d: int, sep: float) -> np.ndarray:
    """Ten gaussian classes in `latent` dimensions (centres `sep` apart per coordinate), mapped
    linearly into d: a latent-dimensional manifold of classes, as a trained model's embeddings."""
    centres = rng.normal(size=(10, latent)) * sep
    rows = centres[rng.integers(0, 10, n)] + rng.normal(size=(n, latent))
    return rows if latent == d else rows @ rng.normal(size=(latent, d))


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
    unchecked = {**FAST, "n_spotlights": 1, "steps": 5, "evidence_check": False}  # the evidence kept
    with_labels = search(x, loss, unchecked, labels=labels)
    assert with_labels.regions[0].kernel == "ball" and with_labels.regions[0].extra.get("evidence")


@pytest.mark.parametrize(("d", "low", "high"), [(8, 6.5, 8.0), (16, 11.0, 13.5), (64, 26.0, 33.0), (256, 58.0, 72.0)])
def test_the_neighbourhood_dimension_grows_with_an_isotropic_cloud_s_dimension(d: int, low: float, high: float) -> None:
    """Below d: the 2 % neighbourhood of 4 000 rows is not small against the cloud (7.2, 12.3, 29.4,
    65.3 measured), so its squared distances grow more slowly than D^(d/2); what matters is the order."""
    x = np.random.default_rng(d).normal(size=(4000, d))
    assert low < _k(x) < high


def test_clusters_of_high_dimension_pick_the_ball_and_a_low_dimensional_manifold_the_gaussian() -> None:
    """Ten classes in 512 dimensions: a row's neighbourhood is in its own class, far nearer than the
    median row, yet 512-dimensional (63 measured). The same ten classes in 4 latent dimensions, mapped
    into 128: 3.7 measured, whatever the embedding's width."""
    rng = np.random.default_rng(1)
    clusters = _classes(rng, 5000, 512, 512, 3.0)
    assert _k(clusters) > 4 * AUTO_BALL_ABOVE
    assert _k(_classes(rng, 5000, 4, 128, 3.0)) < AUTO_BALL_ABOVE / 2


def test_the_neighbourhood_dimension_is_robust_to_outliers_and_follows_the_weights() -> None:
    rng = np.random.default_rng(1)
    cloud = rng.normal(size=(5000, 512))
    clean = _k(cloud)
    cloud[:20] *= 1e3  # a few far outliers change no reference row's neighbourhood much
    assert clean > 4 * AUTO_BALL_ABOVE and _k(cloud) == pytest.approx(clean, rel=0.05)
    w = np.ones(5000)
    w[:2500] = 0.0  # rows of weight 0 do not count
    mixed = np.concatenate([_classes(rng, 2500, 4, 512, 3.0), cloud[2500:]])
    assert _k(mixed, w) > AUTO_BALL_ABOVE > _k(mixed, 1.0 - w)
    assert _k(np.zeros((50, 8))) == 0.0  # duplicates: no neighbourhood to measure, the gaussian
    assert _k(rng.normal(size=(40, 5))) == 0.0  # too few rows to tell 0.5 % from 2 %


def test_auto_is_the_ball_on_ten_classes_of_64_dimensions() -> None:
    """The clustered clouds of `bench.quality --part clusters` (d = 64, k = 20-21 measured there at
    n = 20 000), smaller: the ball ran on them with recall 0.94-1.0 against the gaussian's 0.26-0.84."""
    rng = np.random.default_rng(2)
    x = _classes(rng, 4000, 64, 64, 1.0).astype(np.float32)
    loss = rng.exponential(0.5, len(x)).astype(np.float32)
    auto = search(x, loss, {**FAST, "n_spotlights": 1, "steps": 5})
    assert auto.regions[0].kernel == "ball"
