"""A job's state: the one place that says what status a job is in, why it failed, and when it ended.

RQ keeps its own job status (queued, started, finished, failed, stopped, ...), but RQ cannot know
how *our* task ended: the task returns normally when it records a failure or a cancel, so RQ calls
those jobs "finished". The code that knows how a job ended writes it into the job's meta
(``META_STATUS`` and, for a failure or cancel, ``META_ERROR`` as a `JobError`):

- the worker task (search done, canceled, bad data, store down, timeout inside the search);
- the failure hooks of spotlight/server/jobqueue.py (work-horse killed, worker gone, timeout elsewhere,
  an exception the task did not catch);
- the API, when it cancels a job that never started.

Everyone who needs a status or a failure cause asks this module: the API's job view and cap,
expiry, /metrics, the worker. Nothing else maps RQ's statuses or reads the meta's status keys.

This module needs pydantic only (rq's Job is a type hint), so the client may import it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from spotlight.contract.protocol import (
    META_ENDED_AT,
    META_ERROR,
    META_REPORT,
    META_STARTED_AT,
    META_STATUS,
    ErrorCode,
    JobError,
    parse_time,
    utcnow,
)

if TYPE_CHECKING:  # pragma: no cover
    from rq.job import Job


class JobStatus(StrEnum):
    """The contract's five statuses of a job."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED})

# RQ's statuses (rq.job.JobStatus values) as the contract's; anything unknown counts as queued.
_FROM_RQ: dict[str, JobStatus] = {
    "queued": JobStatus.QUEUED,
    "deferred": JobStatus.QUEUED,
    "scheduled": JobStatus.QUEUED,
    "started": JobStatus.RUNNING,
    "finished": JobStatus.FINISHED,
    "failed": JobStatus.FAILED,
    "stopped": JobStatus.CANCELED,
    "canceled": JobStatus.CANCELED,
}

# Said of a failed job whose meta holds no cause. Every code path that fails a job while its
# process lives records one, so a failure without one is a process that vanished before it could.
_UNRECORDED_FAILURE = JobError(code=ErrorCode.WORKER_LOST, message="The worker running the job stopped unexpectedly.")
_CANCELED = JobError(code=ErrorCode.CANCELED, message="The job was canceled.")


def status_from(rq_status: str | None, meta: Mapping[str, Any] | None) -> JobStatus:
    """The status of a job from RQ's status text and the job's meta: an end our code recorded wins."""
    own = (meta or {}).get(META_STATUS)
    if own in TERMINAL:
        return JobStatus(own)
    return _FROM_RQ.get(rq_status or "", JobStatus.QUEUED)


def status_of(job: Job, *, refresh: bool = True) -> JobStatus:
    """The contract's status of an RQ job (re-reading RQ's status from Redis unless `refresh` is false)."""
    try:
        rq_status = job.get_status(refresh=refresh)
    except Exception:  # noqa: BLE001 - RQ raises when the status key expired; the meta still speaks
        rq_status = None
    text = getattr(rq_status, "value", rq_status)
    return status_from(str(text) if text is not None else None, job.meta)


def failure_of(job: Job, status: JobStatus | None = None) -> JobError | None:
    """Why a failed or canceled job ended as it did (None for any other status)."""
    status = status or status_of(job)
    recorded = (job.meta or {}).get(META_ERROR)
    if status not in (JobStatus.FAILED, JobStatus.CANCELED):
        return None
    if recorded:
        return JobError.model_validate(recorded)
    return _UNRECORDED_FAILURE if status == JobStatus.FAILED else _CANCELED


def started_at(job: Job) -> datetime | None:
    """When the worker started the job, as it recorded it (else RQ's start time)."""
    return parse_time((job.meta or {}).get(META_STARTED_AT)) or parse_time(job.started_at)


def ended_at(job: Job, status: JobStatus | None = None) -> datetime | None:
    """When the job ended, None while it is queued or running.

    Our recorded end first; then RQ's; a job that ended without either (RQ canceled it before any
    process touched it) falls back to when it was enqueued or created.
    """
    status = status or status_of(job, refresh=False)
    if status not in TERMINAL:
        return None
    for candidate in ((job.meta or {}).get(META_ENDED_AT), job.ended_at, job.enqueued_at, job.created_at):
        when = parse_time(candidate)
        if when is not None:
            return when
    return None


def status_fields(status: JobStatus, error: JobError | None = None) -> dict[str, Any]:
    """The meta fields that move a job into `status`: the one way a status is written.

    QUEUED: waiting (first, or again for a retry); RUNNING: a worker started it now; an end
    (FINISHED, FAILED, CANCELED): when, and why for a failure or cancel.
    """
    if status == JobStatus.QUEUED:
        return {META_STATUS: JobStatus.QUEUED.value, META_ERROR: None, META_ENDED_AT: None}
    if status == JobStatus.RUNNING:
        return {
            META_STATUS: JobStatus.RUNNING.value,
            META_ERROR: None,
            META_ENDED_AT: None,
            META_STARTED_AT: utcnow().isoformat(),
        }
    return {
        META_STATUS: status.value,
        META_ERROR: error.model_dump() if error else None,
        META_ENDED_AT: utcnow().isoformat(),
    }


def has_ended(meta: Mapping[str, Any] | None) -> bool:
    """Whether our code already recorded the job's end (a late hook must not overwrite it)."""
    return (meta or {}).get(META_STATUS) in TERMINAL


# ----- the report of a finished job -----
class ReportStatus(StrEnum):
    """Where a finished job's report.html is: rendered by a follow-on job after the job finished
    (worker/task.py `run_report`), so `finished` never waits for the plots."""

    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


# RQ statuses of the report job under which it will still run (or runs now).
REPORT_JOB_ALIVE = frozenset({"queued", "deferred", "scheduled", "started"})


def report_fields(status: ReportStatus, error: str | None = None) -> dict[str, Any]:
    """The meta field that records the report's status (and why it failed): the one way it is written."""
    return {META_REPORT: {"status": status.value, "error": error}}


def report_of(meta: Mapping[str, Any] | None) -> tuple[ReportStatus | None, str | None]:
    """The report's recorded status and failure reason; (None, None) for a job whose worker rendered
    its report inside the search (before there was a follow-on job) or that has no report yet."""
    raw = (meta or {}).get(META_REPORT)
    if not isinstance(raw, Mapping) or raw.get("status") not in set(ReportStatus):
        return None, None
    return ReportStatus(raw["status"]), raw.get("error")
