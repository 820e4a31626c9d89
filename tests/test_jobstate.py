"""One module owns a job's state: statuses, the terminal set, and failure causes recorded as data."""

from __future__ import annotations

import redis
from rq import Queue
from rq.job import JobStatus as RqStatus

from spotlight.contract.jobstate import TERMINAL, JobStatus, ended_at, failure_of, status_fields, status_of
from spotlight.contract.protocol import META_STATUS, ErrorCode, JobError
from spotlight.server.jobqueue import on_job_failure, record_worker_lost


def _job(redis_url: str, **meta: object):  # type: ignore[no-untyped-def]
    queue = Queue("jobstate-test", connection=redis.Redis.from_url(redis_url))
    return queue.enqueue("time.sleep", 0, meta=dict(meta))


def test_terminal_set_is_the_three_ends() -> None:
    assert TERMINAL == {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED}
    assert JobStatus.QUEUED not in TERMINAL and "running" not in TERMINAL and "failed" in TERMINAL


def test_recorded_end_wins_over_rq_and_carries_its_cause(redis_url: str) -> None:
    job = _job(redis_url)
    job.set_status(RqStatus.FINISHED)  # the task returned normally after recording a failure
    job.meta.update(status_fields(JobStatus.FAILED, JobError(code=ErrorCode.STORE_ERROR, message="disk full")))
    job.save_meta()
    assert status_of(job) == JobStatus.FAILED
    error = failure_of(job)
    assert error is not None and error.code == ErrorCode.STORE_ERROR and error.message == "disk full"
    assert ended_at(job) is not None


def test_a_failure_nobody_recorded_is_a_lost_worker(redis_url: str) -> None:
    job = _job(redis_url)
    job.set_status(RqStatus.FAILED)  # RQ failed it; no code of ours lived to record why
    error = failure_of(job)
    assert status_of(job) == JobStatus.FAILED
    assert error is not None and error.code == ErrorCode.WORKER_LOST  # no cause recorded: the process vanished


def test_failure_hooks_record_the_cause_once(redis_url: str) -> None:
    job = _job(redis_url)
    job.retries_left = 0
    job.set_status(RqStatus.STARTED)
    record_worker_lost(job, "test")
    assert META_STATUS not in job.get_meta(refresh=True)  # not our task: nothing of ours to record
    ours = Queue("jobstate-test", connection=job.connection).enqueue("worker.task.run_job", {}, meta={})
    ours.set_status(RqStatus.STARTED)
    on_job_failure(ours, ours.connection, ValueError, ValueError("boom"), None)
    assert status_of(ours) == JobStatus.FAILED
    error = failure_of(ours)
    assert error is not None and error.code == ErrorCode.INTERNAL and "boom" in error.message
    record_worker_lost(ours, "late hook")  # an end already recorded is never overwritten
    error = failure_of(ours)
    assert error is not None and error.code == ErrorCode.INTERNAL


def test_running_and_queued_jobs_have_no_failure_and_no_end(redis_url: str) -> None:
    job = _job(redis_url)
    assert status_of(job) == JobStatus.QUEUED and failure_of(job) is None and ended_at(job) is None
    job.set_status(RqStatus.STARTED)
    assert status_of(job) == JobStatus.RUNNING and failure_of(job) is None
