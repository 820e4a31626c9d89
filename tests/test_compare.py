"""spotlight/contract/compare.py without a server: statuses on planted losses, the null, row matching."""

from __future__ import annotations

import numpy as np
import pytest

from spotlight.contract import verdict
from spotlight.contract.compare import CompareRefused, JobRows, compare_jobs, match_rows

N = 2000


def _job(
    name: str, losses: np.ndarray, members: list[np.ndarray], p: float = 0.01, held_out: np.ndarray | None = None
) -> JobRows:
    ids = [f"r{i}" for i in range(N)]
    regions = [{"index": k, "p_value": p} for k in range(len(members))]
    return JobRows(name, ids, losses, regions, members, held_out)


def _indicator(rows: np.ndarray) -> np.ndarray:
    """Kernel weights of a region that is its member set: 1 on its rows, 0 elsewhere."""
    w = np.zeros(N)
    w[rows] = 1.0
    return w


def _verdicted(name: str, losses: np.ndarray, members: list[np.ndarray], held_out: np.ndarray) -> JobRows:
    """A job as the worker records it: each region's verdict on the held-out rows (spotlight/contract/verdict.py), for a
    region whose kernel is its member set."""
    tests = [
        verdict.holdout_test(losses, np.intersect1d(m, held_out), held_out, _indicator(m), seed=k)
        for k, m in enumerate(members)
    ]
    adjusted = verdict.holm([t.p_value for t in tests])
    regions = [{"index": k, "p_value": p, "significant": p is not None and p <= 0.05} for k, p in enumerate(adjusted)]
    return JobRows(name, [f"r{i}" for i in range(N)], losses, regions, members, held_out)


def _heavy(rng: np.random.Generator) -> np.ndarray:
    """Cross-entropy-like losses: mostly small, a few rows enormous."""
    return rng.exponential(0.3, N) + np.where(rng.random(N) < 0.03, rng.exponential(8.0, N), 0.0)


