"""Fair share during the permutation test: a job with `n_permutations` gives its worker to another
tenant's waiting job between two shuffles, as it does between two regions, and its next run goes on
with the next shuffle of the same stream (worker/task.py, worker/checkpoint.py), so its p-values are
an uninterrupted run's. Once with a real worker (its searches held at the tests' gate, as in
test_yield.py), then with the task in-process, as RQ runs it, with what RQ does in between."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from rq import Retry

from spotlight.contract import verdict
from spotlight.contract.jobstate import JobStatus, status_of
from spotlight.contract.protocol import (
    META_PROGRESS,
    META_STARTED_AT,
    META_STATUS,
    META_YIELDED,
    REGIONS_FILE,
    JobSpec,
    job_file,
)
from spotlight.server.dataset_files import DatasetFiles
from spotlight.server.jobqueue import YieldState, enqueue_search, job_queue, large_queue
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore
from worker import checkpoint
from worker.describe import NullSoFar, p_values, permutation_null, region_score, rerun_best
from worker.engine import search
from worker.task import execute, load_inputs, searched_part

from .gate import Gate
from .helpers import QUICK, make_spec, write_dataset
from .test_yield import BurstWorker

PERMUTED = {"n_spotlights": 2, "steps": 40, "restarts": 2, "spotlight_size": 0.05, "device": "cpu", "n_permutations": 3}


@pytest.fixture
def store(store_dir: Path) -> ArtifactStore:
    return ArtifactStore(str(store_dir))


@pytest.fixture
def settings(redis_url: str, store_dir: Path, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, store_url=str(store_dir), data_dir=tmp_path / "data", progress_interval_s=0.05)


@pytest.fixture
def conn(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def uninterrupted_null(store: ArtifactStore, spec: JobSpec) -> list[float]:
    """The null scores an uninterrupted permutation test of the job finds, computed as the task does: on
    the rows it searched (the verdict's split), their losses shuffled among themselves."""
    inputs = load_inputs(store, spec.dataset_sha256)
    parts = verdict.split(int(inputs.losses.shape[0]), spec.params.seed)
    searched, params = searched_part(inputs, spec.params, parts)
    best = rerun_best(
        search,
        searched.embeddings,
        params,
        labels=searched.labels,
        predictions=searched.predictions,
        sample_weights=searched.sample_weights,
    )
    base = np.array(searched.losses, dtype=np.float32, copy=True)

    def on_searched_rows(shuffled: np.ndarray) -> float:
        losses = base.copy()
        losses[parts.searched] = shuffled
        return best(losses)

    null = permutation_null(on_searched_rows, base[parts.searched], spec.params.n_permutations, spec.params.seed)
    return null.tolist()


def p_values_of(store: ArtifactStore, spec: JobSpec) -> list[float]:
    return [r["permutation_p_value"] for r in store.read_json(job_file(spec.job_id, REGIONS_FILE))["regions"]]


@pytest.mark.e2e
def test_one_worker_runs_b_s_job_between_two_shuffles_of_a_s_permutation_test(
    settings: Settings, store: ArtifactStore, conn: redis.Redis, store_dir: Path, tmp_path: Path
) -> None:
    one_region = {**PERMUTED, "n_spotlights": 1}  # no region boundary: only the shuffles can let B in
    spec_a = make_spec(write_dataset(store, n=400, seed=24), one_region, tenant="a")
    spec_b = make_spec(write_dataset(store, n=150, seed=25), QUICK, tenant="b")
    job_a = enqueue_search(large_queue(conn, settings), spec_a, settings)
    gate_a, gate_b = Gate(conn, spec_a.job_id), Gate(conn, spec_b.job_id)
    worker = BurstWorker(settings.redis_url or "", store_dir, tmp_path)
    try:
        gate_a.wait_held()  # A runs its region search
        job_b = enqueue_search(job_queue(conn, settings), spec_b, settings)  # B's small job arrives
        gate_b.open()
        gate_a.open()
        worker.wait()
    finally:
        worker.kill()

    job_a.refresh()
    job_b.refresh()
    assert status_of(job_a) == status_of(job_b) == JobStatus.FINISHED
    started_b = job_b.get_meta(refresh=True)[META_STARTED_AT]
    assert job_a.get_meta(refresh=True)[META_STARTED_AT] < started_b  # B ran while A's test was under way
    assert job_b.get_meta(refresh=True)["ended_at"] < job_a.get_meta(refresh=True)["ended_at"]
    state = YieldState.of(job_a.meta)
    assert state is not None and state.yields == 1 and state.regions == 1
    assert sorted(r.type.name for r in job_a.results()) == ["RETRIED", "SUCCESSFUL"]  # RQ's Retry, no failure
    regions = store.read_json(job_file(spec_a.job_id, REGIONS_FILE))["regions"]
    whole = uninterrupted_null(store, spec_a)
    assert p_values_of(store, spec_a) == p_values([region_score(r) for r in regions], whole)
    assert not store.exists(job_file(spec_a.job_id, checkpoint.STATE_FILE))


def test_the_permutation_test_yields_between_shuffles_and_ends_with_an_uninterrupted_runs_p_values(
    settings: Settings, store: ArtifactStore, conn: redis.Redis
) -> None:
    sha = write_dataset(store, n=300, seed=21)
    spec = make_spec(sha, PERMUTED, tenant="a")
    job = enqueue_search(large_queue(conn, settings), spec, settings)
    large_queue(conn, settings).remove(job)  # taken by a worker (this test)
    other = enqueue_search(
        job_queue(conn, settings), make_spec(write_dataset(store, n=100, seed=22), QUICK, "b"), settings
    )
    whole = uninterrupted_null(store, spec)

    out = execute(spec, job, settings, store)  # yields between its two regions, as before
    assert isinstance(out, Retry) and out.max == 2 * 2 + 3  # a yield per region, per description and per shuffle fits
    assert checkpoint.load_null(store, spec, 300) is None
    out = execute(spec, job, settings, store)  # finds its second region, describes the first, gives way
    assert isinstance(out, Retry), out
    described = checkpoint.load_described(store, spec, 300)
    assert described is not None and len(described.descriptions) == 1
    assert checkpoint.load_null(store, spec, 300) is None
    for done in (1, 2):  # B still waits: A gives way after each shuffle but the last
        out = execute(spec, job, settings, store)
        assert isinstance(out, Retry), out
        meta = job.get_meta(refresh=True)
        assert meta[META_STATUS] == "queued" and meta[META_PROGRESS]["spotlight"] == 2
        state = YieldState.model_validate(meta[META_YIELDED])
        assert state.regions == 2 and state.yields == 2 + done
        saved = checkpoint.load(store, spec, 300)
        assert saved is not None and len(saved.regions) == 2
        null = checkpoint.load_null(store, spec, 300)
        assert null is not None and null.scores == whole[:done]  # the same shuffles, in order

    other.cancel()  # nobody waits now: the last shuffle runs and the job ends
    out = execute(spec, job, settings, store)
    assert isinstance(out, dict) and out["status"] == "finished", out
    regions = store.read_json(job_file(spec.job_id, REGIONS_FILE))["regions"]
    assert p_values_of(store, spec) == p_values([region_score(r) for r in regions], whole)
    assert not store.exists(job_file(spec.job_id, checkpoint.STATE_FILE))

    # and the job run in one go, on a worker that never yields, stores the same p-values
    again = make_spec(sha, PERMUTED, tenant="a")
    job2 = enqueue_search(job_queue(conn, settings), again, settings)
    enqueue_search(job_queue(conn, settings), make_spec(sha, QUICK, "b"), settings)
    off = settings.model_copy(update={"yield_to_other_tenants": False})
    assert execute(again, job2, off, store)["status"] == "finished"
    assert YieldState.of(job2.get_meta(refresh=True)) is None
    in_one_go = store.read_json(job_file(again.job_id, REGIONS_FILE))["regions"]
    assert p_values_of(store, again) == p_values_of(store, spec)
    assert [r["weighted_loss"] for r in in_one_go] == pytest.approx([r["weighted_loss"] for r in regions], rel=1e-6)


def test_a_permutation_checkpoint_of_other_inputs_or_unreadable_is_not_resumed(
    settings: Settings, store: ArtifactStore, conn: redis.Redis
) -> None:
    sha = write_dataset(store, n=200, seed=23)
    spec = make_spec(sha, PERMUTED, tenant="a")
    x, losses = DatasetFiles(store, sha).embeddings(), DatasetFiles(store, sha).losses()
    full = search(x, losses, spec.params)
    rng_state = np.random.default_rng(0).bit_generator.state
    checkpoint.save(store, spec, full, NullSoFar(scores=[1.0], rng_state=rng_state))
    assert checkpoint.load_null(store, spec, 200) == NullSoFar(scores=[1.0], rng_state=rng_state)
    other_seed = spec.model_copy(update={"params": spec.params.model_copy(update={"seed": 9})})
    assert checkpoint.load_null(store, other_seed, 200) is None  # other parameters: the test starts over
    checkpoint.save(store, spec, full, NullSoFar(scores=[1.0], rng_state={"bit_generator": "nonsense"}))
    assert checkpoint.load_null(store, spec, 200) is None  # a state the generator refuses
    checkpoint.save(store, spec, full, NullSoFar(scores=[1.0] * 4, rng_state=rng_state))
    assert checkpoint.load_null(store, spec, 200) is None  # more shuffles than the job has
    checkpoint.save(store, spec, full)
    assert checkpoint.load_null(store, spec, 200) is None  # a search that yielded between regions
