"""Region descriptions: weighted composition, the bootstrap interval, the permutation test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from worker.describe import (
    bootstrap_interval,
    describe_job,
    describe_region,
    describe_regions,
    metadata_columns,
    p_values,
    permutation_test,
    region_score,
    significance,
)


def test_composition_is_the_members_share_against_the_whole_dataset() -> None:
    # 10 rows: labels 0 x6, 1 x4. Members: rows 0, 1 (label 0) and 6, 7, 8, 9 (label 1).
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    members = np.array([6, 7, 0, 8, 9, 1])
    losses = np.arange(10, dtype=float)
    d = describe_region(members, losses, labels=labels, n_bootstrap=0)
    top = d["labels"]["over_represented"]
    assert top[0]["value"] == 1
    assert top[0]["count_inside"] == 4 and top[0]["count_overall"] == 4
    assert top[0]["share_inside"] == pytest.approx(4 / 6)
    assert top[0]["share_overall"] == pytest.approx(0.4)
    assert top[0]["lift"] == pytest.approx((4 / 6) / 0.4)
    # label 0 is under-represented: not listed once an over-represented value exists
    assert [v["value"] for v in top] == [1]
    assert d["labels"]["dominant"] == {"value": 1, "share_inside": pytest.approx(4 / 6)}
    assert d["basis"] == "members" and d["n_members"] == 6
    assert d["mean_loss"] == pytest.approx(float(losses[members].mean()))
    assert d["dataset_mean_loss"] == pytest.approx(4.5)
    assert d["lift"] == pytest.approx(float(losses[members].mean()) / 4.5)
    assert d["mean_loss_ci"] is None


def test_description_is_computed_on_the_members_not_the_weighted_dataset() -> None:
    """A gaussian region whose weight is mostly spread thinly over the dataset: what stands out, the
    error rate, the mean loss and the lift are those of its members, the rows a person calls the region."""
    from spotlight.contract.members import member_set

    rng = np.random.default_rng(0)
    n = 2000
    x = rng.normal(size=n)
    labels = rng.integers(0, 10, size=n)
    preds = labels.copy()
    pocket = np.argsort(np.abs(x - 2.0))[:40]  # the 40 rows nearest 2.0: label 8, all wrong, high loss
    labels[pocket], preds[pocket] = 8, 3
    losses = rng.gamma(1.0, 0.2, size=n)
    losses[pocket] += 3.0
    weights = np.exp(-np.square(x - 2.0) / (2 * 0.2**2))  # never 0: some weight on every row
    members = member_set(weights, "gaussian")
    d = describe_region(members, losses, labels, preds, n_bootstrap=200)
    assert d["n_members"] == members.size < 0.5 * int((weights >= 1e-3).sum())
    assert float(np.isin(members, pocket).mean()) > 0.5
    label8 = next(v for v in d["labels"]["over_represented"] if v["value"] == 8)
    assert label8["share_inside"] == pytest.approx(float((labels[members] == 8).mean()))
    assert d["error_rate"]["inside"] == pytest.approx(float((labels[members] != preds[members]).mean()))
    assert d["mean_loss"] == pytest.approx(float(losses[members].mean()))
    assert d["lift"] == pytest.approx(float(losses[members].mean() / losses.mean()))
    lo, hi = d["mean_loss_ci"]
    assert lo < d["mean_loss"] < hi
    # not the kernel-weighted share over every row, which is what describing the weights gives
    assert label8["share_inside"] != pytest.approx(float(weights[labels == 8].sum() / weights.sum()), abs=0.02)


def test_error_rate_and_predictions() -> None:
    labels = np.array([0, 0, 1, 1, 1, 1])
    preds = np.array([0, 1, 0, 1, 1, 1])  # rows 1 and 2 wrong
    d = describe_region(np.array([1, 2]), np.ones(6), labels, preds, n_bootstrap=0)
    assert d["error_rate"]["inside"] == pytest.approx(1.0)
    assert d["error_rate"]["overall"] == pytest.approx(2 / 6)
    assert d["error_rate"]["lift"] == pytest.approx(3.0)
    assert {v["value"] for v in d["predictions"]["over_represented"]} <= {0, 1}


def test_metadata_fields_are_classified_categorical_numeric_or_skipped() -> None:
    n = 200
    rng = np.random.default_rng(0)
    rows = [
        {
            "source": "phone" if i < 40 else "web",
            "score": float(rng.normal()) + (3.0 if i < 40 else 0.0),
            "caption": f"free text number {i}",
            "url": f"https://img.example/{i}.png",
            "tags": ["a", "b"],
        }
        for i in range(n)
    ]
    rows[5].pop("source")  # missing in one row
    d = describe_region(np.arange(40), rng.random(n), metadata_columns=metadata_columns(rows), n_bootstrap=0)
    assert set(d["metadata"]) == {"source"}
    src = d["metadata"]["source"]["over_represented"][0]
    assert src["value"] == "phone"
    assert src["share_inside"] == pytest.approx(39 / 40)
    assert src["lift"] == pytest.approx((39 / 40) / (39 / 200))
    assert set(d["numeric"]) == {"score"}
    assert d["numeric"]["score"]["inside"] > d["numeric"]["score"]["overall"] + 1.5
    json.dumps(d, allow_nan=False)  # JSON-ready, never NaN


def test_metadata_columns_fills_missing_keys_and_caps_fields() -> None:
    cols = metadata_columns([{"a": 1}, {"b": 2}, None], max_fields=1)
    assert cols == {"a": [1, None, None]}


def test_bootstrap_interval_covers_the_truth_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(1)
    true_mean = 2.0
    widths = []
    for n in (200, 5000):
        losses = rng.exponential(true_mean, size=n)
        w = np.ones(n)
        lo, hi = bootstrap_interval(w, losses, n_bootstrap=400, seed=0)
        assert lo < losses.mean() < hi
        widths.append(hi - lo)
        # the textbook normal interval for a mean: 1.96 * sd / sqrt(n)
        expected = 2 * 1.96 * losses.std() / math.sqrt(n)
        assert widths[-1] == pytest.approx(expected, rel=0.25)
    assert widths[1] < widths[0] / 3


def test_bootstrap_is_reproducible_with_its_seed() -> None:
    rng = np.random.default_rng(2)
    losses, w = rng.random(300), rng.random(300)
    assert bootstrap_interval(w, losses, 200, seed=5) == bootstrap_interval(w, losses, 200, seed=5)
    assert bootstrap_interval(w, losses, 200, seed=5) != bootstrap_interval(w, losses, 200, seed=6)


def test_empty_region_gives_no_loss_no_interval_and_no_nan() -> None:
    d = describe_region(np.array([], dtype=np.int64), np.arange(5.0), labels=np.arange(5), n_bootstrap=100)
    assert d["n_members"] == 0 and d["mean_loss"] is None and d["lift"] is None and d["mean_loss_ci"] is None
    json.dumps(d, allow_nan=False)
    # a dataset mean loss of 0 leaves the lift undefined rather than infinite
    assert describe_region(np.array([0]), np.zeros(3), n_bootstrap=10)["lift"] is None


def test_describe_regions_one_per_member_set_and_checks() -> None:
    out = describe_regions([np.array([0, 2]), np.array([1])], np.array([1.0, 2.0, 3.0]), n_bootstrap=10)
    assert len(out) == 2
    assert out[0]["mean_loss"] == pytest.approx(2.0) and out[1]["mean_loss"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        describe_region(np.array([3]), np.ones(3))


# ----- permutation test -----
def _best_window_mean(x: np.ndarray, losses: np.ndarray, width: int = 20) -> float:
    """A tiny 'search': the best mean loss over windows of `width` neighbours along a 1-D embedding."""
    order = np.argsort(x)
    c = np.concatenate([[0.0], np.cumsum(losses[order])])
    return float(np.max((c[width:] - c[:-width]) / width))


def test_permutation_test_separates_a_planted_region_from_noise() -> None:
    rng = np.random.default_rng(3)
    n = 400
    x = rng.random(n)
    losses = rng.random(n)
    planted = losses.copy()
    planted[(x > 0.4) & (x < 0.45)] += 2.0  # a real high-loss pocket
    search = lambda lo: _best_window_mean(x, lo)  # noqa: E731
    p_real = permutation_test(search, planted, 49, seed=0, observed=[search(planted)])[0]
    p_noise = permutation_test(search, losses, 49, seed=0, observed=[search(losses)])[0]
    assert p_real == pytest.approx(1 / 50)  # nothing shuffled comes close: the smallest possible p
    assert p_noise > 0.1


def test_p_value_formula_counts_ties_and_adds_one() -> None:
    null = np.array([1.0, 2.0, 3.0, 3.0])
    assert p_values([3.0, 0.5, 10.0], null) == [3 / 5, 5 / 5, 1 / 5]


def test_permutation_test_shuffles_losses_reproducibly() -> None:
    seen: list[np.ndarray] = []

    def search(lo: np.ndarray) -> float:
        seen.append(lo.copy())
        return float(lo[0])

    losses = np.arange(50.0)
    permutation_test(search, losses, 3, seed=7, observed=[0.0])
    first = [s.copy() for s in seen]
    seen.clear()
    permutation_test(search, losses, 3, seed=7, observed=[0.0])
    assert all(np.array_equal(a, b) for a, b in zip(first, seen, strict=True))
    assert all(sorted(s.tolist()) == losses.tolist() for s in first)  # a permutation, nothing else
    assert not np.array_equal(first[0], losses)
    assert permutation_test(search, losses, 0, observed=[1.0, 2.0]) == [1.0, 1.0]


def test_region_score_negates_min_loss() -> None:
    assert region_score({"weighted_loss": 2.0, "objective": "max_loss"}) == 2.0
    assert region_score({"weighted_loss": 2.0, "objective": "min_loss"}) == -2.0


def test_describe_job_reads_metadata_through_the_reader_and_samples_big_datasets() -> None:
    n = 5000
    rng = np.random.default_rng(4)
    group = np.where(rng.random(n) < 0.1, "rare", "common")
    w = [np.flatnonzero(group == "rare")]
    losses = rng.random(n)
    asked: list[np.ndarray] = []

    def read(idx: np.ndarray) -> list[dict[str, str]]:
        asked.append(np.asarray(idx))
        return [{"group": str(group[i])} for i in idx]

    full = describe_job(w, losses, read_metadata=read, n_bootstrap=0)
    assert asked[-1].size == n
    sampled = describe_job(w, losses, read_metadata=read, n_bootstrap=0, metadata_limit=1000, seed=1)
    assert asked[-1].size == 1000 and np.all(np.diff(asked[-1]) > 0)
    assert sampled[0]["metadata_rows"] == 1000
    exact = full[0]["metadata"]["group"]["over_represented"][0]
    est = sampled[0]["metadata"]["group"]["over_represented"][0]
    assert exact["value"] == est["value"] == "rare"
    assert exact["share_inside"] == pytest.approx(1.0) and est["share_inside"] == pytest.approx(1.0)
    assert est["share_overall"] == pytest.approx(exact["share_overall"], abs=0.03)
    assert describe_job(w, losses, read_metadata=lambda idx: None, n_bootstrap=0)[0]["metadata"] == {}


def test_significance_uses_region_scores() -> None:
    regions = [{"weighted_loss": 5.0, "objective": "max_loss"}, {"weighted_loss": 1.0, "objective": "max_loss"}]
    null_scores = iter([2.0, 3.0, 0.5])
    p = significance(lambda lo: next(null_scores), np.arange(10.0), regions, 3, seed=0)
    assert p == [1 / 4, 3 / 4]


def test_rerun_best_runs_the_real_engine_with_one_spotlight_on_shuffled_losses() -> None:
    pytest.importorskip("torch")
    from spotlight.contract.params import SearchParams
    from worker.describe import rerun_best
    from worker.engine import search

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    losses = (rng.random(300) + 3.0 * (x[:, 0] > 1.3)).astype(np.float32)
    params = SearchParams(n_spotlights=3, steps=40, restarts=2, spotlight_size=0.05, device="cpu", n_permutations=5)
    found = search(x, losses, params)
    regions = [r.to_dict() for r in found.regions]
    p = significance(rerun_best(search, x, params), losses, regions, 9, seed=0)
    assert len(p) == 3
    assert p[0] == pytest.approx(0.1)  # the planted pocket beats every shuffled run: the smallest p for 9 runs


def test_grouped_bootstrap_on_many_rows_matches_the_ratio_estimators_standard_error() -> None:
    rng = np.random.default_rng(6)
    n = 60_000  # well past BOOTSTRAP_UNITS: rows are drawn in random groups
    k = np.exp(-rng.chisquare(8, n) / 4)
    losses = rng.exponential(1.0, n)
    L = float(k @ losses / k.sum())
    se = math.sqrt(float((k**2 * (losses - L) ** 2).sum())) / float(k.sum())  # linearisation (delta method)
    lo, hi = bootstrap_interval(k, losses, n_bootstrap=800, seed=0)
    assert lo < L < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_every_key_a_description_holds_has_a_field_in_the_region_record() -> None:
    """What describe.py writes reaches the user through spotlight/contract/records.py: a key with no field there
    is refused (the worker turns that into the region's description_error), never dropped."""
    from spotlight.contract.records import RegionDescription

    rng = np.random.default_rng(0)
    n = 60
    members = np.arange(12)
    texts = [("penguin colony " if i < 12 else "") + "the rain on the hills" for i in range(n)]
    heldout = np.zeros(n, dtype=bool)
    heldout[30:] = True
    (raw,) = describe_job(
        [members],
        rng.random(n),
        labels=rng.integers(0, 3, n),
        predictions=rng.integers(0, 3, n),
        read_metadata=lambda idx: [{"camera": "a" if i < 12 else "b", "age": float(i)} for i in idx],
        read_texts=lambda idx: [texts[int(i)] for i in idx],
        heldout=heldout,
        n_bootstrap=10,
    )
    typed = RegionDescription.from_describe(raw)
    dumped = typed.model_dump(mode="json")
    for key, value in raw.items():
        name = f"in_sample_{key}" if key in ("mean_loss", "lift", "mean_loss_ci") else key
        assert name in dumped and (value is None or dumped[name] is not None), key
    assert typed.text_terms and typed.text_terms[0].term and typed.text_terms_lift_on == "heldout"
    assert typed.labels and typed.labels.over_represented[0].precision is not None
    with pytest.raises(ValueError, match="no field for"):
        RegionDescription.from_describe({**raw, "a_new_key": 1})
