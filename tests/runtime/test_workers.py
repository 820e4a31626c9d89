"""Real worker processes (`python -m spotlight.client.cli worker`) sharing one Redis and one store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from rq import Worker
from rq.job import Job

from spotlight.contract.protocol import META_ERROR, REGIONS_FILE, TASK_PATH, ErrorCode, job_file
from spotlight.server.jobqueue import job_queue
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore

from .gate import Gate, held_key
from .helpers import (
    QUICK,
    WorkerProcs,
    enqueue,
    make_spec,
    meta_status,
    wait_for,
    worker_env,
    write_dataset,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def store(store_dir: Path) -> ArtifactStore:
    return ArtifactStore(str(store_dir))


@pytest.fixture
def workers(redis_url: str, store_dir: Path, tmp_path: Path) -> Iterator[WorkerProcs]:
    procs = WorkerProcs(worker_env(redis_url, store_dir), tmp_path)
    yield procs
    procs.stop_all()


def settings_for(redis_url: str, store_dir: Path, retries: int = 1) -> Settings:
    """What the API would enqueue with."""
    return Settings(redis_url=redis_url, store_url=str(store_dir), job_retries=retries)


def wait_registered(redis_url: str, names: set[str], timeout: float = 60) -> None:
    conn = redis.Redis.from_url(redis_url)
    wait_for(lambda: names <= {w.name for w in Worker.all(connection=conn)}, timeout, f"workers {names}")


def wait_ended(job: Job, timeout: float) -> str:
    return wait_for(
        lambda: (s := meta_status(job)) in ("finished", "failed", "canceled") and s, timeout, f"job {job.id} to end"
    )


def test_a_burst_worker_exits_once_its_job_is_done_without_waiting_out_its_command_channel(
    redis_url: str, store_dir: Path, store: ArtifactStore
) -> None:
    """RQ's command-channel thread reads with a 60 s timeout and RQ waits for it on exit (redis-py 8):
    a worker stopping after a job, burst or SIGTERM, took a minute more. Ours wakes every second
    (worker/runner.py)."""
    job = enqueue(redis_url, make_spec(write_dataset(store)), settings_for(redis_url, store_dir))
    done = subprocess.run(
        [sys.executable, "-m", "spotlight.client.cli", "worker", "--burst"],
        env=worker_env(redis_url, store_dir),
        capture_output=True,
        timeout=45,  # start-up (torch, matplotlib) and the job take seconds; the wait it replaces took 60 s
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert meta_status(job) == "finished"


def test_two_workers_drain_ten_jobs(workers, redis_url, store_dir, store) -> None:
    workers.start("w1")
    workers.start("w2")
    wait_registered(redis_url, {"w1", "w2"})
    settings = settings_for(redis_url, store_dir)
    sha = write_dataset(store)
    jobs = [enqueue(redis_url, make_spec(sha, {**QUICK, "seed": i}), settings) for i in range(10)]

    for job in jobs:
        assert wait_ended(job, 60) == "finished", workers.log("w1") + workers.log("w2")
    assert all(store.exists(job_file(j.id, REGIONS_FILE)) for j in jobs)
    ran_on = {Job.fetch(j.id, connection=redis.Redis.from_url(redis_url)).worker_name for j in jobs}
    assert ran_on == {"w1", "w2"}


def test_killed_horse_is_retried_and_finishes(workers, redis_url, store_dir, store) -> None:
    worker = workers.start("w1", held=True)
    wait_registered(redis_url, {"w1"})
    job = enqueue(redis_url, make_spec(write_dataset(store), QUICK), settings_for(redis_url, store_dir, 1))
    gate = Gate(redis.Redis.from_url(redis_url), job.id)
    horse = gate.wait_held()
    assert meta_status(job) == "running" and horse in [c.pid for c in psutil.Process(worker.pid).children()]
    os.kill(horse, signal.SIGKILL)

    retry = gate.wait_held(60)  # the retry, in a new work-horse of the same worker
    assert retry != horse
    gate.open()
    assert wait_ended(job, 60) == "finished", workers.log("w1")
    job.refresh()
    assert job.retries_left == 0  # it did take the retry
    assert store.exists(job_file(job.id, REGIONS_FILE))
    assert worker.poll() is None  # the worker itself lived on


def test_killed_horse_without_retries_fails_worker_lost(workers, redis_url, store_dir, store) -> None:
    worker = workers.start("w1", held=True)
    wait_registered(redis_url, {"w1"})
    job = enqueue(redis_url, make_spec(write_dataset(store), QUICK), settings_for(redis_url, store_dir, 0))
    os.kill(Gate(redis.Redis.from_url(redis_url), job.id).wait_held(), signal.SIGKILL)

    assert wait_ended(job, 30) == "failed", workers.log("w1")
    assert job.get_meta(refresh=True)[META_ERROR]["code"] == ErrorCode.WORKER_LOST
    assert job.get_status(refresh=True) == "failed"
    assert worker.poll() is None


def test_killed_worker_job_is_retried_on_another_worker(workers, redis_url, store_dir, store) -> None:
    procs = {"w1": workers.start("w1", held=True), "w2": workers.start("w2", held=True)}
    wait_registered(redis_url, {"w1", "w2"})
    job = enqueue(redis_url, make_spec(write_dataset(store), QUICK), settings_for(redis_url, store_dir, 1))
    gate = Gate(redis.Redis.from_url(redis_url), job.id)
    horse = psutil.Process(gate.wait_held())
    job.refresh()
    victim, survivor = (job.worker_name, ({"w1", "w2"} - {job.worker_name}).pop())
    os.kill(procs[victim].pid, signal.SIGKILL)  # the worker only: its horse must not outlive it
    wait_for(lambda: not horse.is_running() or horse.status() == psutil.STATUS_ZOMBIE, 10, "the orphaned horse to die")

    gate.wait_held(45)  # RQ alone would wait 60 s more before the retry
    gate.open()
    assert wait_ended(job, 45) == "finished", workers.log(survivor)
    job.refresh()
    assert job.worker_name == survivor and job.retries_left == 0
    assert store.exists(job_file(job.id, REGIONS_FILE))


def test_killed_worker_without_retries_fails_worker_lost_even_without_our_callback(
    workers, redis_url, store_dir, store
) -> None:
    """Enqueued the bare RQ way (no on_failure): the surviving worker's exception handler records the loss."""
    procs = {"w1": workers.start("w1", held=True), "w2": workers.start("w2", held=True)}
    wait_registered(redis_url, {"w1", "w2"})
    spec = make_spec(write_dataset(store), QUICK)
    queue = job_queue(redis.Redis.from_url(redis_url), settings_for(redis_url, store_dir))
    job = queue.enqueue(TASK_PATH, spec.model_dump(mode="json"), job_id=spec.job_id, job_timeout=600)
    Gate(redis.Redis.from_url(redis_url), job.id).wait_held()
    job.refresh()
    os.kill(procs[job.worker_name].pid, signal.SIGKILL)

    assert wait_ended(job, 45) == "failed"
    assert job.get_meta(refresh=True)[META_ERROR]["code"] == ErrorCode.WORKER_LOST
    assert job.get_status(refresh=True) == "failed"


