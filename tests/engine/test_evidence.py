"""Labels and predictions as error-type evidence (`evidence_weight`, `evidence`): the columns the
engine appends, the class-shaped weak spot they let a region find, and scoring such regions again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from spotlight.contract import kernel
from spotlight.contract.evidence import EvidenceMissing, as_codes, columns, term
from worker.engine import Region, SearchResume, SearchYielded, core, search
from worker.engine.prepare import Frame, add_evidence
from worker.engine.variants import smooth
from worker.engine.variants.flat import Flat
from worker.engine.variants.gaussian import Gaussian

from .conftest import planted_problem

SMOOTH: dict[str, type[smooth.Smooth]] = {"gaussian": Gaussian, "flat": Flat}

PARAMS = {"device": "cpu", "steps": 300, "n_spotlights": 1, "spotlight_size": 0.03}


def _scattered_class(n: int = 2000, d: int = 8, seed: int = 0):
    """A class (label 3, ~1/8 of the rows, four times the spotlight) scattered over the whole cloud,
    whose every row fails; its predictions are wrong, everyone else's right. No ball of embedding
    space holds it: only the label says which rows these are."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    labels = rng.integers(0, 8, size=n)
    bad = labels == 3
    predictions = np.where(bad, (labels + 1) % 8, labels)
    loss = (rng.exponential(0.3, size=n) + 2.0 * bad).astype(np.float32)
    return x, loss, labels, predictions, bad


@pytest.mark.parametrize(("kind", "width"), [("labels", 5), ("labels_predictions", 5 + 4), ("mismatch", 1)])
def test_columns_are_appended_centred_and_scaled(kind: str, width: int) -> None:
    n, d = 50, 6
    rng = np.random.default_rng(1)
    z = torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32))
    labels = np.arange(n) % 5
    predictions = np.arange(n) % 4
    frame = Frame(mean=np.zeros(d), scale=1.0, basis=None)
    w = np.ones(n)
    z2, f2 = add_evidence(z, frame, labels, predictions, w, kind, 0.5)
    assert z2.shape == (n, d + width)
    assert torch.equal(z2[:, :d], z)  # the embedding coordinates are untouched
    tail = z2[:, d:].double().numpy()
    assert np.allclose(tail.mean(0), 0.0, atol=1e-6)  # centred: the data mean stays at z = 0
    # a one-hot 1 is worth weight * sqrt(d) standardised units
    expected = (columns(kind, labels, predictions, 5, 4) - columns(kind, labels, predictions, 5, 4).mean(0)) * (
        0.5 * np.sqrt(d)
    )
    assert np.allclose(tail, expected, atol=1e-5)
    assert f2.tail == width
    assert f2.center(np.ones(d + width)).shape == (d,)  # the published centre is the caller's d


def test_nothing_is_appended_without_weight_or_what_the_kind_needs() -> None:
    z = torch.zeros(10, 3)
    frame = Frame(mean=np.zeros(3), scale=1.0, basis=None)
    labels = np.arange(10) % 2
    w = np.ones(10)
    assert add_evidence(z, frame, labels, None, w, "labels", 0.0)[0] is z
    assert add_evidence(z, frame, None, None, w, "labels", 1.0)[0] is z
    assert add_evidence(z, frame, labels, None, w, "mismatch", 1.0)[0] is z  # needs predictions too


def test_codes_too_wide_for_columns_use_no_evidence_rather_than_n_by_max_code_memory() -> None:
    """Labels that are ids (a code of 10**9) would mean a billion columns per row: nothing is appended."""
    z = torch.zeros(10, 3)
    frame = Frame(mean=np.zeros(3), scale=1.0, basis=None)
    w = np.ones(10)
    wide = np.arange(10) * 10**8
    assert add_evidence(z, frame, wide, None, w, "labels", 1.0)[0] is z
    assert add_evidence(z, frame, np.arange(10) % 2, wide, w, "labels_predictions", 1.0)[0] is z
    x, loss, labels, predictions, _ = _scattered_class(n=400)
    found = search(x, loss, PARAMS, labels=labels * 10**8, predictions=predictions)
    assert "evidence" not in found.regions[0].to_dict()
    assert np.array_equal(found.weights, search(x, loss, PARAMS).weights)


