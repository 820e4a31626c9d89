"""Every option of issue 2 does what it says: min_loss, sample weights, PCA, entropy penalties,
losses from logits, progress and cancellation, input errors, device choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from spotlight.contract.kernel import region_weights
from worker.engine import SearchCanceled, search
from worker.engine.prepare import resolve_device

from .conftest import planted_problem

PARAMS = {"device": "cpu", "steps": 300, "n_spotlights": 1, "spotlight_size": 0.04}


def test_min_loss_finds_the_region_where_the_model_does_well() -> None:
    x, loss, planted = planted_problem(n=1000, d=6)
    easy = (loss.max() - loss).astype(np.float32)  # the planted ball now has the lowest losses
    result = search(x, easy, {**PARAMS, "objective": "min_loss"})
    region = result.regions[0]
    assert region.objective == "min_loss"
    assert region.weighted_loss < region.mean_loss and region.lift < 1
    assert average_precision_score(planted, result.weights[:, 0]) > 0.7


def test_zero_weight_examples_are_ignored() -> None:
    """Appending a decoy ball of huge losses with weight 0 does not attract the region.

    (Not bit-identical: more rows change float32 summation order, and the optimiser's path is
    sensitive to last-bit differences; the region found must be as good, with the same members.)"""
    x, loss, planted = planted_problem(n=800, d=5)
    base = search(x, loss, PARAMS)
    decoy = (x[:100] * 0.05 + 6.0).astype(np.float32)
    x2 = np.vstack([x, decoy])
    loss2 = np.concatenate([loss, np.full(100, 50.0, np.float32)])
    w2 = np.concatenate([np.ones(800), np.zeros(100)])
    with_decoy = search(x2, loss2, PARAMS, sample_weights=w2)
    assert with_decoy.weights[800:].max() < 1e-3
    assert with_decoy.regions[0].weighted_loss == pytest.approx(base.regions[0].weighted_loss, rel=0.05)
    for result in (base, with_decoy):  # the same members: the planted ball
        assert average_precision_score(planted, result.weights[:800, 0]) > 0.7
    assert with_decoy.regions[0].size_requested == pytest.approx(base.regions[0].size_requested)


@pytest.mark.parametrize("kernel", ["ball", "gaussian"])
def test_rows_of_weight_zero_are_left_out_of_the_search_and_still_weighed(kernel: str) -> None:
    """Rows of weight 0 (a job's held-out half) are not searched, wherever they sit: the search is the
    same, bit for bit, with them interleaved or appended, its passes over X count only the searched
    rows, and their weights are the region's formula (what the verdict tests them with)."""
    x, loss, _ = planted_problem(n=600, d=5)
    held = np.random.default_rng(3).random(600) < 0.5
    params = {**PARAMS, "kernel": kernel, "n_spotlights": 2, "steps": 60}
    interleaved = search(x, loss, params, sample_weights=(~held).astype(float))
    order = np.concatenate([np.flatnonzero(~held), np.flatnonzero(held)])
    appended = search(x[order], loss[order], params, sample_weights=(~held[order]).astype(float))
    assert np.array_equal(interleaved.weights[order], appended.weights)
    everything = search(x, loss, params)
    share = (~held).mean()
    steps = sum(r.steps_run for r in interleaved.regions)
    assert interleaved.passes < everything.passes * (share + 0.2) and interleaved.passes >= 2 * steps * share
    for j, region in enumerate(interleaved.regions):
        formula = region_weights(x[held], region.kernel_record())
        assert np.allclose(formula, interleaved.weights[held, j], atol=1e-5)


def test_sample_weights_count_towards_size_and_mean() -> None:
    x, loss, _ = planted_problem(n=800, d=5)
    w = np.random.default_rng(0).integers(1, 4, size=800).astype(np.float64)
    result = search(x, loss, {**PARAMS, "spotlight_size": 0.05}, sample_weights=w)
    region = result.regions[0]
    k = result.weights[:, 0].astype(np.float64)
    assert region.size_requested == pytest.approx(0.05 * w.sum())
    assert region.total_weight == pytest.approx(float(k @ w), rel=1e-6)
    assert region.weighted_loss == pytest.approx(float((k * w) @ loss / (k @ w)), rel=1e-5)
    assert region.mean_loss == pytest.approx(float(w @ loss / w.sum()), rel=1e-6)
    assert region.feasible and region.total_weight >= region.size_requested * (1 - 1e-5)


def test_pca_searches_the_leading_components() -> None:
    """A planted ball in a 2-D high-variance subspace of 30-D data is still found after PCA to 4."""
    rng = np.random.default_rng(3)
    n = 1000
    signal = rng.normal(size=(n, 2)) * 5.0
    basis = np.linalg.qr(rng.normal(size=(30, 30)))[0][:, :2]
    x = (signal @ basis.T + rng.normal(size=(n, 30)) * 0.3).astype(np.float32)
    dist = np.linalg.norm(signal - signal[0], axis=1)
    planted = dist <= np.quantile(dist, 0.04)
    loss = rng.exponential(0.5, size=n) + 2.0 * planted
    result = search(x, loss, {**PARAMS, "pca_components": 4})
    region = result.regions[0]
    assert region.center.shape == (30,)
    assert region.extra == {"pca_components": 4, "precision_space": "pca"}
    assert average_precision_score(planted, result.weights[:, 0]) > 0.7
    region.to_dict()


def _two_label_problem():
    """High losses in a ball whose labels are mixed on one side and pure on the other."""
    rng = np.random.default_rng(4)
    n = 1000
    x = rng.normal(size=(n, 3)).astype(np.float32)
    labels = (x[:, 1] > 0).astype(np.int64)
    loss = rng.exponential(0.3, size=n) + 2.0 * (np.linalg.norm(x[:, [0, 2]] - [1.5, 0.0], axis=1) < 1.0)
    return x, loss, labels


def _label_entropy(k: np.ndarray, labels: np.ndarray) -> float:
    p = np.bincount(labels, weights=k, minlength=2) / k.sum()
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def test_label_entropy_penalty_makes_regions_purer() -> None:
    x, loss, labels = _two_label_problem()
    alone = {**PARAMS, "evidence_weight": 0.0}  # the penalty on its own (label evidence also makes regions pure)
    plain = search(x, loss, alone, labels=labels)
    pure = search(x, loss, {**alone, "label_entropy_coeff": 5.0}, labels=labels)
    assert _label_entropy(pure.weights[:, 0], labels) < 0.5 * _label_entropy(plain.weights[:, 0], labels)


def test_the_label_entropy_penalty_does_not_depend_on_which_codes_the_classes_have() -> None:
    """Id-like codes (10**9) would make an R x 10**9 mass table; the entropy is the same renumbered."""
    x, loss, labels = _two_label_problem()
    params = {**PARAMS, "evidence_weight": 0.0, "label_entropy_coeff": 5.0}
    small = search(x, loss, params, labels=labels)
    sparse = search(x, loss, params, labels=labels * 10**9 + 7)
    assert np.allclose(small.weights, sparse.weights, atol=1e-6)


def test_prediction_entropy_penalty_uses_argmax_of_logits() -> None:
    x, loss, labels = _two_label_problem()
    logits = np.stack([-x[:, 1], x[:, 1]], 1).astype(np.float32) * 4  # argmax == labels
    plain = search(x, loss, PARAMS)
    pure = search(x, loss, {**PARAMS, "prediction_entropy_coeff": 5.0}, logits=logits)
    assert _label_entropy(pure.weights[:, 0], labels) < 0.5 * _label_entropy(plain.weights[:, 0], labels)


def test_entropy_penalty_without_codes_is_an_error() -> None:
    x, loss, _ = _two_label_problem()
    with pytest.raises(ValueError, match="labels"):
        search(x, loss, {**PARAMS, "label_entropy_coeff": 1.0})
    with pytest.raises(ValueError, match="predictions"):
        search(x, loss, {**PARAMS, "prediction_entropy_coeff": 1.0})


def test_losses_are_cross_entropy_of_logits_and_labels() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    logits = rng.normal(size=(300, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, size=300)
    result = search(x, None, PARAMS, logits=logits, labels=labels)
    shifted = logits - logits.max(1, keepdims=True)
    expected = np.log(np.exp(shifted).sum(1)) - shifted[np.arange(300), labels]
    np.testing.assert_allclose(result.losses, expected, rtol=1e-5, atol=1e-6)
    assert np.isfinite(result.regions[0].weighted_loss)


def test_extreme_logits_give_finite_losses() -> None:
    x = np.random.default_rng(7).normal(size=(50, 2)).astype(np.float32)
    logits = np.zeros((50, 3), np.float32)
    logits[:, 0] = 1e30
    result = search(x, None, PARAMS, logits=logits, labels=np.ones(50, np.int64))
    assert np.all(np.isfinite(result.losses)) and result.losses.max() > 1e29


def test_progress_reports_every_step_and_should_stop_cancels() -> None:
    x, loss, _ = planted_problem(n=300, d=3)
    seen: list[tuple[int, int, int]] = []
    result = search(x, loss, {**PARAMS, "n_spotlights": 2}, progress=lambda *a: seen.append(a))
    assert [s for s, _, _ in seen].count(0) == result.regions[0].steps_run
    assert [s for s, _, _ in seen].count(1) == result.regions[1].steps_run
    assert all(total == 300 for _, _, total in seen)
    assert [t for s, t, _ in seen if s == 0] == list(range(result.regions[0].steps_run))

    calls = []

    def stop_after_five() -> bool:
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(SearchCanceled):
        search(x, loss, PARAMS, should_stop=stop_after_five)
    assert len(calls) == 6


@pytest.mark.parametrize(
    "embeddings, losses, kwargs, match",
    [
        (np.zeros((10,)), np.zeros(10), {}, "shape"),
        (np.zeros((10, 2)), np.zeros(9), {}, "losses"),
        (np.full((10, 2), np.nan), np.zeros(10), {}, "NaN"),
        (np.zeros((10, 2)), np.array([np.inf] + [0.0] * 9), {}, "NaN"),
        (np.zeros((10, 2)), np.zeros(10), {"sample_weights": -np.ones(10)}, "sample_weights"),
        (np.zeros((10, 2)), np.zeros(10), {"sample_weights": np.zeros(10)}, "sample_weights"),
        (np.zeros((10, 2)), None, {}, "logits"),
        (np.zeros((10, 2)), None, {"logits": np.zeros((10, 3)), "labels": np.full(10, 3)}, "label"),
        (np.zeros((10, 2)), np.zeros(10), {"labels": np.full(10, 0.5)}, "integers"),
    ],
)
def test_bad_inputs_raise_value_error(embeddings, losses, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        search(embeddings, losses, PARAMS, **kwargs)


def test_torch_and_float64_inputs_are_accepted() -> None:
    x, loss, _ = planted_problem(n=300, d=3)
    a = search(x, loss, PARAMS)
    b = search(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(loss), PARAMS)
    np.testing.assert_array_equal(a.weights, b.weights)


def test_device_choice() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda:0")
    x, loss, _ = planted_problem(n=100, d=2)
    assert search(x, loss, PARAMS).device == "cpu"
