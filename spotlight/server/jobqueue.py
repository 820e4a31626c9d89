"""Putting a search on the RQ queue, and what a job's meta says when its worker vanishes.

Both sides import this module (it needs rq, redis and pydantic only; never torch, never FastAPI):
the API enqueues with `enqueue_search`, the worker and RQ's registry maintenance call the
failure hooks below.

How a lost worker is handled (RQ does the work; we configure it and write the outcome):

- The job is enqueued with ``Retry(max=settings.job_retries)`` and an ``on_failure`` callback
  naming `on_job_failure` by import path.
- Work-horse killed while its worker lives: the worker sees the horse exit abnormally, calls its
  ``work_horse_killed_handler`` (`record_worker_lost`) and then retries the job or fails it.
- Whole worker killed: nobody renews the job's entry in the StartedJobRegistry. Once it is
  ``worker_heartbeat_s + worker_lost_after_s`` old, the next registry cleanup (any worker's
  maintenance, every ``maintenance_interval_s``) calls ``on_failure`` with AbandonedJobError and
  the worker exception handlers, then retries the job or moves it to the FailedJobRegistry.

Either way our meta ends ``queued`` again (retried) or ``failed`` with code ``worker_lost``,
never ``running``. `record_worker_lost` is idempotent: RQ may call both hooks for one loss.

Fair share on one worker (yielding)
-----------------------------------
A worker serves the normal and the large lane in turn, but a job it runs holds it to the end.
So a search with regions (or permutation-test shuffles) left gives its worker up when another tenant's search waits in a lane
(`claim_waiting_job`: one yield per waiting job, however many workers see it): between two regions, or two shuffles, the task stores a checkpoint and *returns*
``Retry(max=yield_retry_max(...))``; RQ then puts the same job (same id) at the back of its lane,
counting the yield in ``job.number_of_retries`` (apart from ``retries_left``, which counts the
retries of lost workers above), and records a "retried" result, not a failure. The next run goes
on from the checkpoint. While it waits the job is ``queued`` (RQ's status), its progress says
how many regions are done, and `YieldState` under ``META_YIELDED`` keeps what must survive the
wait: the yields so far, the time already run (the job timeout is for all runs together) and
when the first run started.
"""

from __future__ import annotations

import logging
import math
from types import TracebackType
from typing import Any

from pydantic import BaseModel
from redis import Redis
from rq import Callback, Queue, Retry
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from spotlight.contract.jobstate import JobStatus, ReportStatus, has_ended, report_fields, report_of, status_fields
from spotlight.contract.protocol import (
    META_PROGRESS,
    META_SPEC,
    META_TENANT,
    META_YIELDED,
    REPORT_TASK_PATH,
    TASK_PATH,
    ErrorCode,
    JobError,
    JobSpec,
    Progress,
    report_job_id,
)
from spotlight.server.keys import Keys
from spotlight.server.settings import Settings

log = logging.getLogger("spotlight.server.jobqueue")

# Named by import path so that whichever process runs RQ's cleanup can resolve it.
FAILURE_CALLBACK_PATH = "spotlight.server.jobqueue.on_job_failure"
REPORT_FAILURE_CALLBACK_PATH = "spotlight.server.jobqueue.on_report_failure"
# The webhook delivery task (worker/webhook.py; imports httpx, never torch).
CALLBACK_TASK_PATH = "worker.webhook.deliver_callback"
CALLBACK_RESULT_TTL_S = 3600


class JobTimeLimitReached(BaseException):
    """RQ's job timeout as our search workers raise it: a ``BaseException``, like ``KeyboardInterrupt``.

    Why not RQ's ``JobTimeoutException``: it is an ``Exception``, so every ``except Exception`` that a
    phase keeps to survive its own errors (a plot that fails, a description that fails, a metric that
    cannot be recorded) would swallow the timeout too and the job would run on past its limit. Raised
    as a BaseException, it passes every such handler and reaches the task's own, which records
    ``job_timeout`` (worker/task.py), or RQ's, which calls `on_job_failure`.
    """


class TimeLimitPenalty(UnixSignalDeathPenalty):
    """RQ's SIGALRM death penalty that raises `JobTimeLimitReached` for a job's time limit (RQ's other
    uses of a death penalty, such as its wait for a work-horse, raise what RQ asked for)."""

    def handle_death_penalty(self, signum: int, frame: object) -> None:
        if issubclass(self._exception, JobTimeoutException):
            raise JobTimeLimitReached(f"Task exceeded maximum timeout value ({self._timeout} seconds)")
        super().handle_death_penalty(signum, frame)


