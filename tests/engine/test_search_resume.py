"""A search that yields between regions and is resumed finds what an uninterrupted one finds.

The worker gives a job's worker to another tenant at region boundaries (worker/task.py): the
engine raises `SearchYielded` with the regions so far, and a later call resumes from them. What
must not change is what the objective defines: each region's objective value (kernel-weighted
loss), its total weight and feasibility, and its member set.
"""

from __future__ import annotations

import numpy as np
import pytest

from spotlight.contract.members import member_set
from worker.engine import Region, SearchResult, SearchResume, SearchYielded, search

from .conftest import planted_problem

PARAMS = {"device": "cpu", "steps": 120, "restarts": 3, "n_spotlights": 3, "spotlight_size": 0.05}


def assert_same_regions(a: SearchResult, b: SearchResult) -> None:
    assert len(a.regions) == len(b.regions)
    for k, (ra, rb) in enumerate(zip(a.regions, b.regions, strict=True)):
        assert ra.index == rb.index == k
        assert ra.weighted_loss == pytest.approx(rb.weighted_loss, rel=1e-5, abs=1e-6)
        assert ra.total_weight == pytest.approx(rb.total_weight, rel=1e-4, abs=1e-3)
        assert ra.feasible == rb.feasible
        members_a = member_set(a.weights[:, k], ra.kernel, None)
        members_b = member_set(b.weights[:, k], rb.kernel, None)
        assert set(members_a.tolist()) == set(members_b.tolist())
        np.testing.assert_allclose(a.weights[:, k], b.weights[:, k], atol=1e-4)


def yield_after(count: int):
    """A should_yield that says yes at the `count`-th region boundary it is asked about."""
    asked = []

    def should_yield() -> bool:
        asked.append(1)
        return len(asked) == count

    return should_yield


@pytest.mark.parametrize(("kernel", "held_out"), [("flat", False), ("gaussian", False), ("ball", True)])
def test_yield_after_each_region_and_resume_gives_the_uninterrupted_regions(kernel: str, held_out: bool) -> None:
    """`held_out`: half the rows at weight 0, as a job searches (they are left out of the search)."""
    x, loss, _ = planted_problem(n=1500, d=6, seed=3)
    params = {**PARAMS, "kernel": kernel, "shape": "diagonal" if kernel == "flat" else "spherical"}
    w = (np.random.default_rng(1).random(len(x)) < 0.5).astype(float) if held_out else None
    whole = search(x, loss, params, sample_weights=w)

    resume: SearchResume | None = None
    yields = 0
    while True:
        try:
            result = search(x, loss, params, sample_weights=w, resume=resume, should_yield=lambda: True)
            break
        except SearchYielded as exc:
            yields += 1
            partial = exc.partial
            assert len(partial.regions) == yields and partial.weights.shape == (len(x), yields)
            resume = SearchResume.of(partial)
    assert yields == PARAMS["n_spotlights"] - 1  # never after the last region: nothing would be left to give up
    assert_same_regions(result, whole)


def test_resume_from_regions_that_went_through_json() -> None:
    """The worker stores the partial regions as JSON (Region.to_dict) and the weights as .npy."""
    x, loss, _ = planted_problem(n=1200, d=5, seed=4)
    params = {**PARAMS, "shape": "diagonal", "pca_components": 4}
    whole = search(x, loss, params)
    with pytest.raises(SearchYielded) as caught:
        search(x, loss, params, should_yield=yield_after(2))
    partial = caught.value.partial
    stored = [Region.from_dict(r.to_dict()) for r in partial.regions]
    assert [r.to_dict() for r in stored] == [r.to_dict() for r in partial.regions]
    result = search(x, loss, params, resume=SearchResume(stored, partial.weights.copy()))
    assert_same_regions(result, whole)
    assert result.regions[0].to_dict() == whole.regions[0].to_dict()  # taken over as stored, not recomputed
    # the regions taken over were found along the first run's PCA axes: the resumed run reports the same ones
    assert result.basis is not None and np.array_equal(result.basis, partial.basis)


def test_a_resume_that_does_not_fit_the_problem_is_refused() -> None:
    x, loss, _ = planted_problem(n=400, d=4, seed=5)
    with pytest.raises(SearchYielded) as caught:
        search(x, loss, PARAMS, should_yield=yield_after(1))
    partial = caught.value.partial
    with pytest.raises(ValueError, match="cannot resume"):
        search(x[:300], loss[:300], PARAMS, resume=SearchResume.of(partial))
    with pytest.raises(ValueError, match="cannot resume"):
        search(x, loss, {**PARAMS, "n_spotlights": 1}, resume=SearchResume(partial.regions * 2, partial.weights))


def test_should_yield_is_asked_only_between_regions() -> None:
    x, loss, _ = planted_problem(n=400, d=4, seed=6)
    asked = []
    result = search(x, loss, PARAMS, should_yield=lambda: asked.append(1) or False)
    assert len(result.regions) == 3 and len(asked) == 2
