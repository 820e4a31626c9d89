"""spotlight/contract/verdict.py on small arrays: the held-out test keeps its level, sees a real effect, and Holm
corrects over a job's regions. numpy only, seconds."""

from __future__ import annotations

import numpy as np
import pytest

from spotlight.contract import verdict


def _region(rng: np.random.Generator, n: int, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Points and a gaussian region's float32 weights of them (the engine's dtype), fixed without the losses."""
    x = rng.normal(size=(n, d))
    centre = x[rng.integers(n)]
    u = ((x - centre) ** 2).sum(axis=1) * rng.uniform(0.3, 3.0)
    return x, np.exp(-0.5 * u).astype(np.float32)


@pytest.mark.parametrize("n", [300, 6000])  # exact permutations, and draws with replacement beyond EXACT_ROWS
def test_kernel_test_p_values_of_weights_chosen_without_the_losses_are_uniform(n: int) -> None:
    rng = np.random.default_rng(0)
    p = []
    for seed in range(300 if n < 1000 else 120):
        losses = rng.exponential(size=n)  # heavy-ish tail, like cross-entropy
        _, w = _region(rng, n)
        got, _ = verdict.kernel_test(losses, w, np.arange(n), seed=seed)
        assert got is not None
        p.append(got)
    p_arr = np.asarray(p, dtype=float)
    assert float(np.mean(p_arr <= 0.05)) <= 0.09  # the level holds (300 draws: +-1.3 % sd at 5 %)
    assert float(np.mean(p_arr <= 0.5)) >= 0.35 and 0.38 <= float(p_arr.mean()) <= 0.62  # not stuck at 1 either


def test_kernel_test_sees_losses_rising_toward_the_region_and_min_loss_looks_the_other_way() -> None:
    rng = np.random.default_rng(1)
    n = 500
    x = rng.normal(size=(n, 8))
    d2 = ((x - x[0]) ** 2).sum(axis=1)
    radius = np.sort(d2)[7]  # a ball region: 1 on the 8 nearest rows, decaying beyond
    w = np.exp(-0.5 * 10 * np.maximum(0.0, d2 / radius - 1)).astype(np.float32)
    losses = rng.exponential(size=n)
    nearest = np.argsort(-w)[:8]  # a weak spot of those 8 held-out rows, 2 loss sd up
    losses[nearest] += 2.0
    p, draws = verdict.kernel_test(losses, w, np.arange(n))
    assert p is not None and p <= 2 / (draws + 1)
    other_way, _ = verdict.kernel_test(losses, w, np.arange(n), objective="min_loss")
    assert other_way is not None and other_way > 0.5
    # the same 8 rows are a sample the member-set figures measure
    figures = verdict.holdout_test(losses, nearest, np.arange(n), w)
    assert figures.p_value == p and figures.lift is not None and figures.lift > 2
    assert figures.mean_loss_ci is not None and figures.mean_loss_ci[0] < figures.mean_loss < figures.mean_loss_ci[1]
    # only held-out rows count: the same weights with the weak spot outside the held-out rows see nothing
    rest = np.setdiff1d(np.arange(n), nearest)
    p_rest, _ = verdict.kernel_test(losses, w, rest)
    assert p_rest is not None and p_rest > 0.05


def test_kernel_test_without_weight_on_held_out_rows_has_no_p_value() -> None:
    w = np.zeros(50, dtype=np.float32)
    w[:5] = 1.0
    assert verdict.kernel_test(np.ones(50), w, np.arange(10, 50)) == (None, 0)
    figures = verdict.holdout_test(np.ones(50), np.empty(0, dtype=np.int64), np.arange(10, 50), w)
    assert figures.p_value is None and figures.n_members == 0 and figures.holdout_mean_loss == 1.0


def test_a_region_without_held_out_members_is_still_tested_over_every_held_out_row() -> None:
    """In many dimensions no held-out row may reach the member threshold; the verdict must not go blind."""
    rng = np.random.default_rng(2)
    n = 400
    x = rng.normal(size=(n, 16))
    d2 = ((x - x[0]) ** 2).sum(axis=1)
    w = np.exp(-0.5 * 4 * d2 / np.sort(d2)[10]).astype(np.float32)  # falls fast: the nearest rows dominate
    losses = rng.exponential(size=n)
    losses[np.argsort(d2)[:10]] += 3.0
    figures = verdict.holdout_test(losses, np.empty(0, dtype=np.int64), np.arange(n), w)
    assert figures.n_members == 0 and figures.mean_loss is None and figures.lift is None
    assert figures.p_value is not None and figures.p_value < 0.01


def test_holm_adjusts_in_order_and_skips_untested_regions() -> None:
    assert verdict.holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert verdict.holm([]) == []


def test_too_few_rows_names_the_size_that_would_do() -> None:
    assert verdict.too_few_rows(10, 0.02) is not None
    why = verdict.too_few_rows(300, 0.02)
    assert why is not None and "spotlight_size >= 0.034" in why
    assert verdict.too_few_rows(2000, 0.02) is None and verdict.too_few_rows(300, 12) is None


def test_the_bootstraps_poisson_counts_follow_poisson_1() -> None:
    """`poisson1` (a table of the inverse CDF, the CDF itself where a cell holds one of its steps) draws
    Poisson(1): a chi-square over the counts 0..6 and the tail, and the draws right at a CDF step
    land on the step's right side (an exact inverse CDF, not a rounded table)."""
    from math import exp, factorial

    counts = verdict.poisson1(np.random.default_rng(4), (1000, 1000)).astype(np.int64).ravel()
    pmf = np.array([exp(-1.0) / factorial(k) for k in range(7)])
    expected = np.append(pmf, 1.0 - pmf.sum()) * counts.size
    observed = np.append(np.bincount(counts, minlength=7)[:7], np.count_nonzero(counts >= 7))
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 7 + 5 * np.sqrt(14)  # 7 degrees of freedom, about 5 sd above the mean

    class AtTheSteps:
        """A generator whose uniforms sit on both sides of the first CDF steps."""

        def random(self, shape: tuple[int, int]) -> np.ndarray:
            cdf = np.cumsum(pmf[:3])
            u = np.array([np.nextafter(cdf[0], 0), cdf[0], np.nextafter(cdf[1], 0), cdf[1], 0.0, 0.9999999])
            return u.reshape(shape)

    drawn = verdict.poisson1(AtTheSteps(), (1, 6)).ravel().tolist()  # type: ignore[arg-type]
    assert drawn == [0.0, 1.0, 1.0, 2.0, 0.0, 10.0]  # 1 - 1e-7 is beyond P(X <= 9)