TIME_LIMIT_EXCEPTIONS: tuple[type[BaseException], ...] = (JobTimeoutException, JobTimeLimitReached)


def job_queue(connection: Redis, settings: Settings) -> Queue:
    """The queue the API enqueues on and every worker listens to."""
    return Queue(settings.rq_queue_name(), connection=connection)


def large_queue(connection: Redis, settings: Settings) -> Queue:
    """The large lane (`Keys.large_queue`)."""
    return Queue(Keys.of(settings).large_queue, connection=connection)


def search_lanes(connection: Redis, settings: Settings) -> list[Queue]:
    """The lanes a search worker serves, in the order it serves them: normal, then large."""
    return [job_queue(connection, settings), large_queue(connection, settings)]


# How far into each lane a running search looks for another tenant's job. The front of a lane is
# what the worker takes next; each turn's end brings the first other tenant's job found here to
# the front (`pass_the_turn`), so a job further back comes within reach as the turns go round.
YIELD_SCAN = 20


# How long a running search's claim on a waiting job lasts (see `claim_waiting_job`): long enough for
# the yielding worker to queue its job again and dequeue the next (milliseconds), so the searches of
# other busy workers reaching a region boundary meanwhile do not yield for the same job. A job that
# still waits after that was not the one the freed worker took (another lane's came first), so it
# may be yielded to again.
YIELD_CLAIM_TTL_S = 5


def _waiting_for(connection: Redis, settings: Settings, tenant: str, fresh_only: bool, scan: int) -> list[str]:
    """Ids of the searches of tenants other than `tenant` among the first `scan` jobs of each lane."""
    found = []
    for lane in search_lanes(connection, settings):
        ids = lane.get_job_ids(0, scan)
        for job in Job.fetch_many(ids, connection=connection) if ids else []:
            if job is None or job.func_name != TASK_PATH:
                continue
            owner = (job.meta or {}).get(META_TENANT)
            if owner is None or owner == tenant or has_ended(job.meta):
                continue
            if not fresh_only or META_YIELDED not in job.meta:
                found.append(job.id)
    return found


def other_tenant_waiting(
    connection: Redis, settings: Settings, tenant: str, *, fresh_only: bool = False, scan: int = YIELD_SCAN
) -> bool:
    """Whether a search of a tenant other than `tenant` waits among the first `scan` jobs of a lane;
    with `fresh_only`, only one that has not yielded yet (never ran, or lost its worker) counts.

    Why fresh first: a running search gives way to a job that has not started (so that job starts
    within one region's time), but not to one that already had its turn, unless it has itself run
    for ``yield_slice_s`` (see worker/task.py); otherwise two multi-region jobs of two tenants
    would hand the worker back and forth after every region. Reads job ids and their meta only:
    a few Redis round trips, asked once per region, never per step.
    """
    return bool(_waiting_for(connection, settings, tenant, fresh_only, scan))


def claim_waiting_job(
    connection: Redis,
    settings: Settings,
    tenant: str,
    job_id: str,
    *,
    fresh_only: bool = False,
    scan: int = YIELD_SCAN,
) -> str | None:
    """A waiting search of another tenant (as `other_tenant_waiting` finds them) that no other running
    search has yielded to yet, now claimed for `job_id`; None when there is none.

    Why claims: with several busy workers, every one of them sees the same waiting job at its next
    region boundary; one yield lets it in, so only the search that wins the claim (``SET NX``)
    yields, and the others keep their workers.
    """
    for waiting in _waiting_for(connection, settings, tenant, fresh_only, scan):
        key = Keys.of(settings).yield_claim(waiting)
        if connection.set(key, job_id, nx=True, ex=YIELD_CLAIM_TTL_S):
            return waiting
        holder = connection.get(key)
        if holder is not None and (holder.decode() if isinstance(holder, bytes) else holder) == job_id:
            return waiting  # this job yielded to it before and it still waits: yield again
    return None


