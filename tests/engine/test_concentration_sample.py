"""`prepare.concentration` past CONCENTRATION_SAMPLE rows of positive weight: distances to a sample of
rows drawn in proportion to weight, so that deciding kernel="auto" costs the same at 10^7 rows as at
65 536. Asserted: the sampled c equals the full computation (`sample` above n) within 2 % — the
sample's 2 % quantile has a standard error of about 0.55 % of one reference row's c
(CONCENTRATION_SAMPLE says why), at most 0.56 % measured — and auto resolves to the same kernel; and
the sample follows the weights (a row of weight 0 is never drawn, heavier rows are drawn more).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.engine.prepare import CONCENTRATION_SAMPLE, concentration, measured_rows
from worker.engine.search import AUTO_BALL_ABOVE, resolve_auto

N = 160_000  # well past CONCENTRATION_SAMPLE, small enough for a fast test
TOLERANCE = 0.02


def _both(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(sampled c, full c) of rows x with weights w."""
    z = torch.from_numpy(x - x.mean(0))
    return concentration(z, w, 8192), concentration(z, w, 8192, sample=len(x))


def _clusters_and_cloud(d: int, seed: int = 0) -> np.ndarray:
    """First half: ten tight clusters (c ~ 2); second half: an isotropic cloud (c ~ sqrt(d / 2))."""
    rng = np.random.default_rng(seed)
    half = N // 2
    centres = rng.normal(size=(10, d)) * 3
    clusters = centres[rng.integers(0, 10, half)] + rng.normal(size=(half, d)) * 0.3
    cloud = rng.normal(size=(half, d)) * 3
    return np.concatenate([clusters, cloud]).astype(np.float32)


def test_the_sample_is_used_only_past_its_size() -> None:
    assert N > 2 * CONCENTRATION_SAMPLE
    x = np.random.default_rng(3).normal(size=(CONCENTRATION_SAMPLE, 8)).astype(np.float32)
    sampled, full = _both(x, np.ones(len(x)))
    assert sampled == full  # at most CONCENTRATION_SAMPLE rows: every row is measured, as before


@pytest.mark.parametrize("d", [8, 96])
def test_a_sampled_c_equals_the_full_one_and_picks_the_same_kernel(d: int) -> None:
    x = np.random.default_rng(d).normal(size=(N, d)).astype(np.float32)
    sampled, full = _both(x, np.ones(N))
    assert sampled == pytest.approx(full, rel=TOLERANCE)
    assert resolve_auto(sampled) == resolve_auto(full) == ("gaussian" if d == 8 else "ball")


def test_a_row_of_weight_0_is_never_drawn_and_heavier_rows_are_drawn_more() -> None:
    n = 3 * CONCENTRATION_SAMPLE
    w = np.zeros(n)
    w[n // 3 : 2 * n // 3] = 1.0
    w[2 * n // 3 :] = 3.0
    rows, counted = measured_rows(w, np.flatnonzero(w > 0), np.random.default_rng(0), CONCENTRATION_SAMPLE)
    assert rows.size == CONCENTRATION_SAMPLE and np.all(counted == 1.0)
    assert np.all(w[rows] > 0)
    # weight 3 : 1, so 3/4 of the draws; the binomial standard error at 65 536 draws is 0.0017
    assert np.mean(w[rows] == 3.0) == pytest.approx(0.75, abs=0.01)


def test_the_sampled_c_follows_the_weights() -> None:
    """Clusters alone give a low c, the cloud alone a high one, each measured with the other's rows at
    weight 0; a sample that drew those rows would see the mixture (c ~ 6.7 either way)."""
    x = _clusters_and_cloud(64)
    on_clusters = (np.arange(N) < N // 2).astype(np.float64)
    sampled, full = _both(x, on_clusters)
    assert sampled == pytest.approx(full, rel=TOLERANCE) and full < AUTO_BALL_ABOVE / 2
    sampled, full = _both(x, 1.0 - on_clusters)
    assert sampled == pytest.approx(full, rel=TOLERANCE) and full > AUTO_BALL_ABOVE
    sampled, full = _both(x, 1.0 + 2.0 * (1.0 - on_clusters))
    assert sampled == pytest.approx(full, rel=TOLERANCE)


def test_the_sampled_c_is_deterministic() -> None:
    x = np.random.default_rng(5).normal(size=(N, 16)).astype(np.float32)
    z = torch.from_numpy(x)
    w = np.random.default_rng(6).uniform(0.5, 2.0, size=N)
    assert concentration(z, w, 8192) == concentration(z, w, 4096)
