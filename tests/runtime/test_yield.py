"""Fair share on one worker: a long search of tenant A gives the worker to tenant B between regions.

A real worker process (`spotlight worker --burst`, its searches held at the tests' gate so the
order of events never depends on the machine's speed), the session's real Redis and a temporary
store. The in-process tests run `worker.task.execute` as RQ would, twice, with what RQ does in
between (the job queued again).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from rq import Retry
from rq.job import Job
from rq.results import Result

from service.app import create_app
from spotlight.client.api import _detail
from spotlight.contract import verdict
from spotlight.contract.jobstate import JobStatus, failure_of, status_of
from spotlight.contract.protocol import (
    META_PROGRESS,
    META_STARTED_AT,
    META_STATUS,
    META_YIELDED,
    REGIONS_FILE,
    JobSpec,
    dataset_file,
    job_file,
    members_file,
)
from spotlight.server import jobqueue
from spotlight.server.jobqueue import YieldState, enqueue_search, job_queue, large_queue, other_tenant_waiting
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore
from worker import checkpoint
from worker.engine import search
from worker.task import execute, load_inputs, searched_part

from . import gate
from .gate import Gate
from .helpers import QUICK, make_spec, spawn_logged, tail_log, worker_env, write_dataset

LONG = {"n_spotlights": 3, "steps": 150, "restarts": 3, "spotlight_size": 0.05, "device": "cpu"}
KEYS = {"a": "key-a", "b": "key-b"}


@pytest.fixture
def store(store_dir: Path) -> ArtifactStore:
    return ArtifactStore(str(store_dir))


@pytest.fixture
def settings(redis_url: str, store_dir: Path, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        store_url=str(store_dir),
        data_dir=tmp_path / "data",
        api_keys=",".join(f"{t}:{k}" for t, k in KEYS.items()),
        api_keys_file=None,
        progress_interval_s=0.05,
    )


@pytest.fixture
def conn(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def uninterrupted(store: ArtifactStore, spec: JobSpec):
    """The same search run in one go, in this process, as the worker runs it: on the verdict's searched
    rows (worker/task.py `searched_part`), with the dataset's labels."""
    inputs = load_inputs(store, spec.dataset_sha256)
    parts = verdict.split(int(inputs.losses.shape[0]), spec.params.seed)
    searched, params = searched_part(inputs, spec.params, parts)
    result = search(
        searched.embeddings, searched.losses, params, labels=searched.labels, sample_weights=searched.sample_weights
    )
    return result, parts


def assert_regions_equal_uninterrupted(store: ArtifactStore, spec: JobSpec) -> None:
    stored = store.read_json(job_file(spec.job_id, REGIONS_FILE))["regions"]
    whole, parts = uninterrupted(store, spec)
    assert len(stored) == len(whole.regions) == spec.params.n_spotlights
    for k, (got, want) in enumerate(zip(stored, whole.regions, strict=True)):
        assert got["weighted_loss"] == pytest.approx(want.weighted_loss, rel=1e-5, abs=1e-6)
        assert got["total_weight"] == pytest.approx(want.total_weight, rel=1e-4, abs=1e-3)
        assert got["feasible"] == want.feasible
        members = store.load_npy(job_file(spec.job_id, members_file(k)))
        assert set(members.tolist()) == set(verdict.region_rows(whole.weights[:, k], want.kernel, parts).all.tolist())


# ----- a real worker -----
class BurstWorker:
    """`spotlight worker --burst` with held searches: it serves until the lanes are empty, then exits."""

    def __init__(self, redis_url: str, store_dir: Path, log_dir: Path) -> None:
        self.log_path = log_dir / "w1.log"
        self.proc = spawn_logged(
            gate.worker_argv("w1", "--burst", "--no-callbacks"), self.log_path, worker_env(redis_url, store_dir)
        )

    def wait(self, timeout: float = 120) -> None:
        try:
            assert self.proc.wait(timeout) == 0, tail_log(self.log_path)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the worker did not drain its lanes: {tail_log(self.log_path)}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def burst_worker(redis_url: str, store_dir: Path, tmp_path: Path) -> Iterator[Callable[[], BurstWorker]]:
    started: list[BurstWorker] = []

    def start() -> BurstWorker:
        started.append(BurstWorker(redis_url, store_dir, tmp_path))
        return started[-1]

    yield start
    for w in started:
        w.kill()