def test_weight_zero_is_the_search_without_labels() -> None:
    x, loss, labels, predictions, _ = _scattered_class(n=600)
    off = search(x, loss, {**PARAMS, "evidence_weight": 0.0}, labels=labels, predictions=predictions)
    without = search(x, loss, PARAMS)
    assert np.array_equal(off.weights, without.weights)
    assert "evidence" not in off.regions[0].to_dict()


@pytest.mark.parametrize("kind", ["labels", "labels_predictions", "mismatch"])
def test_a_scattered_failing_class_is_found_with_evidence_and_missed_without(kind: str) -> None:
    x, loss, labels, predictions, bad = _scattered_class()
    plain = search(x, loss, {**PARAMS, "evidence_weight": 0.0}, labels=labels, predictions=predictions)
    found = search(x, loss, {**PARAMS, "evidence": kind}, labels=labels, predictions=predictions)
    ap_plain = average_precision_score(bad, plain.weights[:, 0])
    ap_found = average_precision_score(bad, found.weights[:, 0])
    assert ap_plain < 0.5  # no ball of embedding space ranks a scattered class
    assert ap_found > 0.95
    # the objective says the same: the region's weighted loss is near the failing class's ('mismatch'
    # is one column, worth half a label difference: its gaussian keeps more weight on the rest)
    assert found.regions[0].weighted_loss > (0.75 if kind == "mismatch" else 0.9) * float(loss[bad].mean())
    assert found.regions[0].weighted_loss > 1.5 * plain.regions[0].weighted_loss
    region = found.regions[0].to_dict()
    assert len(region["center"]) == x.shape[1]
    if kind != "mismatch":
        centre = np.asarray(region["evidence"]["center"][: region["evidence"]["n_labels"]])
        assert int(np.argmax(centre)) == 3 and centre[3] > 0.5  # the region's label is 3


@pytest.mark.parametrize("kind", ["labels", "labels_predictions", "mismatch"])
@pytest.mark.parametrize(("kernel_name", "shape"), [("gaussian", "spherical"), ("flat", "diagonal")])
def test_scoring_again_needs_the_labels_and_then_gives_the_engines_weights(
    kind: str, kernel_name: str, shape: str
) -> None:
    x, loss, labels, predictions, _ = _scattered_class(n=600, d=5, seed=2)
    x = x * 3.0 + 5.0  # caller units differ from the engine's standardised ones
    params = {**PARAMS, "n_spotlights": 2, "steps": 60, "evidence": kind, "kernel": kernel_name, "shape": shape}
    result = search(x, loss, params, labels=labels, predictions=predictions)
    for k, region in enumerate(result.regions):
        r = region.kernel_record()
        assert r.evidence is not None and r.evidence.kind == kind
        mine = kernel.region_weights(x, r, labels=labels, predictions=predictions)
        assert np.max(np.abs(mine - result.weights[:, k])) < 2e-4
        assert (mine > 0.01).sum() > 0
        with pytest.raises(kernel.RegionSpaceError, match="evidence_weight"):
            kernel.region_weights(x, r)


def test_missing_predictions_are_named() -> None:
    with pytest.raises(EvidenceMissing, match="labels and predictions"):
        columns("mismatch", np.zeros(3, dtype=np.int64), None, 1, 0)


def test_a_label_the_search_never_saw_has_no_column_set() -> None:
    cols = columns("labels", np.array([0, 1, 7]), None, 2, 0)
    assert cols.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]


def test_no_labels_no_change_on_the_planted_ball() -> None:
    """Jobs without labels search exactly as before: the default evidence weight needs labels."""
    x, loss, planted = planted_problem(n=800, d=6)
    result = search(x, loss, PARAMS)
    assert "evidence" not in result.regions[0].to_dict()
    assert average_precision_score(planted, result.weights[:, 0]) > 0.8


