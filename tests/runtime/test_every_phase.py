"""Every phase of a job honours its time limit and its owner's cancel, not only the search.

After the search the worker describes the regions and runs the permutation test, and a follow-on
job renders the report under its own time limit; those phases keep ``except Exception`` handlers (a
plot or a description that fails must not lose the regions). RQ's own timeout is an Exception, so such a handler used to swallow it and the job ran on
and *finished*; a cancel during them was ignored. Real worker processes (`spotlight worker --burst`,
held at the first region's description by tests/runtime/gate.py) and the session's real Redis.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis
from rq import Retry

import worker.describe
from spotlight.contract.jobstate import JobStatus, failure_of, status_of
from spotlight.contract.protocol import REGIONS_FILE, job_file
from spotlight.server.jobqueue import enqueue_search, job_queue
from spotlight.server.keys import Keys
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore
from worker import checkpoint
from worker.task import execute

from . import gate
from .helpers import QUICK, make_spec, render_queued_report, spawn_logged, tail_log, worker_env, write_dataset

THREE = {**QUICK, "n_spotlights": 3}


@pytest.fixture
def store(store_dir: Path) -> ArtifactStore:
    return ArtifactStore(str(store_dir))


@pytest.fixture
def settings(redis_url: str, store_dir: Path, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        store_url=str(store_dir),
        data_dir=tmp_path / "data",
        api_keys="a:key-a,b:key-b",
        api_keys_file=None,
        progress_interval_s=0.05,
    )


@pytest.fixture
def conn(redis_url: str):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def describe_held_worker(redis_url: str, store_dir: Path, log_dir: Path, **env: object) -> subprocess.Popen[bytes]:
    """A burst worker whose jobs stop at their first region's description until the gate opens or they are canceled."""
    return spawn_logged(
        gate.worker_argv("w1", "--burst", "--no-callbacks"),
        log_dir / "w1.log",
        worker_env(redis_url, store_dir, **{gate.HOLD_DESCRIBE_ENV: "1", **env}),
    )