def _meta_time(job: Job, key: str) -> datetime:
    return datetime.fromisoformat(job.get_meta(refresh=True)[key])


@dataclass
class Race:
    """Tenant A's long job running on the one worker (held at its first step) and B's small job just
    queued behind it, each with its gate."""

    spec_a: JobSpec
    spec_b: JobSpec
    job_a: Job
    job_b: Job
    gate_a: Gate
    gate_b: Gate
    worker: BurstWorker


def a_running_b_queued(settings, store, conn, burst_worker, n_a: int, seed: int) -> Race:
    spec_a = make_spec(write_dataset(store, n=n_a, seed=seed), LONG, tenant="a")
    spec_b = make_spec(write_dataset(store, n=150, seed=seed + 1), QUICK, tenant="b")
    job_a = enqueue_search(large_queue(conn, settings), spec_a, settings)
    gate_a, gate_b = Gate(conn, spec_a.job_id), Gate(conn, spec_b.job_id)
    worker = burst_worker()
    gate_a.wait_held()  # A runs (region 0, step 0)
    job_b = enqueue_search(job_queue(conn, settings), spec_b, settings)  # B's small job arrives
    return Race(spec_a, spec_b, job_a, job_b, gate_a, gate_b, worker)


@pytest.mark.e2e
def test_one_worker_runs_b_s_small_job_between_a_s_regions(settings, store, conn, burst_worker) -> None:
    race = a_running_b_queued(settings, store, conn, burst_worker, n_a=3000, seed=1)
    spec_a, job_a, job_b = race.spec_a, race.job_a, race.job_b
    race.gate_b.open()
    race.gate_a.open()
    race.worker.wait()

    job_a.refresh()
    job_b.refresh()
    assert status_of(job_a) == status_of(job_b) == JobStatus.FINISHED
    assert failure_of(job_a) is None
    # B ran while A was between two of its regions: it started after A and ended before A did.
    assert _meta_time(job_a, META_STARTED_AT) < _meta_time(job_b, META_STARTED_AT)
    assert _meta_time(job_b, "ended_at") < _meta_time(job_a, "ended_at")
    state = YieldState.of(job_a.meta)
    assert state is not None and state.yields == 1 and state.regions == 1
    # RQ's own record of the yield: one "retried" result, then the success; a yield is no failure.
    kinds = [r.type for r in job_a.results()]
    assert sorted(k.name for k in kinds) == ["RETRIED", "SUCCESSFUL"], kinds
    latest = job_a.latest_result()
    assert latest is not None and latest.type == Result.Type.SUCCESSFUL
    assert job_a.number_of_retries == 1 and job_a.retries_left == settings.job_retries
    assert job_a.get_meta(refresh=True)[META_PROGRESS]["fraction"] == 1.0
    # A's regions are those of an uninterrupted run, and its checkpoint is gone.
    assert_regions_equal_uninterrupted(store, spec_a)
    assert not store.exists(job_file(spec_a.job_id, checkpoint.STATE_FILE))