# Move a job id to the front of a lane only if it is still in that lane (a worker may have taken it
# meanwhile: pushing it again would run it twice). One script, so nobody sees it in neither place.
_BRING_FORWARD = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then
  redis.call('LPUSH', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def bring_forward(connection: Redis, settings: Settings, job_id: str) -> bool:
    """Put a waiting search at the front of its lane, where the next worker free takes it; False when
    it no longer waits. The job keeps its id, meta and RQ state: only its place in RQ's list changes."""
    for lane in search_lanes(connection, settings):
        if connection.eval(_BRING_FORWARD, 1, lane.key, job_id):
            return True
    return False


def pass_the_turn(connection: Redis, settings: Settings, tenant: str, scan: int = YIELD_SCAN) -> str | None:
    """When a search of `tenant` ends its turn, the first waiting search of another tenant that waits
    behind a job of `tenant` goes to the front of its lane; its id, or None.

    Why: RQ serves each lane in order, and a yield puts the running job at the back of its lane, but
    the other tenant's job may wait behind this tenant's other queued jobs; without this, a tenant
    with 8 queued jobs would have each of them run before a job another tenant queued after them.
    With it the turns go round the tenants: after each job end or yield the worker's next job in
    that lane is another tenant's, when one waits.
    """
    for lane in search_lanes(connection, settings):
        ids = lane.get_job_ids(0, scan)
        ahead_is_ours = False
        for job in Job.fetch_many(ids, connection=connection) if ids else []:
            if job is None or job.func_name != TASK_PATH or has_ended(job.meta):
                continue
            owner = (job.meta or {}).get(META_TENANT)
            if owner == tenant:
                ahead_is_ours = True
            elif owner is not None:
                if ahead_is_ours and bring_forward(connection, settings, job.id):
                    return job.id
                break  # another tenant's job is already the first of this lane to run
    return None


class YieldState(BaseModel):
    """What a search that yielded keeps in its meta (``META_YIELDED``) across its runs."""

    regions: int = 0  # regions done and checkpointed
    yields: int = 0  # how often it gave its worker up
    ran_s: float = 0.0  # time its runs took so far (the job timeout covers them all)
    timeout_s: int = 0  # the job's whole time limit, as enqueued
    first_started_at: str | None = None  # when its first run started (what the API shows as started_at)

    @classmethod
    def of(cls, meta: dict[str, Any] | None) -> YieldState | None:
        raw = (meta or {}).get(META_YIELDED)
        return cls.model_validate(raw) if raw else None


def yield_retry_max(n_spotlights: int, n_permutations: int = 0) -> int:
    """``Retry.max`` of a yield. A run yields only after a region it found and checkpointed, after a
    region it described, or after a shuffle of its permutation test, so a job yields at most
    (n_spotlights - 1) + (n_spotlights - 1) + (n_permutations - 1) times; RQ fails a job whose yields
    reach the max, which the task therefore never lets happen (it goes on instead of yielding)."""
    return max(1, 2 * int(n_spotlights) + int(n_permutations))


def progress_with_regions_done(n_spotlights: int, steps: int, done: int) -> Progress:
    """A job's progress when `done` of its regions are found and it waits for its next run."""
    if done <= 0:
        return Progress(n_spotlights=n_spotlights, steps=steps)
    return Progress(
        spotlight=done,
        n_spotlights=n_spotlights,
        step=steps,
        steps=steps,
        fraction=min(1.0, done / max(1, n_spotlights)),
    )


def callback_queue(connection: Redis, settings: Settings) -> Queue:
    """Where finished jobs' webhooks wait for delivery: `<queue_name>-callbacks`.

    Why a queue of its own: delivery retries with backoff against a receiver that may be down, up
    to about a minute; done inside the search job it would hold a GPU worker. Any worker
    started without ``--no-callbacks`` takes these when it has no search to run; `spotlight up` and
    docker-compose run one callbacks-only worker and keep the search workers off this queue.
    """
    return Queue(Keys.of(settings).callbacks_queue, connection=connection)


def callback_backoff_s(settings: Settings, max_backoff_s: int = 60) -> list[int]:
    """The waits between a delivery's attempts: 1, 2, 4, ... s, each capped (RQ's Retry intervals)."""
    return [min(max_backoff_s, 2**i) for i in range(max(1, settings.webhook_retries) - 1)]


def callback_timeout_s(settings: Settings) -> int:
    """The RQ timeout of one delivery attempt: its HTTP timeout plus a margin (the waits between
    attempts are RQ's scheduled retries, outside any run)."""
    return int(math.ceil(settings.webhook_timeout_s)) + 30


def enqueue_callback(connection: Redis, settings: Settings, url: str, payload: dict[str, Any], delivery_id: str) -> Job:
    """Queue one webhook delivery: the URL and a small JSON summary (no arrays), nothing else.

    Each run is one attempt (worker/webhook.py); RQ's ``Retry`` runs the next after the backoff, from
    its scheduled registry, which the callbacks worker's scheduler (``with_scheduler``, worker/runner.py)
    moves back to the queue: no worker waits through a backoff, and a receiver that hangs holds a
    worker for one attempt at a time, not for its whole schedule.
    """
    backoff = callback_backoff_s(settings)
    return callback_queue(connection, settings).enqueue(
        CALLBACK_TASK_PATH,
        url,
        payload,
        delivery_id,
        description=f"spotlight callback {delivery_id}",
        job_timeout=callback_timeout_s(settings),
        result_ttl=CALLBACK_RESULT_TTL_S,
        failure_ttl=settings.result_ttl_s,
        retry=Retry(max=len(backoff), interval=backoff) if backoff else None,
    )


def report_queue(connection: Redis, settings: Settings) -> Queue:
    """Where finished jobs wait for their report: `<queue_name>-reports`, served by the search workers
    (the report draws with matplotlib, a worker extra), after their search lanes in RQ's round robin.

    Why a follow-on job instead of rendering inside the search: the plots cost several times a small
    search (docs/engine.md, speed), and the job's results (regions, members, weights) do not need
    them; the search's worker is free for the next search as soon as the results are stored, and any
    idle worker renders the report meanwhile.
    """
    return Queue(Keys.of(settings).reports_queue, connection=connection)


def enqueue_report(connection: Redis, settings: Settings, job_id: str, info: dict[str, Any]) -> Job:
    """Queue the rendering of finished job `job_id`'s report (worker/task.py `run_report`); `info` is
    the report's header (times, device, verdict), known only to the search that ended.

    Not retried: a lost or failed rendering records `report_failed` in the search job's meta
    (`on_report_failure`, `record_worker_lost`), which the report route answers with.
    """
    connection.sadd(Keys.of(settings).reports_pending, report_job_id(job_id))
    return report_queue(connection, settings).enqueue(
        REPORT_TASK_PATH,
        job_id,
        info,
        job_id=report_job_id(job_id),
        description=f"spotlight report {job_id}",
        job_timeout=settings.job_timeout_s,
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.result_ttl_s,
        on_failure=Callback(REPORT_FAILURE_CALLBACK_PATH),
    )


def record_report_failed(connection: Redis, job_id: str, reason: str) -> None:
    """The report of finished job `job_id` will not come: say why in its meta (a ready one stays ready)."""
    try:
        job = Job.fetch(job_id, connection=connection)
    except Exception:  # noqa: BLE001 - the search job expired or was deleted: nobody will ask
        return
    meta = job.get_meta(refresh=True)
    if report_of(meta)[0] == ReportStatus.READY:
        return
    meta.update(report_fields(ReportStatus.FAILED, reason))
    job.save_meta()


def on_report_failure(
    job: Job,
    connection: Redis,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """RQ's ``on_failure`` of a report job: it raised, ran past its limit or was abandoned."""
    if exc_type is AbandonedJobError or isinstance(exc_value, AbandonedJobError):
        reason = "the worker rendering it stopped"
    elif isinstance(exc_value, TIME_LIMIT_EXCEPTIONS):
        reason = f"rendering it ran past its time limit ({exc_value})"
    else:
        reason = f"rendering it failed: {exc_value!r}"
    search_id = str(job.args[0]) if job.args else job.id.removesuffix("-report")
    record_report_failed(connection, search_id, reason)


def initial_meta(spec: JobSpec) -> dict[str, Any]:
    """The meta a job starts with: who owns it, what it asks, and that it waits."""
    return {
        META_TENANT: spec.tenant,
        META_SPEC: spec.model_dump(mode="json"),
        META_PROGRESS: Progress(n_spotlights=spec.params.n_spotlights, steps=spec.params.steps).model_dump(),
        **status_fields(JobStatus.QUEUED),
    }


def enqueue_options(settings: Settings) -> dict[str, Any]:
    """RQ enqueue keywords from Settings: timeout, TTLs, retries and the failure hook."""
    return {
        "job_timeout": settings.job_timeout_s,
        "result_ttl": settings.result_ttl_s,
        "failure_ttl": settings.result_ttl_s,
        "retry": Retry(max=settings.job_retries) if settings.job_retries > 0 else None,
        "on_failure": Callback(FAILURE_CALLBACK_PATH),
    }


def enqueue_search(
    queue: Queue, spec: JobSpec, settings: Settings, *, meta: dict[str, Any] | None = None, at_front: bool = False
) -> Job:
    """Enqueue one search under the job id the API chose; the task gets the spec as a JSON dict."""
    return queue.enqueue(
        TASK_PATH,
        spec.model_dump(mode="json"),
        job_id=spec.job_id,
        description=f"spotlight search {spec.job_id}",
        meta={**initial_meta(spec), **(meta or {})},
        at_front=at_front,
        **enqueue_options(settings),
    )


# ----- what a job's meta says when its run ended without the task saying so -----
def _mark(job: Job, status: JobStatus, error: JobError | None) -> None:
    meta = job.get_meta(refresh=True)
    if has_ended(meta):
        return  # the task already wrote how it ended; a late hook must not overwrite that
    meta.update(status_fields(status, error))
    if status == JobStatus.QUEUED:  # waits for its retry: it starts over from its checkpoint, if any
        spec = meta.get(META_SPEC) or {}
        params = spec.get("params") or {}
        yielded = YieldState.of(meta)
        meta[META_PROGRESS] = progress_with_regions_done(
            int(params.get("n_spotlights", 0)), int(params.get("steps", 0)), yielded.regions if yielded else 0
        ).model_dump()
    job.save_meta()


def record_worker_lost(job: Job, reason: str = "the worker running it stopped") -> None:
    """The job's worker or work-horse died mid-run: queued again when RQ will retry it, else failed."""
    if job.func_name == REPORT_TASK_PATH:
        log.warning("%s lost (%s)", job.description or job.id, reason)
        record_report_failed(job.connection, str(job.args[0]), f"the worker rendering it stopped ({reason})")
        return
    if job.func_name != TASK_PATH:  # a webhook delivery: it has no status of ours to record
        log.warning("%s lost (%s)", job.description or job.id, reason)
        return
    if job.should_retry:
        log.warning("job %s lost (%s); retrying, %s retries left", job.id, reason, job.retries_left)
        _mark(job, JobStatus.QUEUED, None)
    else:
        log.error("job %s lost (%s); no retries left", job.id, reason)
        _mark(
            job,
            JobStatus.FAILED,
            JobError(
                code=ErrorCode.WORKER_LOST,
                message=f"The job was interrupted ({reason}) and not retried further; submit it again.",
            ),
        )


def on_job_failure(
    job: Job,
    connection: Redis,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """RQ's ``on_failure`` callback: in the horse when the task raised, in a cleanup when abandoned."""
    if exc_type is AbandonedJobError or isinstance(exc_value, AbandonedJobError):
        record_worker_lost(job, "its worker stopped sending heartbeats")
    elif isinstance(exc_value, TIME_LIMIT_EXCEPTIONS):
        # The task records its own timeouts; this catches one that fired outside the search.
        # Another run would time out again, so RQ is told not to retry it.
        job.retries_left = 0
        _mark(
            job,
            JobStatus.FAILED,
            JobError(code=ErrorCode.JOB_TIMEOUT, message=f"The job ran past its time limit: {exc_value}"),
        )
    elif job.should_retry:
        log.warning("job %s raised %r; retrying", job.id, exc_value)
        _mark(job, JobStatus.QUEUED, None)
    else:
        _mark(
            job,
            JobStatus.FAILED,
            JobError(code=ErrorCode.INTERNAL, message=f"The worker failed unexpectedly: {exc_value!r}"),
        )


def abandoned_job_handler(
    job: Job, exc_type: type[BaseException] | None, exc_value: BaseException | None, tb: TracebackType | None
) -> None:
    """Worker exception handler: covers abandoned jobs enqueued without our ``on_failure`` callback.

    RQ passes a worker's exception handlers to the StartedJobRegistry cleanup it runs during
    maintenance; in the horse they also see ordinary task errors, which on_job_failure handles.
    Returns None so RQ's remaining handlers still run.
    """
    if exc_type is AbandonedJobError or isinstance(exc_value, AbandonedJobError):
        record_worker_lost(job, "its worker stopped sending heartbeats")