def test_a_yielded_search_with_evidence_resumes_to_the_uninterrupted_regions() -> None:
    """Regions with an evidence term go through the worker's JSON checkpoint and come back whole."""
    x, loss, labels, predictions, _ = _scattered_class(n=800, d=5, seed=4)
    params = {**PARAMS, "n_spotlights": 3, "steps": 120, "restarts": 3, "evidence": "labels_predictions"}
    whole = search(x, loss, params, labels=labels, predictions=predictions)
    with pytest.raises(SearchYielded) as caught:
        search(x, loss, params, labels=labels, predictions=predictions, should_yield=lambda: True)
    partial = caught.value.partial
    stored = [Region.from_dict(r.to_dict()) for r in partial.regions]
    assert stored[0].to_dict()["evidence"] == partial.regions[0].to_dict()["evidence"]
    resumed = search(
        x, loss, params, labels=labels, predictions=predictions, resume=SearchResume(stored, partial.weights.copy())
    )
    for k, (a, b) in enumerate(zip(resumed.regions, whole.regions, strict=True)):
        assert a.weighted_loss == pytest.approx(b.weighted_loss, rel=1e-5, abs=1e-6)
        assert a.to_dict()["evidence"]["kind"] == "labels_predictions"
        np.testing.assert_allclose(resumed.weights[:, k], whole.weights[:, k], atol=1e-4)


def test_rows_labels_may_be_class_names_matched_by_name() -> None:
    names = ["cat", "dog", "eight"]
    assert as_codes(np.array(["eight", "cat", "owl"]), names, "labels").tolist() == [2, 0, -1]  # owl: unseen
    assert as_codes([2, 0], names, "labels").tolist() == [2, 0]  # codes stay codes
    assert as_codes(np.array([1.0, 2.0]), None, "labels").tolist() == [1, 2]
    with pytest.raises(EvidenceMissing, match="integer codes"):
        as_codes(["cat"], None, "labels")  # the job's labels had no names
    with pytest.raises(ValueError, match="integer codes or class names"):
        as_codes([0.5], names, "labels")
    region = {"kind": "labels", "n_labels": 3, "n_predictions": 0, "center": [0.0, 0.0, 1.0], "precision": 2.0}
    by_name = term({**region, "class_names": names}, ["eight", "cat"], None, 2)
    by_code = term(region, [2, 0], None, 2)
    assert by_name.tolist() == by_code.tolist() == [0.0, 4.0]


def _two_block_problem(kernel_name: str):
    """float64 embeddings with three one-hot evidence columns, and restarts near the data."""
    gen = torch.Generator().manual_seed(5)
    n, d_emb, c, r = 300, 5, 3, 4
    x = torch.randn(n, d_emb, generator=gen, dtype=torch.float64)
    e = torch.nn.functional.one_hot(torch.randint(0, c, (n,), generator=gen), c).double() * 2.0
    data = core.EmbeddingMatrix(torch.cat([x, e], 1), chunk=64, tail=c)
    mu = torch.randn(d_emb + c, r, generator=gen, dtype=torch.float64) * 0.5
    theta = torch.randn(2, r, generator=gen, dtype=torch.float64) * 0.3
    if kernel_name == "flat":  # large precisions: the support projection f < 1 acts on some restarts
        theta = theta + 3.0
    scores = torch.rand(n, generator=gen, dtype=torch.float64)
    return data, mu, theta, scores, torch.ones(n, dtype=torch.float64)