@pytest.mark.e2e
def test_a_yielded_job_shows_queued_with_regions_done_and_cancels_with_its_checkpoint(
    settings, store, conn, burst_worker
) -> None:
    race = a_running_b_queued(settings, store, conn, burst_worker, n_a=2000, seed=3)
    spec_a, job_a, gate_a, gate_b, worker = race.spec_a, race.job_a, race.gate_a, race.gate_b, race.worker
    gate_a.open()
    gate_b.wait_held()  # B runs, so A has yielded: it waits in its lane again

    with TestClient(create_app(settings)) as api:
        auth = {"Authorization": f"Bearer {KEYS['a']}"}
        view = api.get(f"/v1/jobs/{spec_a.job_id}", headers=auth).json()
        assert view["status"] == "queued" and view["error"] is None, view
        assert view["progress"]["spotlight"] == 1 and view["progress"]["fraction"] == pytest.approx(1 / 3), view
        assert _detail(view) == "queued, 1/3 spotlights done"  # what the client's progress bar says
        assert store.exists(job_file(spec_a.job_id, checkpoint.STATE_FILE))
        assert Job.fetch(spec_a.job_id, connection=conn).get_status() == "queued"

        metrics = api.get("/metrics").text  # a yielded job is queued, not failed
        for status, n in (("queued", 1), ("running", 1), ("failed", 0)):
            assert f'spotlight_jobs{{status="{status}"}} {n}.0' in metrics, metrics

        r = api.delete(f"/v1/jobs/{spec_a.job_id}", headers=auth)
        assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    assert not store.exists(job_file(spec_a.job_id, checkpoint.STATE_FILE))
    gate_b.open()
    worker.wait()
    assert status_of(job_a) == JobStatus.CANCELED
    assert not store.exists(job_file(spec_a.job_id, REGIONS_FILE))


@pytest.mark.e2e
def test_a_lost_run_of_a_yielded_job_is_retried_from_its_checkpoint(settings, store, conn, burst_worker) -> None:
    race = a_running_b_queued(settings, store, conn, burst_worker, n_a=2000, seed=12)
    spec_a, job_a, gate_a, gate_b, worker = race.spec_a, race.job_a, race.gate_a, race.gate_b, race.worker
    gate_a.open()
    gate_b.wait_held()  # A yielded after its first region
    conn.delete(gate.open_key(spec_a.job_id))  # hold A's next run too
    gate_b.open()

    horse = gate_a.wait_held()  # A's second run, resumed from its checkpoint
    assert job_a.get_meta(refresh=True)[META_PROGRESS]["spotlight"] == 1
    os.kill(horse, signal.SIGKILL)
    assert gate_a.wait_held() != horse  # RQ's retry of the lost run
    assert job_a.get_meta(refresh=True)[META_PROGRESS]["spotlight"] == 1  # from the checkpoint, not from scratch
    gate_a.open()
    worker.wait()

    job_a.refresh()
    assert status_of(job_a) == JobStatus.FINISHED
    assert job_a.retries_left == settings.job_retries - 1 and job_a.number_of_retries == 1
    assert_regions_equal_uninterrupted(store, spec_a)


# ----- the task in-process, as RQ runs it -----
def test_the_task_yields_to_another_tenant_and_resumes_from_its_checkpoint(settings, store, conn) -> None:
    spec_a = make_spec(write_dataset(store, n=800, seed=5), LONG, tenant="a")
    job_a = enqueue_search(large_queue(conn, settings), spec_a, settings)
    large_queue(conn, settings).remove(job_a)  # taken by a worker (this test)
    other = enqueue_search(
        job_queue(conn, settings), make_spec(write_dataset(store, n=100, seed=6), QUICK, "b"), settings
    )
    assert other_tenant_waiting(conn, settings, "a") and not other_tenant_waiting(conn, settings, "b")

    out = execute(spec_a, job_a, settings, store)
    assert isinstance(out, Retry) and out.max == 2 * LONG["n_spotlights"]
    meta = job_a.get_meta(refresh=True)
    assert meta[META_STATUS] == "queued" and meta[META_PROGRESS]["spotlight"] == 1
    state = YieldState.model_validate(meta[META_YIELDED])
    assert state.regions == 1 and state.yields == 1 and state.timeout_s == settings.job_timeout_s
    assert state.first_started_at == meta[META_STARTED_AT]
    saved = checkpoint.load(store, spec_a, 800)
    assert saved is not None and len(saved.regions) == 1 and saved.weights.shape == (800, 1)
    assert job_a.timeout is not None and job_a.timeout <= settings.job_timeout_s  # what the next runs have left

    other.cancel()  # nobody else waits now: the next run goes on to the end
    out = execute(spec_a, job_a, settings, store)
    assert isinstance(out, dict) and out["status"] == "finished", out
    meta = job_a.get_meta(refresh=True)
    assert meta[META_STARTED_AT] == state.first_started_at  # the job started when its first run did
    assert_regions_equal_uninterrupted(store, spec_a)
    assert not store.exists(job_file(spec_a.job_id, checkpoint.STATE_FILE))


