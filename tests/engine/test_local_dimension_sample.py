"""`prepare.local_dimension` past DIMENSION_SAMPLE rows of positive weight: distances to a sample of
rows drawn in proportion to weight, so that deciding kernel="auto" costs the same at 10^7 rows as at
65 536. Asserted: the sampled k equals the full computation (`sample` above n) within 3 % — about 1 %
expected over 32 references (DIMENSION_SAMPLE says why), at most 1.4 % measured — and auto resolves
to the same kernel; and the sample follows the weights (a row of weight 0 is never drawn, heavier rows
are drawn more).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.engine.prepare import DIMENSION_SAMPLE, local_dimension, measured_rows
from worker.engine.search import AUTO_BALL_ABOVE, resolve_auto

N = 160_000  # well past DIMENSION_SAMPLE, small enough for a fast test
TOLERANCE = 0.03


def _both(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(sampled k, full k) of rows x with weights w."""
    z = torch.from_numpy(x - x.mean(0))
    return local_dimension(z, w, 8192), local_dimension(z, w, 8192, sample=len(x))


def _manifold_and_cloud(d: int, seed: int = 0) -> np.ndarray:
    """First half: ten classes in 4 latent dimensions mapped into d (k ~ 3.6); second half: an
    isotropic d-dimensional cloud (k ~ 30 at d = 64)."""
    rng = np.random.default_rng(seed)
    half = N // 2
    centres = rng.normal(size=(10, 4)) * 3
    manifold = (centres[rng.integers(0, 10, half)] + rng.normal(size=(half, 4))) @ rng.normal(size=(4, d))
    cloud = rng.normal(size=(half, d)) * 3
    return np.concatenate([manifold, cloud]).astype(np.float32)


def test_the_sample_is_used_only_past_its_size() -> None:
    assert N > 2 * DIMENSION_SAMPLE
    x = np.random.default_rng(3).normal(size=(DIMENSION_SAMPLE, 8)).astype(np.float32)
    sampled, full = _both(x, np.ones(len(x)))
    assert sampled == full  # at most DIMENSION_SAMPLE rows: every row is measured, as before


@pytest.mark.parametrize("d", [8, 96])
def test_a_sampled_k_equals_the_full_one_and_picks_the_same_kernel(d: int) -> None:
    x = np.random.default_rng(d).normal(size=(N, d)).astype(np.float32)
    sampled, full = _both(x, np.ones(N))
    assert sampled == pytest.approx(full, rel=TOLERANCE)
    assert resolve_auto(sampled) == resolve_auto(full) == ("gaussian" if d == 8 else "ball")


def test_a_row_of_weight_0_is_never_drawn_and_heavier_rows_are_drawn_more() -> None:
    n = 3 * DIMENSION_SAMPLE
    w = np.zeros(n)
    w[n // 3 : 2 * n // 3] = 1.0
    w[2 * n // 3 :] = 3.0
    rows, counted = measured_rows(w, np.flatnonzero(w > 0), np.random.default_rng(0), DIMENSION_SAMPLE)
    assert rows.size == DIMENSION_SAMPLE and np.all(counted == 1.0)
    assert np.all(w[rows] > 0)
    # weight 3 : 1, so 3/4 of the draws; the binomial standard error at 65 536 draws is 0.0017
    assert np.mean(w[rows] == 3.0) == pytest.approx(0.75, abs=0.01)


@pytest.mark.slow
def test_the_sampled_k_follows_the_weights() -> None:
    """The manifold alone gives a low k, the cloud alone a high one, each measured with the other's
    rows at weight 0; a sample that drew those rows would see both."""
    x = _manifold_and_cloud(64)
    on_clusters = (np.arange(N) < N // 2).astype(np.float64)
    sampled, full = _both(x, on_clusters)
    assert sampled == pytest.approx(full, rel=TOLERANCE) and full < AUTO_BALL_ABOVE / 2
    sampled, full = _both(x, 1.0 - on_clusters)
    assert sampled == pytest.approx(full, rel=TOLERANCE) and full > AUTO_BALL_ABOVE
    sampled, full = _both(x, 1.0 + 2.0 * (1.0 - on_clusters))
    assert sampled == pytest.approx(full, rel=TOLERANCE)


def test_the_sampled_k_is_deterministic() -> None:
    x = np.random.default_rng(5).normal(size=(N, 16)).astype(np.float32)
    z = torch.from_numpy(x)
    w = np.random.default_rng(6).uniform(0.5, 2.0, size=N)
    assert local_dimension(z, w, 8192) == local_dimension(z, w, 4096)