def test_job_past_its_timeout_fails_job_timeout_without_retry(workers, redis_url, store_dir, store) -> None:
    """The search is held at the gate and never let go: it outlasts its 2 s limit on any CPU."""
    worker = workers.start("w1", held=True)
    wait_registered(redis_url, {"w1"})
    settings = Settings(redis_url=redis_url, store_url=str(store_dir), job_retries=1, job_timeout_s=2)
    job = enqueue(redis_url, make_spec(write_dataset(store), QUICK), settings)

    assert wait_ended(job, 30) == "failed", workers.log("w1")
    assert job.get_meta(refresh=True)[META_ERROR]["code"] == ErrorCode.JOB_TIMEOUT
    assert redis.Redis.from_url(redis_url).llen(held_key(job.id)) == 1  # it was mid-search when the limit hit
    job.refresh()
    assert job.retries_left == 1  # a timeout is not retried: another run would time out too
    assert not store.exists(job_file(job.id, REGIONS_FILE)) and worker.poll() is None


def test_store_error_fails_the_job_and_the_worker_serves_the_next(workers, redis_url, store_dir, store) -> None:
    worker = workers.start("w1")
    wait_registered(redis_url, {"w1"})
    settings = settings_for(redis_url, store_dir)
    sha = write_dataset(store)
    bad, good = make_spec(sha), make_spec(sha)
    (store_dir / "jobs").mkdir(exist_ok=True)
    (store_dir / "jobs" / bad.job_id).write_bytes(b"not a folder: results cannot be written here")
    bad_job, good_job = enqueue(redis_url, bad, settings), enqueue(redis_url, good, settings)

    assert wait_ended(bad_job, 60) == "failed"
    assert bad_job.get_meta(refresh=True)[META_ERROR]["code"] == ErrorCode.STORE_ERROR
    assert wait_ended(good_job, 60) == "finished", workers.log("w1")
    assert worker.poll() is None
