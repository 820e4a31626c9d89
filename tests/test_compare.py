"""spotlight/compare.py without a server: statuses on planted losses, the null, row matching."""

from __future__ import annotations

import numpy as np
import pytest

from spotlight.compare import CompareRefused, JobRows, compare_jobs, match_rows

N = 2000


def _job(name: str, losses: np.ndarray, members: list[np.ndarray], p: float = 0.01) -> JobRows:
    ids = [f"r{i}" for i in range(N)]
    return JobRows(name, ids, losses, [{"index": k, "p_value": p} for k in range(len(members))], members)


def test_a_retrain_with_the_same_weak_spots_shows_nothing_fixed_or_new() -> None:
    """Both trainings fail on the same rows (heavy-tailed noise on top): every weak spot still there,
    and the regions that chased noise in either job are never called fixed or new."""
    spots = [np.arange(0, 60), np.arange(60, 120)]
    for seed in range(20):
        rng = np.random.default_rng(seed)
        shared = rng.exponential(1.0, N)  # what makes a row hard for this model, whichever training
        a = shared + rng.exponential(0.5, N)
        b = shared + rng.exponential(0.5, N)
        for s in spots:
            a[s] += 2
            b[s] += 2
        noise_a, noise_b = np.argsort(-a)[200:260], np.argsort(-b)[300:360]  # mildly high, chosen on its own job
        result = compare_jobs(_job("a", a, [*spots, noise_a]), _job("b", b, [*spots, noise_b]), seed=seed)
        statuses = [s["status"] for s in result["weak_spots"]]
        assert statuses.count("still_there") >= 2
        assert "fixed" not in statuses and "new" not in statuses, (seed, statuses)


def test_a_wide_interval_is_unclear_not_fixed() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.exponential(1.0, N), rng.exponential(1.0, N)
    a[:10] += 5
    b[:10] = rng.exponential(1.0, 10) * np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 30])  # one huge loss among ten
    (spot,) = compare_jobs(_job("a", a, [np.arange(10)]), _job("b", b, []))["weak_spots"]
    assert spot["after"]["lift_ci"][1] >= 2 and spot["status"] == "unclear"


def test_row_matching_refuses_missing_repeated_and_mixed_ids() -> None:
    with pytest.raises(CompareRefused, match="no ids"):
        match_rows(None, ["a"] * 40)
    with pytest.raises(CompareRefused, match="repeat 'x'"):
        match_rows(["x", "x"] + [f"r{i}" for i in range(40)], [f"r{i}" for i in range(40)])
    with pytest.raises(CompareRefused, match="only 0 rows"):  # "7" is not 7
        match_rows([str(i) for i in range(40)], list(range(40)))
    old, new = [f"r{i}" for i in range(50)], [f"r{i}" for i in range(10, 60)][::-1]
    m = match_rows(old, new)
    assert m.old.size == 40 and m.only_old == 10 and m.only_new == 10 and m.examples_only_old[:2] == ["r0", "r1"]
    assert [old[i] for i in m.old] == [new[j] for j in m.new]
