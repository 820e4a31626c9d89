"""The permutation test stops between two shuffles and goes on later (worker/describe.py NullSoFar):
stopped anywhere, once or at every shuffle, and resumed through a JSON round trip (as the worker's
checkpoint stores it), it scores the same shuffles as an uninterrupted run, so the p-values are equal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worker.describe import NullSoFar, PermutationsYielded, permutation_null, permutation_test

LOSSES = np.random.default_rng(0).exponential(size=50)
WEIGHTS = np.linspace(0.0, 1.0, 50)


def score(shuffled: np.ndarray) -> float:
    """A deterministic stand-in for the search: the loss on a fixed region (depends on the order)."""
    return float(WEIGHTS @ shuffled / WEIGHTS.sum())


def _yield_after(counts: set[int]):
    calls = {"n": 0}

    def should_yield() -> bool:
        calls["n"] += 1
        return calls["n"] in counts

    return should_yield


@pytest.mark.parametrize("stops", [{1}, {3}, {1, 2, 3, 4, 5, 6}])
def test_a_stopped_and_resumed_test_scores_the_shuffles_of_an_uninterrupted_one(stops: set[int]) -> None:
    whole = permutation_null(score, LOSSES, 8, seed=3)
    should_yield = _yield_after(stops)
    resume: NullSoFar | None = None
    runs = 0
    while True:
        runs += 1
        try:
            null = permutation_null(score, LOSSES, 8, seed=3, resume=resume, should_yield=should_yield)
            break
        except PermutationsYielded as exc:
            assert exc.done.scores == whole[: len(exc.done.scores)].tolist()
            resume = NullSoFar.from_dict(json.loads(json.dumps(exc.done.to_dict())))  # as the checkpoint stores it
    assert runs == len(stops) + 1
    assert np.array_equal(null, whole)
    observed = [float(np.median(whole))]
    assert permutation_test(score, LOSSES, 8, 3, observed=observed, resume=resume) == permutation_test(
        score, LOSSES, 8, 3, observed=observed
    )


def test_no_stop_after_the_last_shuffle_and_none_without_a_question() -> None:
    asked = {"n": 0}

    def never() -> bool:
        asked["n"] += 1
        return False

    assert np.array_equal(permutation_null(score, LOSSES, 4, should_yield=never), permutation_null(score, LOSSES, 4))
    assert asked["n"] == 3  # after shuffles 1-3: after the 4th the test is done, nothing to give way for
    with pytest.raises(ValueError):
        permutation_null(score, LOSSES, 2, resume=NullSoFar(scores=[0.0] * 3, rng_state={}))
