"""spotlight/verdict.py on small arrays: the held-out test keeps its level, sees a real effect, and Holm
corrects over a job's regions. numpy only, seconds."""

from __future__ import annotations

import numpy as np
import pytest

from spotlight import verdict


def test_held_out_p_values_of_sets_chosen_without_the_losses_are_uniform() -> None:
    rng = np.random.default_rng(0)
    n = 400
    held = np.arange(n)
    p = []
    for seed in range(300):
        losses = rng.exponential(size=n)  # heavy-ish tail, like cross-entropy
        members = rng.choice(n, size=int(rng.integers(3, 30)), replace=False)
        p.append(verdict.holdout_test(losses, members, held, seed=seed).p_value)
    p_arr = np.asarray(p, dtype=float)
    assert 0.02 <= float(np.mean(p_arr <= 0.05)) <= 0.09  # the level holds (300 draws: +-2.5 % sd)
    assert 0.42 <= float(p_arr.mean()) <= 0.58


def test_a_real_effect_is_seen_and_min_loss_looks_the_other_way() -> None:
    rng = np.random.default_rng(1)
    losses = rng.exponential(size=500)
    members = np.arange(20)
    losses[members] += 2.0
    figures = verdict.holdout_test(losses, members, np.arange(500))
    assert figures.p_value is not None and figures.p_value < 1e-3 and figures.lift is not None and figures.lift > 2
    assert figures.mean_loss_ci is not None and figures.mean_loss_ci[0] < figures.mean_loss < figures.mean_loss_ci[1]
    other_way = verdict.holdout_test(losses, members, np.arange(500), objective="min_loss")
    assert other_way.p_value is not None and other_way.p_value > 0.9


def test_holm_adjusts_in_order_and_skips_untested_regions() -> None:
    assert verdict.holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert verdict.holm([]) == []


def test_too_few_rows_names_the_size_that_would_do() -> None:
    assert verdict.too_few_rows(10, 0.02) is not None
    why = verdict.too_few_rows(300, 0.02)
    assert why is not None and "spotlight_size >= 0.034" in why
    assert verdict.too_few_rows(2000, 0.02) is None and verdict.too_few_rows(300, 12) is None


@pytest.mark.parametrize("m", [3, 7])
def test_the_random_sets_of_the_held_out_test_are_uniform_subsets(m: int) -> None:
    """Floyd's sampler (and its complement, m > P/2): each m-subset of the rows comes out equally
    often. Row i carries 2**i, so a draw's sum names its subset exactly."""
    from math import comb

    size, draws = 10, 60_000
    values = 2.0 ** np.arange(size)
    sums, weights = verdict._subset_sums(np.random.default_rng(3), values, np.ones(size), m, draws)
    assert np.all(weights == m)
    subsets = sums.astype(np.int64)
    assert all(bin(s).count("1") == m for s in np.unique(subsets))
    counts = np.bincount(subsets, minlength=2**size)[[s for s in range(2**size) if bin(s).count("1") == m]]
    expected = draws / comb(size, m)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = comb(size, m) - 1
    assert counts.size == comb(size, m) and chi2 < dof + 5 * np.sqrt(2 * dof)  # about 5 sd above its mean


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
