"""Properties the product promises: unit-free, reproducible, caller coordinates that reproduce the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from worker.engine import search

from .conftest import planted_problem

PARAMS = {"device": "cpu", "steps": 400, "n_spotlights": 2, "spotlight_size": 0.04}


def kernel_from_region(x: np.ndarray, region) -> np.ndarray:
    """The kernel value of every row, recomputed from the reported centre/precision with Region's formula."""
    u = (np.asarray(region.precision) * (x.astype(np.float64) - region.center) ** 2).sum(1)
    return np.maximum(0.0, 1.0 - u) if region.kernel == "flat" else np.exp(-u / 2)


@pytest.mark.parametrize("kernel", ["flat", "gaussian"])
@pytest.mark.parametrize("shape", ["spherical", "diagonal"])
def test_reported_center_and_precision_reproduce_the_weights(kernel: str, shape: str) -> None:
    """centre/precision are in the caller's units: the documented formula on raw x gives the weights."""
    x, loss, _ = planted_problem(n=800, d=6)
    x = x * 37.0 + 1000.0  # units far from standardised
    result = search(x, loss, {**PARAMS, "kernel": kernel, "shape": shape})
    for j, region in enumerate(result.regions):
        assert np.shape(region.precision) == (() if shape == "spherical" else (6,))
        np.testing.assert_allclose(kernel_from_region(x, region), result.weights[:, j], atol=2e-3)


@pytest.mark.parametrize("kernel", ["flat", "gaussian"])
def test_translating_and_scaling_embeddings_gives_the_same_regions(kernel: str) -> None:
    """Same regions up to float32 rounding of the standardised copy (float64 inputs, so the moved copy
    is not itself rounded differently), compared by what the objective defines: the weights, the
    weighted loss, the total weight (the centre along directions the loss does not pin down is free to
    move by rounding). One region: later ones chase noise here, and noise regions are ties that a
    rounding difference may break either way."""
    x, loss, _ = planted_problem(n=1000, d=8)
    x = x.astype(np.float64)
    base = search(x, loss, {**PARAMS, "kernel": kernel, "n_spotlights": 1})
    moved = search(x * 250.0 - 3000.0, loss, {**PARAMS, "kernel": kernel, "n_spotlights": 1})
    np.testing.assert_allclose(moved.weights, base.weights, atol=2e-3)  # every example's membership
    for a, b in zip(base.regions, moved.regions, strict=True):
        assert b.weighted_loss == pytest.approx(a.weighted_loss, rel=1e-3)
        assert b.total_weight == pytest.approx(a.total_weight, rel=1e-3)


def test_power_of_two_scaling_is_bit_exact() -> None:
    """Scaling by 2^k changes the mean and scale exactly, so the standardised data and every result agree
    bit for bit."""
    x, loss, _ = planted_problem(n=600, d=5)
    base = search(x, loss, PARAMS)
    scaled = search(x * 1024.0, loss, PARAMS)
    np.testing.assert_array_equal(scaled.weights, base.weights)
    for a, b in zip(base.regions, scaled.regions, strict=True):
        np.testing.assert_array_equal(b.center, a.center * 1024.0)


def test_same_seed_same_result() -> None:
    x, loss, _ = planted_problem(n=1000, d=8)
    first = search(x, loss, {**PARAMS, "seed": 3})
    again = search(x, loss, {**PARAMS, "seed": 3})
    np.testing.assert_array_equal(first.weights, again.weights)
    assert [r.to_dict() for r in first.regions] == [r.to_dict() for r in again.regions]


def test_scaling_losses_does_not_change_the_regions() -> None:
    """Losses are standardised too: only their ranking-relevant shape matters, not their unit."""
    x, loss, _ = planted_problem(n=1000, d=8)
    loss = loss.astype(np.float64)
    base = search(x, loss, PARAMS)
    scaled = search(x, loss * 1e4 + 7.0, PARAMS)
    np.testing.assert_allclose(scaled.weights, base.weights, atol=2e-3)