def wait_exit(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    try:
        assert proc.wait(timeout) == 0, tail_log(log)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the worker did not drain its lanes: {tail_log(log)}") from None


def describing(conn: redis.Redis, job_id: str, timeout: float = 60) -> int:
    popped = None
    for _ in range(int(timeout / 2)):
        popped = conn.blpop([gate.describing_key(job_id)], timeout=2)
        if popped is not None:
            return int(popped[1])
    raise AssertionError(f"job {job_id} never reached its description")


@pytest.mark.e2e
def test_the_job_timeout_ends_a_job_that_is_describing_its_regions(redis_url, store_dir, store, conn, tmp_path) -> None:
    settings = Settings(redis_url=redis_url, store_url=str(store_dir), data_dir=tmp_path / "data", job_timeout_s=4)
    spec = make_spec(write_dataset(store, n=300, seed=1), QUICK)
    job = enqueue_search(job_queue(conn, settings), spec, settings)
    proc = describe_held_worker(redis_url, store_dir, tmp_path)
    try:
        describing(conn, spec.job_id)  # the search is done; the gate is never opened: the limit must end it
        wait_exit(proc, tmp_path / "w1.log")
    finally:
        if proc.poll() is None:
            proc.kill()
    job.refresh()
    assert status_of(job) == JobStatus.FAILED, (job.meta, tail_log(tmp_path / "w1.log"))
    failure = failure_of(job)
    assert failure is not None and failure.code == "job_timeout", failure
    assert not store.exists(job_file(spec.job_id, REGIONS_FILE))


@pytest.mark.e2e
def test_a_cancel_while_the_regions_are_described_ends_the_job_canceled(
    redis_url, store_dir, store, conn, settings, tmp_path
) -> None:
    spec = make_spec(write_dataset(store, n=300, seed=2), THREE)
    job = enqueue_search(job_queue(conn, settings), spec, settings)
    proc = describe_held_worker(redis_url, store_dir, tmp_path)
    try:
        describing(conn, spec.job_id)
        conn.set(Keys.of(settings).cancel(spec.job_id), "1", ex=600)  # what DELETE /v1/jobs/{id} does to a running job
        wait_exit(proc, tmp_path / "w1.log")
    finally:
        if proc.poll() is None:
            proc.kill()
    job.refresh()
    assert status_of(job) == JobStatus.CANCELED, (job.meta, tail_log(tmp_path / "w1.log"))
    assert not store.exists(job_file(spec.job_id, REGIONS_FILE))
    # the cancel stopped the descriptions themselves: the regions after it were not described first
    assert conn.llen(gate.described_key(spec.job_id)) < THREE["n_spotlights"]


def test_a_description_that_fails_says_so_and_the_others_stay(settings, store, conn, monkeypatch) -> None:
    spec = make_spec(write_dataset(store, n=300, seed=3), THREE)
    job = enqueue_search(job_queue(conn, settings), spec, settings)
    job_queue(conn, settings).remove(job)
    original = worker.describe.describe_region
    calls: list[int] = []

    def second_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("a broken region")
        return original(*args, **kwargs)

    monkeypatch.setattr(worker.describe, "describe_region", second_fails)
    assert execute(spec, job, settings, store)["status"] == "finished"
    regions = store.read_json(job_file(spec.job_id, REGIONS_FILE))["regions"]
    assert regions[0]["description"] and regions[2]["description"], regions
    assert regions[1]["description"] is None
    assert "ValueError: a broken region" in regions[1]["description_error"]
    assert "description_error" not in regions[0] and "description_error" not in regions[2]


def test_describing_yields_to_another_tenant_and_goes_on_where_it_stopped(settings, store, conn, monkeypatch) -> None:
    """Fair share after the search too: another tenant's job that arrives while the regions are
    described is let in between two regions' descriptions; the next run describes only the rest."""
    sha = write_dataset(store, n=300, seed=4)
    spec = make_spec(sha, THREE, tenant="a")
    job = enqueue_search(job_queue(conn, settings), spec, settings)
    job_queue(conn, settings).remove(job)  # taken by a worker (this test)
    original = worker.describe.describe_region
    described: list[int] = []
    other: list[object] = []

    def arrives_during_describe(*args, **kwargs):
        described.append(1)
        if not other:  # b's job arrives while a's first region is being described
            other.append(enqueue_search(job_queue(conn, settings), make_spec(sha, QUICK, tenant="b"), settings))
        return original(*args, **kwargs)

    monkeypatch.setattr(worker.describe, "describe_region", arrives_during_describe)
    out = execute(spec, job, settings, store)
    assert isinstance(out, Retry), out
    assert len(described) == 1  # gave way after one region's description
    saved = checkpoint.load_described(store, spec, 300)
    assert saved is not None and len(saved.descriptions) == 1

    other[0].cancel()  # type: ignore[attr-defined]
    described.clear()
    assert execute(spec, job, settings, store)["status"] == "finished"
    assert len(described) == 2  # only the regions not yet described
    regions = store.read_json(job_file(spec.job_id, REGIONS_FILE))["regions"]
    assert all(r["description"] for r in regions)

    monkeypatch.setattr(worker.describe, "describe_region", original)
    whole = make_spec(sha, THREE, tenant="a")
    whole_job = enqueue_search(job_queue(conn, settings), whole, settings)
    job_queue(conn, settings).remove(whole_job)
    assert execute(whole, whole_job, settings, store)["status"] == "finished"
    uninterrupted = store.read_json(job_file(whole.job_id, REGIONS_FILE))["regions"]
    assert [r["description"] for r in regions] == [r["description"] for r in uninterrupted]


def test_the_report_is_not_part_of_the_job_s_run(settings, store, conn, monkeypatch) -> None:
    """The job ends (finished, its results stored) without drawing anything: the report is the
    follow-on job's, so a cancel or a time limit of the search can no longer fall inside it."""
    import worker.report

    spec = make_spec(write_dataset(store, n=300, seed=5), QUICK)
    job = enqueue_search(job_queue(conn, settings), spec, settings)
    job_queue(conn, settings).remove(job)
    drawn: list[int] = []
    original = worker.report.job_report
    monkeypatch.setattr(worker.report, "job_report", lambda *a, **kw: drawn.append(1) or original(*a, **kw))
    assert execute(spec, job, settings, store)["status"] == "finished"
    assert drawn == [] and store.exists(job_file(spec.job_id, REGIONS_FILE))
    assert render_queued_report(settings, spec.job_id, store)["report"] == "ready" and drawn == [1]


def test_the_time_limit_passes_the_report_s_own_error_handling(settings, store, conn, monkeypatch) -> None:
    """The report falls back to a plain page on any Exception; the report job's time limit, raised by
    the search workers' death penalty (as RQ runs it in the horse), is not one of those: it reaches RQ,
    whose failure hook records the report failed with why. The job stays finished, its results whole."""
    import time

    from rq.job import Job
    from rq.timeouts import JobTimeoutException

    import worker.report
    from spotlight.contract.jobstate import ReportStatus, report_of
    from spotlight.contract.protocol import REPORT_FILE, report_job_id
    from spotlight.server.jobqueue import JobTimeLimitReached, TimeLimitPenalty, on_report_failure

    spec = make_spec(write_dataset(store, n=300, seed=6), QUICK)
    job = enqueue_search(job_queue(conn, settings), spec, settings)
    job_queue(conn, settings).remove(job)
    assert execute(spec, job, settings, store)["status"] == "finished"
    monkeypatch.setattr(worker.report, "job_report", lambda *a, **kw: time.sleep(30))
    with pytest.raises(JobTimeLimitReached) as limit, TimeLimitPenalty(2, JobTimeoutException, job_id=job.id):
        render_queued_report(settings, spec.job_id, store)
    on_report_failure(Job.fetch(report_job_id(spec.job_id), connection=conn), conn, limit.type, limit.value, None)
    status, reason = report_of(job.get_meta(refresh=True))
    assert status == ReportStatus.FAILED and reason is not None and "time limit" in reason
    assert status_of(job) == JobStatus.FINISHED and store.exists(job_file(spec.job_id, REGIONS_FILE))
    assert not store.exists(job_file(spec.job_id, REPORT_FILE))
