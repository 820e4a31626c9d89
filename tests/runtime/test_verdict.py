"""The verdict end to end in the worker's task: a planted weak spot is significant, noise is not, and a
dataset too small for a verdict says so. Real Redis, a temporary store, the engine on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spotlight.client.gate import parse
from spotlight.contract.protocol import REGIONS_FILE, job_file
from spotlight.contract.records import RegionsDocument
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore
from worker.task import execute

from .helpers import enqueue, make_spec, write_dataset

PARAMS = {"n_spotlights": 3, "steps": 60, "restarts": 2, "spotlight_size": 0.1, "device": "cpu"}


@pytest.fixture
def settings(store_dir: Path, redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, store_url=str(store_dir))


@pytest.fixture
def store(store_dir: Path) -> ArtifactStore:
    return ArtifactStore(str(store_dir))


def _run(store: ArtifactStore, settings: Settings, redis_url: str, params: dict, **dataset: object) -> RegionsDocument:
    spec = make_spec(write_dataset(store, **dataset), params)  # type: ignore[arg-type]
    assert execute(spec, enqueue(redis_url, spec, settings), settings, store)["status"] == "finished"
    return RegionsDocument.model_validate(store.read_json(job_file(spec.job_id, REGIONS_FILE)))


def test_a_planted_weak_spot_is_significant_on_rows_the_search_never_saw(settings, store, redis_url) -> None:
    doc = _run(store, settings, redis_url, PARAMS, n=600)
    first = doc.regions[0]
    assert doc.weak_spot_found and doc.tested and first.significant
    assert first.verdict is not None and first.verdict.n_holdout_rows == 300 and first.n_holdout_members >= 10
    assert first.p_value is not None and first.p_value <= 0.05 and first.lift is not None and first.lift > 2
    # the kernel-weighted figure is the search's own, in-sample; the honest one is measured held out
    assert first.weighted_lift != first.lift
    gate = parse("significant and lift > 1.5")
    assert any(gate.matches(r.model_dump(mode="json")) for r in doc.regions)  # the gate fails the build


def test_noise_is_not_a_finding(settings, store, redis_url) -> None:
    # a seeded null job; at level 0.05 about 1 in 20 of them raises an alarm (bench/trust.py measures the rate)
    doc = _run(store, settings, redis_url, PARAMS, n=600, planted=False, seed=5)
    assert not doc.weak_spot_found and doc.summary.startswith("No weak spot found")
    assert not any(r.significant for r in doc.regions) and len(doc.regions) == 3  # listed, marked as noise
    gate = parse("significant and lift > 1.5")
    assert not any(gate.matches(r.model_dump(mode="json")) for r in doc.regions)  # the gate passes
    for r in doc.regions:  # the place is the members': their mean, and a member row to open
        assert r.member_mean is not None and r.medoid is not None


def test_too_few_rows_for_a_verdict_is_said_not_hidden(settings, store, redis_url) -> None:
    doc = _run(store, settings, redis_url, {**PARAMS, "spotlight_size": 0.02}, n=60)
    assert not doc.tested and not doc.weak_spot_found and doc.summary.startswith("No verdict")
    assert "spotlight_size" in doc.summary  # what to change
    assert all(not r.significant and r.verdict is None for r in doc.regions)


def test_permutations_act_where_there_is_no_verdict(settings, store, redis_url) -> None:
    """n_permutations is not idle on a dataset too small for the verdict (the API accepts it there): the
    reruns go on every row, and each region gets its permutation p-value."""
    params = {**PARAMS, "spotlight_size": 0.02, "n_spotlights": 2, "n_permutations": 3}
    doc = _run(store, settings, redis_url, params, n=60)
    assert not doc.tested
    assert all(r.permutation_p_value is not None and 0.25 <= r.permutation_p_value <= 1 for r in doc.regions)


def test_the_verdict_is_the_same_on_a_second_run() -> None:
    """The split is seeded by the job's seed: a rerun tests the same held-out rows."""
    from spotlight.contract import verdict

    a, b = verdict.split(101, 7), verdict.split(101, 7)
    assert np.array_equal(a.held_out, b.held_out) and a.held_out.size == 50 and a.searched.size == 51
    assert not np.intersect1d(a.held_out, a.searched).size
