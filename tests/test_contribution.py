"""Contributions: weight x loss above the floor, the order a person reads a region's members in."""

from __future__ import annotations

import numpy as np

from spotlight.contract.contribution import contributions, order_by_contribution, reference_loss


def test_contribution_is_weight_times_loss_above_the_floor() -> None:
    w = np.array([1.0, 0.5, 0.2, 0.0])
    loss = np.array([1.0, 3.0, 5.0, 9.0])
    assert reference_loss(loss) == 1.0
    assert np.allclose(contributions(w, loss), [0.0, 1.0, 0.8, 0.0])
    # min_loss: the region's "worst" examples are the lowest losses; the ceiling contributes nothing
    assert reference_loss(loss, "min_loss") == 9.0
    assert np.allclose(contributions(w, loss, "min_loss"), [8.0, 3.0, 0.8, 0.0])
    both = contributions(np.stack([w, 1 - w], 1), loss)
    assert both.shape == (4, 2) and np.allclose(both[:, 1], (1 - w) * (loss - 1.0))


def test_contributions_are_finite_and_non_negative_on_degenerate_input() -> None:
    assert np.array_equal(contributions(np.ones(3), np.full(3, 2.5)), np.zeros(3))  # equal losses
    c = contributions(np.array([1.0, np.nan, 0.5]), np.array([np.inf, 1.0, 2.0]))
    assert np.isfinite(c).all() and (c >= 0).all()
    assert reference_loss(np.array([])) == 0.0
    # a reference above some losses (e.g. a page read with another job's floor) never goes negative
    assert (contributions(np.ones(3), np.array([0.0, 1.0, 2.0]), reference=1.5) >= 0).all()


def test_order_puts_failing_members_first_ties_by_weight_then_row() -> None:
    w = np.array([0.9, 0.6, 0.3, 0.6, 0.05])
    loss = np.array([0.0, 2.0, 4.0, 2.0, 8.0])  # contributions 0, 1.2, 1.2, 1.2, 0.4
    members = np.array([0, 1, 2, 3])  # row 4 is not a member: never added
    assert order_by_contribution(members, w, loss).tolist() == [1, 3, 2, 0]
    assert order_by_contribution(np.array([], dtype=np.int64), w, loss).size == 0
