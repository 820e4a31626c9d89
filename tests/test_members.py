"""The member-set rule (spotlight/contract/members.py) and the overlap of regions, on constructed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spotlight.contract.members import (
    effective_size,
    member_min_weight,
    member_set,
    members_at_or_above,
    overlap_matrix,
    overlap_share,
    overlaps_with_earlier,
)


def test_flat_kernel_members_are_its_support_heaviest_first_ties_by_row() -> None:
    w = np.array([0.0, 0.2, 0.9, 0.2, 0.0, 0.05, 1.0])
    assert member_set(w, "flat").tolist() == [6, 2, 1, 3, 5]


def test_gaussian_members_are_the_heaviest_rows_that_count_as_many_examples_as_the_region() -> None:
    rng = np.random.default_rng(0)
    w = np.exp(-rng.exponential(3.0, size=1000))  # never 0: the 1e-3 floor would keep most rows
    s = effective_size(w)
    members = member_set(w, "gaussian")
    assert members.size == math.ceil(s) < 0.5 * int((w >= 1e-3).sum())
    assert members.tolist() == np.argsort(-w, kind="stable")[: members.size].tolist()
    assert w[members].min() >= np.delete(w, members).max()  # a level set: no outside row is heavier


def test_mass_a_rounding_error_above_an_integer_does_not_add_a_member() -> None:
    w = np.zeros(100)
    w[:40] = 1.0
    w[40:] = 1e-10  # sum 40.000000006
    assert member_set(w, "gaussian").tolist() == list(range(40))
    w[40] = 0.5  # sum 40.5: 41 rows
    assert member_set(w, "gaussian").size == 41


def test_sample_weights_count_and_a_zero_count_is_never_a_member() -> None:
    w = np.array([1.0, 0.9, 0.8, 0.5, 0.5])
    counts = np.array([3.0, 0.0, 1.0, 1.0, 1.0])  # S = 3 + 0.8 + 0.5 + 0.5 = 4.8
    assert effective_size(w, counts) == pytest.approx(4.8)
    # heaviest with a count: row 0 (3), row 2 (4), row 3 (5 >= 4.8)
    assert member_set(w, "gaussian", counts).tolist() == [0, 2, 3]
    assert member_set(w, "flat", counts).tolist() == [0, 2, 3, 4]


@pytest.mark.parametrize("kernel", ["gaussian", "flat"])
def test_degenerate_weights(kernel: str) -> None:
    assert member_set(np.zeros(5), kernel).size == 0
    assert member_set(np.array([], dtype=np.float32), kernel).size == 0
    assert member_set(np.array([np.nan, np.inf, -1.0, 0.0]), kernel).size == 0
    tiny = np.array([0.0, 1e-300, 0.0])  # a region that counts almost nothing still has its heaviest row
    assert member_set(tiny, kernel).tolist() == [1]
    assert member_set(np.ones(3, dtype=np.float32), kernel).tolist() == [0, 1, 2]


def test_overlap_is_the_share_of_the_later_regions_members_already_shown() -> None:
    a = np.arange(0, 10)  # rows 0..9
    b = np.arange(5, 25)  # 20 rows, 5 of them in a
    c = np.array([100, 101])  # disjoint
    empty = np.array([], dtype=np.int64)
    assert overlap_share(b, a) == pytest.approx(5 / 20) and overlap_share(a, b) == pytest.approx(5 / 10)
    assert overlap_share(empty, a) == 0.0
    out = overlaps_with_earlier([a, b, c, empty, a[:4]])
    assert out[0] == []
    assert out[1] == [{"region": 0, "shared": 5, "share": 0.25}]
    assert out[2] == [{"region": 0, "shared": 0, "share": 0.0}, {"region": 1, "shared": 0, "share": 0.0}]
    assert [e["share"] for e in out[3]] == [0.0, 0.0, 0.0]
    assert out[4] == [
        {"region": 0, "shared": 4, "share": 1.0},
        {"region": 1, "shared": 0, "share": 0.0},
        {"region": 2, "shared": 0, "share": 0.0},
        {"region": 3, "shared": 0, "share": 0.0},
    ]
    m = overlap_matrix([a, b, c])
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1.0)
    assert m[1, 0] == pytest.approx(0.25) and m[0, 1] == pytest.approx(0.5) and m[2, :2].sum() == 0


# ----- other data (the score route): the threshold a region drew on its own data -----
def test_other_data_uses_the_threshold_the_region_drew_on_its_own_data() -> None:
    rng = np.random.default_rng(3)
    w = np.exp(-0.5 * rng.random(200) * 12)  # gaussian weights in (0, 1]
    members = member_set(w, "gaussian")
    t = member_min_weight(w, "gaussian", members)
    assert t == pytest.approx(float(w[members].min()))
    # the region's own rows score exactly as its member set, in the same order
    assert members_at_or_above(w, t).tolist() == members.tolist()
    # a new row at least as deep as the shallowest member is a member; a shallower one is not
    new = np.array([t, t * 0.5, 1.0, 0.0, np.nan, t * (1 - 1e-6)])
    assert members_at_or_above(new, t).tolist() == [2, 0, 5]


def test_the_threshold_survives_float32_rounding_of_the_stored_weights() -> None:
    rng = np.random.default_rng(4)
    w64 = np.exp(-0.5 * rng.random(500) * 9)
    stored = w64.astype(np.float32)  # what weights.npy holds
    members = member_set(stored, "gaussian")
    t = member_min_weight(stored, "gaussian", members)
    assert set(members_at_or_above(w64, t).tolist()) >= set(members.tolist())


def test_flat_other_data_members_are_the_support_and_an_empty_region_has_none() -> None:
    w = np.array([0.0, 0.3, 1.0, 0.01])
    assert member_min_weight(w, "flat", member_set(w, "flat")) == 0.0
    assert members_at_or_above(np.array([0.0, 1e-9, 0.5, -0.1]), 0.0).tolist() == [2, 1]
    assert member_min_weight(np.zeros(4), "gaussian", member_set(np.zeros(4), "gaussian")) is None
    assert members_at_or_above(np.ones(3), None).size == 0