def test_no_yield_for_the_same_tenant_or_when_switched_off(settings, store, conn) -> None:
    sha = write_dataset(store, n=300, seed=7)
    spec = make_spec(sha, {**LONG, "steps": 40}, tenant="a")
    job = enqueue_search(job_queue(conn, settings), spec, settings)
    enqueue_search(job_queue(conn, settings), make_spec(sha, QUICK, tenant="a"), settings)
    assert not other_tenant_waiting(conn, settings, "a")
    assert execute(spec, job, settings, store)["status"] == "finished"

    spec2 = make_spec(sha, {**LONG, "steps": 40}, tenant="a")
    job2 = enqueue_search(job_queue(conn, settings), spec2, settings)
    enqueue_search(job_queue(conn, settings), make_spec(sha, QUICK, tenant="b"), settings)
    off = settings.model_copy(update={"yield_to_other_tenants": False})
    assert execute(spec2, job2, off, store)["status"] == "finished"
    assert YieldState.of(job2.get_meta(refresh=True)) is None


def test_a_checkpoint_of_other_inputs_is_ignored(settings, store, conn) -> None:
    sha = write_dataset(store, n=300, seed=8)
    spec = make_spec(sha, LONG, tenant="a")
    x = store.load_npy(dataset_file(sha, "embeddings.npy"))
    partial = search(x, store.load_npy(dataset_file(sha, "losses.npy")), {**LONG, "n_spotlights": 1})
    checkpoint.save(store, spec.model_copy(update={"params": spec.params.model_copy(update={"seed": 9})}), partial)
    assert checkpoint.load(store, spec, 300) is None
    checkpoint.save(store, spec, partial)
    assert checkpoint.load(store, spec, 299) is None
    loaded = checkpoint.load(store, spec, 300)
    assert loaded is not None and np.array_equal(loaded.weights, partial.weights)


def test_a_job_that_had_its_turn_is_yielded_to_only_after_a_slice(settings, store, conn) -> None:
    """No back and forth after every region: B does not give way to A, which already ran, until B's slice is used."""
    short = {**LONG, "steps": 40}
    spec_a = make_spec(write_dataset(store, n=300, seed=10), short, tenant="a")
    job_a = enqueue_search(large_queue(conn, settings), spec_a, settings)
    spec_b, spec_b2 = (make_spec(write_dataset(store, n=200, seed=11), short, tenant="b") for _ in range(2))
    job_b = enqueue_search(job_queue(conn, settings), spec_b, settings)
    assert isinstance(execute(spec_a, job_a, settings, store), Retry)  # B had not started: A gave way
    assert other_tenant_waiting(conn, settings, "b") and not other_tenant_waiting(conn, settings, "b", fresh_only=True)

    assert execute(spec_b, job_b, settings, store)["status"] == "finished"  # A already had its turn
    job_b2 = enqueue_search(job_queue(conn, settings), spec_b2, settings)
    no_slice = settings.model_copy(update={"yield_slice_s": 0.0})
    assert isinstance(execute(spec_b2, job_b2, no_slice, store), Retry)  # its slice is used: A's turn again