def test_planted_fixed_new_and_unchanged_weak_spots_are_classed_on_untouched_rows() -> None:
    """Three planted weak spots on heavy-tailed losses, each job with its own held-out half: the
    one the new model fixed is fixed, the one it opened is new, the one both share is still there,
    and every figure comes from the members the origin job's search never used."""
    fixed, shared, opened = np.arange(0, 80), np.arange(80, 160), np.arange(160, 240)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        a, b = _heavy(rng), _heavy(rng)
        a[fixed] += rng.exponential(2.0, fixed.size)
        a[shared] += rng.exponential(2.0, shared.size)
        b[shared] += rng.exponential(2.0, shared.size)
        b[opened] += rng.exponential(2.0, opened.size)
        held_a, held_b = rng.permutation(N)[: N // 2], rng.permutation(N)[: N // 2]
        result = compare_jobs(
            _verdicted("a", a, [fixed, shared], held_a), _verdicted("b", b, [shared, opened], held_b), seed=seed
        )
        by = {(s["old_region"], s["new_region"]): s for s in result["weak_spots"]}
        assert by[(0, None)]["status"] == "fixed", (seed, by[(0, None)])
        assert by[(1, 0)]["status"] == "still_there"
        assert by[(None, 1)]["status"] == "new" and by[(None, 1)]["significant"] is True
        spot = by[(0, None)]
        assert spot["tested_on"] == "held_out_members"
        assert spot["tested_members"] == np.isin(fixed, held_a).sum() < spot["members"]
        assert spot["before"]["selected"] is False and spot["after"]["selected"] is False
        assert spot["before"]["rank"] > 0.7 > 0.6 > spot["after"]["rank"]


def test_a_retrain_with_the_same_weak_spots_shows_nothing_fixed_or_new() -> None:
    """Both trainings fail on the same rows (heavy-tailed noise on top): every weak spot still there,
    and the regions that chased noise in either job (with the verdict their job gives them) are never
    called fixed or new."""
    spots = [np.arange(0, 60), np.arange(60, 120)]
    for seed in range(6):
        rng = np.random.default_rng(seed)
        shared = _heavy(rng)  # what makes a row hard for this model, whichever training
        a = shared + _heavy(rng)
        b = shared + _heavy(rng)
        for s in spots:
            a[s] += 2
            b[s] += 2
        held_a, held_b = rng.permutation(N)[: N // 2], rng.permutation(N)[: N // 2]
        noise_a, noise_b = _chased(a, held_a), _chased(b, held_b)
        result = compare_jobs(
            _verdicted("a", a, [*spots, noise_a], held_a), _verdicted("b", b, [*spots, noise_b], held_b), seed=seed
        )
        statuses = [s["status"] for s in result["weak_spots"]]
        assert statuses.count("still_there") >= 2
        assert "fixed" not in statuses and "new" not in statuses, (seed, statuses)


def _chased(losses: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    """A region a search carves out of noise: the 40 highest losses among the rows it searched, and
    40 held-out rows its kernel happens to cover (chosen without their losses)."""
    searched = np.setdiff1d(np.arange(N), held_out)
    top = searched[np.argsort(-losses[searched])[:40]]
    return np.concatenate([top, held_out[:40]])


def test_a_region_chosen_for_its_losses_regresses_and_is_not_called_fixed() -> None:
    """Selection: a region picked because its rows lose most under the old model, on losses with no
    weak spot at all, looks fixed under any retrain when its selected rows are read; read on the rows
    the search never used, it is no weak spot of the old model either: unconfirmed."""
    rng = np.random.default_rng(3)
    a, b = _heavy(rng), _heavy(rng)
    held = rng.permutation(N)[: N // 2]
    chased = _chased(a, held)
    selected = compare_jobs(_job("a", a, [chased]), _job("b", b, []))["weak_spots"][0]
    honest = compare_jobs(_job("a", a, [chased], held_out=held), _job("b", b, []))["weak_spots"][0]
    assert selected["tested_on"] == "all_members" and selected["before"]["selected"] is True
    assert selected["status"] == "fixed"  # what the selected rows alone would say
    assert honest["tested_on"] == "held_out_members" and honest["tested_members"] == 40
    assert honest["status"] == "unconfirmed"


def test_one_huge_loss_does_not_hide_a_fix() -> None:
    """Nine of ten members now lose nothing, one loses 30: the mean's interval is wide, the ranks' is not."""
    rng = np.random.default_rng(0)
    a, b = rng.exponential(1.0, N), rng.exponential(1.0, N)
    a[:20] += 5
    b[:20] = rng.exponential(0.05, 20)
    b[0] = 30.0
    (spot,) = compare_jobs(_job("a", a, [np.arange(20)]), _job("b", b, []))["weak_spots"]
    assert spot["after"]["lift_ci"][1] >= 2 and spot["after"]["rank_ci"][1] < 0.3
    assert spot["status"] == "fixed"


def test_too_few_untouched_members_are_unclear_not_fixed() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.exponential(1.0, N), rng.exponential(1.0, N)
    a[:40] += 5
    held = np.concatenate([[0, 1], np.arange(100, 1000)])  # two of the region's members are held out
    (spot,) = compare_jobs(_job("a", a, [np.arange(40)], held_out=held), _job("b", b, []))["weak_spots"]
    assert spot["tested_members"] == 2 and spot["status"] in ("unclear", "unconfirmed")


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


def test_a_new_weak_spot_diluted_in_its_region_is_still_new() -> None:
    """bench/compare's misses of "new" (issue 24) are the search's, not the comparison's: there v2's
    region holds the planted rows (heavy-ink 7s) at 20-47 %, the rest rows the old model got right
    (lighter 7s, 1s) that the new one fails less badly or not at all. Such a region of the new job,
    30 % planted, is classed new and established — whether the other 70 % are worse under the new
    model (the lighter 7s) or typical there (the 1s)."""
    for seed in range(6):
        rng = np.random.default_rng(seed)
        a, b = _heavy(rng), _heavy(rng)
        region = np.arange(0, 200)
        planted, rest = region[:60], region[60:]
        a[region] *= 0.3  # a class the old model gets right
        b[planted] += rng.exponential(3.0, planted.size)  # the rows the new model now fails
        if seed % 2:
            b[rest] += rng.exponential(0.5, rest.size)  # the neighbours, worse but less so
        held_a, held_b = rng.permutation(N)[: N // 2], rng.permutation(N)[: N // 2]
        result = compare_jobs(_verdicted("a", a, [], held_a), _verdicted("b", b, [region], held_b), seed=seed)
        (spot,) = result["weak_spots"]
        assert spot["status"] == "new" and spot["significant"] is True, (seed, spot)
        assert spot["before"]["rank"] < 0.45 and spot["after"]["rank"] > spot["before"]["rank"] + 0.2