def test_later_regions_look_elsewhere() -> None:
    """Two planted balls: the first two regions cover different ones."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 6)).astype(np.float32)
    d0 = np.linalg.norm(x - x[0], axis=1)
    far = int(np.argmax(d0))
    d1 = np.linalg.norm(x - x[far], axis=1)
    ball0, ball1 = d0 <= np.quantile(d0, 0.03), d1 <= np.quantile(d1, 0.03)
    loss = rng.exponential(0.5, size=2000) + 2.0 * (ball0 | ball1)
    result = search(x, loss, {**PARAMS, "spotlight_size": 0.03, "steps": 500})
    aps = [[average_precision_score(b, result.weights[:, j]) for b in (ball0, ball1)] for j in range(2)]
    assert max(aps[0]) > 0.7 and max(aps[1]) > 0.7
    assert np.argmax(aps[0]) != np.argmax(aps[1])


def test_diagonal_shape_finds_an_elongated_region() -> None:
    """A slab thin in one axis and wide in the others: the diagonal precision is largest on that axis."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    slab = (np.abs(x[:, 0] - 1.0) < 0.15) & (np.abs(x[:, 1]) < 1.5)
    loss = rng.exponential(0.3, size=2000) + 2.0 * slab
    result = search(x, loss, {**PARAMS, "n_spotlights": 1, "shape": "diagonal", "spotlight_size": float(slab.mean())})
    region = result.regions[0]
    assert int(np.argmax(region.precision)) == 0
    assert average_precision_score(slab, result.weights[:, 0]) > 0.6


def _top(weights: np.ndarray, j: int, size: int) -> set[int]:
    return set(np.argsort(-weights[:, j], kind="stable")[:size].tolist())


def test_each_region_is_a_different_weak_spot() -> None:
    """Three planted balls of different strength, each four times the spotlight size, three regions:
    each ball gets its own region, and no two regions share more than 30 % of their heaviest rows
    (the default deflation, 'tails'; the paper's re-weighting spends two regions on the strongest
    ball here, whose tails it leaves in place)."""
    rng = np.random.default_rng(8)
    n = 3000
    x = rng.normal(size=(n, 6)).astype(np.float32)
    anchors = [0, int(np.argmax(x[:, 0])), int(np.argmin(x[:, 0]))]
    balls = []
    for a in anchors:
        dist = np.linalg.norm(x - x[a], axis=1)
        balls.append(dist <= np.quantile(dist, 0.08))
    loss = rng.exponential(0.4, size=n) + sum(b * s for b, s in zip(balls, (2.5, 2.0, 1.5), strict=True))
    result = search(x, loss, {**PARAMS, "n_spotlights": 3, "spotlight_size": 0.02, "steps": 500})
    aps = np.array([[average_precision_score(b, result.weights[:, j]) for b in balls] for j in range(3)])
    owner = aps.argmax(0)
    assert len(set(owner.tolist())) == 3 and aps.max(0).min() > 0.6, aps
    size = int(0.02 * n)
    for i in range(3):
        for j in range(i + 1, 3):
            assert len(_top(result.weights, i, size) & _top(result.weights, j, size)) <= 0.3 * size


def test_deflation_tails_takes_out_more_than_the_papers() -> None:
    """The two rules on the same kernel values: 'paper' keeps s (1 - k/max k), 'tails' that to the 8th
    power, so a row at half the peak weight keeps half its score under one and 0.4 % under the other."""
    from worker.engine.search import deflate

    k = torch.tensor([1.0, 0.5, 0.1, 0.0]) * 0.8
    s = torch.tensor([2.0, 2.0, 2.0, 2.0])
    paper, tails = deflate(s, k, "paper"), deflate(s, k, "tails")
    assert torch.allclose(paper, torch.tensor([0.0, 1.0, 1.8, 2.0]))
    assert torch.allclose(tails, torch.tensor([0.0, 2 * 0.5**8, 2 * 0.9**8, 2.0]))
    assert torch.equal(deflate(s, torch.zeros(4), "tails"), s)  # an empty region takes nothing out


def test_restandardise_puts_deflated_scores_back_on_the_first_regions_scale() -> None:
    """After deflation the scores are divided by their weighted standard deviation (rows of weight 0
    not counted), so the barrier and the plateau tolerance meet them on the scale region 0 had; the
    order of the rows is kept, and scores that no longer vary are left as they are."""
    from worker.engine.search import restandardise

    s = torch.tensor([0.01, 0.02, 0.04, 0.03, 5.0])
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    out = restandardise(s, w)
    mean = (w @ out) / w.sum()
    assert torch.allclose((w * (out - mean) ** 2).sum() / w.sum(), torch.tensor(1.0))
    assert torch.equal(torch.argsort(out), torch.argsort(s))
    flat = torch.full((4,), 0.3)
    assert torch.equal(restandardise(flat, torch.ones(4)), flat)