def test_of_several_busy_workers_only_one_yields_to_a_waiting_job(settings, store, conn, monkeypatch) -> None:
    """Two searches of tenant a run (two workers); b's job waits. Both reach a region boundary: one yields, the other goes on."""
    monkeypatch.setattr(jobqueue, "YIELD_CLAIM_TTL_S", 600)  # however slow this machine, the claim outlives the test
    sha = write_dataset(store, n=300, seed=14)
    short = {**LONG, "steps": 40}
    running = [make_spec(sha, short, tenant="a") for _ in range(2)]
    jobs = [enqueue_search(large_queue(conn, settings), spec, settings) for spec in running]
    for job in jobs:
        large_queue(conn, settings).remove(job)  # taken by the two workers (this test)
    enqueue_search(job_queue(conn, settings), make_spec(write_dataset(store, n=100, seed=15), QUICK, "b"), settings)

    assert isinstance(execute(running[0], jobs[0], settings, store), Retry)
    assert execute(running[1], jobs[1], settings, store)["status"] == "finished"  # b's job was already let in


@pytest.mark.e2e
def test_a_tenant_s_queued_jobs_do_not_all_run_before_another_tenant_s_job(settings, store, conn, burst_worker) -> None:
    """Fair share across queued jobs: tenant a has four jobs queued in the normal lane, the first
    running; b's small job arrives behind them. At a's first region boundary the worker goes to b
    (its job is brought to the front of the lane, not only a's running job sent to the back), so b
    waits one region of a's, not a's four jobs."""
    sha_a = write_dataset(store, n=300, seed=20)
    specs_a = [make_spec(sha_a, QUICK, tenant="a") for _ in range(4)]
    jobs_a = [enqueue_search(job_queue(conn, settings), spec, settings) for spec in specs_a]
    gates_a = [Gate(conn, spec.job_id) for spec in specs_a]
    worker = burst_worker()
    gates_a[0].wait_held()  # a's first job runs
    spec_b = make_spec(write_dataset(store, n=150, seed=21), QUICK, tenant="b")
    job_b = enqueue_search(job_queue(conn, settings), spec_b, settings)
    Gate(conn, spec_b.job_id).open()
    for g in gates_a:
        g.open()
    worker.wait()

    for job in (*jobs_a, job_b):
        job.refresh()
        assert status_of(job) == JobStatus.FINISHED, job.meta
    b_started = _meta_time(job_b, META_STARTED_AT)
    started_before_b = [
        spec.job_id for spec, job in zip(specs_a, jobs_a, strict=True) if _meta_time(job, META_STARTED_AT) < b_started
    ]
    assert started_before_b == [specs_a[0].job_id], started_before_b  # only the job that was running when b arrived
    assert YieldState.of(jobs_a[0].meta) is not None  # which gave way at its region boundary


def test_a_job_s_end_passes_the_turn_to_another_tenant_waiting_behind_its_queued_jobs(settings, store, conn) -> None:
    sha = write_dataset(store, n=150, seed=22)
    first = make_spec(sha, {**QUICK, "n_spotlights": 1}, tenant="a")  # one region: no boundary to yield at
    job = enqueue_search(job_queue(conn, settings), first, settings)
    lane = job_queue(conn, settings)
    lane.remove(job)  # taken by a worker (this test)
    queued_a = [enqueue_search(lane, make_spec(sha, QUICK, tenant="a"), settings) for _ in range(3)]
    b = enqueue_search(lane, make_spec(sha, QUICK, tenant="b"), settings)
    c = enqueue_search(lane, make_spec(sha, QUICK, tenant="c"), settings)
    assert execute(first, job, settings, store)["status"] == "finished"
    assert lane.get_job_ids() == [b.id, *(j.id for j in queued_a), c.id]  # b goes next, not after a's three
    lane.remove(b)  # b's turn
    assert jobqueue.pass_the_turn(conn, settings, "b") is None  # a's job is next anyway
    lane.remove(queued_a[0])  # a's turn
    assert jobqueue.pass_the_turn(conn, settings, "a") == c.id  # then c's, before a's other two
    assert lane.get_job_ids() == [c.id, queued_a[1].id, queued_a[2].id]