@pytest.mark.parametrize("kernel_name", ["gaussian", "flat"])
def test_two_precision_gradient_equals_autograd(kernel_name: str) -> None:
    """The hand-derived step with an evidence precision of its own is the autograd gradient of `evaluate`."""
    data, mu, theta, scores, w = _two_block_problem(kernel_name)
    size, slack, scale = 30.0, 20.0, 1.0
    assert core.split_precision(data, theta)
    kind = SMOOTH[kernel_name]
    ctx = core.StepContext(data, w, None, size, barrier_scale=scale)
    ev, g_mu, g_theta, f = smooth.split_step(kind, ctx, mu, theta, w * scores, slack)
    m, t = mu.clone().requires_grad_(True), theta.clone().requires_grad_(True)
    u = core.scaled_distances(data, m, t)
    f_ref = kind.support(u, None)
    ref = kind.evaluate(u * f_ref[:, None], scores, w, size, slack, scale)
    a_mu, a_theta = torch.autograd.grad(ref.penalised.sum(), [m, t])
    if kernel_name == "flat":
        assert bool((f < 1).any())
    torch.testing.assert_close(f, f_ref)
    torch.testing.assert_close(ev.penalised, ref.penalised.detach())
    torch.testing.assert_close(g_mu, a_mu)
    torch.testing.assert_close(g_theta, a_theta)
    assert g_theta.shape == (2, mu.shape[1])


def test_equal_precisions_start_as_the_tied_search() -> None:
    """With tau_e = tau the objective is the tied one, and the two theta gradients add up to the tied one."""
    data, mu, theta, scores, w = _two_block_problem("gaussian")
    tied = theta[:1]
    both = tied.expand(2, -1).contiguous()
    ctx = core.StepContext(data, w, None, 30.0)
    ev2, g_mu2, g_theta2, _ = smooth.split_step(Gaussian, ctx, mu, both, w * scores, 20.0)
    ev1, g_mu1, g_theta1, _ = smooth.spherical_step(Gaussian, ctx, mu, tied, w * scores, 20.0)
    torch.testing.assert_close(ev2.penalised, ev1.penalised)
    torch.testing.assert_close(g_mu2, g_mu1)
    torch.testing.assert_close(g_theta2.sum(0), g_theta1[0])


def _cross_class(n: int = 3000, d: int = 16, seed: int = 0):
    """A weak spot that is not a class: 10 gaussian classes, and the 4 % of rows nearest the midpoint
    of classes 0 and 1 fail. The slice is part of two classes: no label names it (bench/quality_modes.py
    has the benchmark's version)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, d)) * 2.0
    labels = rng.integers(0, 10, n)
    x = (centres[labels] + rng.normal(size=(n, d))).astype(np.float32)
    dist = ((x - (centres[0] + centres[1]) / 2) ** 2).sum(1)
    planted = dist <= np.quantile(dist, 0.04)
    loss = (rng.exponential(0.5, n) + 2.0 * planted).astype(np.float32)
    return x, loss, labels, planted


def test_a_weak_spot_across_classes_is_found_with_evidence_as_without() -> None:
    """A region learns how much the label matters: with evidence on, the slice that cuts across two
    classes is ranked about as well as by the search without labels, because the region that finds it
    lowers its evidence precision well below the embedding's (where both start; one precision for
    both split the slice by label: docs/engine.md, "What earns its place")."""
    x, loss, labels, planted = _cross_class()
    params = {"device": "cpu", "n_spotlights": 3, "steps": 300, "evidence_check": False}  # evidence as asked

    def best(update: dict):
        res = search(x, loss, {**params, **update}, labels=labels)
        aps = [float(average_precision_score(planted, res.weights[:, j])) for j in range(3)]
        j = int(np.argmax(aps))
        return aps[j], res.regions[j]

    (learned, region), (off, _) = best({}), best({"evidence_weight": 0.0})
    assert off > 0.85  # the slice is a ball of embedding space
    assert learned > off - 0.08
    # the embedding precision in standardised units (one scale s: the RMS deviation per dimension), and
    # what the evidence precision would be at it: a one-hot unit is sqrt(d) standardised units
    s = float(np.sqrt(((x - x.mean(0)) ** 2).mean()))
    tau = float(region.precision) * s**2
    tau_e = max(np.atleast_1d(region.extra["evidence"]["precision"]))  # one per column, all equal
    assert tau_e < 0.5 * tau * x.shape[1], (tau_e, tau * x.shape[1])
