"""Jobs: RQ holds them (queue, status, timeout, retry, TTL); this module names, caps and reads them.

The API enqueues `protocol.TASK_PATH` by its import path, so it never imports the worker or torch;
the one argument is a `JobSpec` (ids and params, never arrays). Per-tenant state kept beside RQ:
- `Keys.tenant_jobs(t)`: every job of the tenant, scored by creation time (listing, newest first);
- `Keys.tenant_active(t)`: jobs that may still be queued or running, pruned lazily on each submit
  and status listing by asking RQ, so the cap of `max_active_jobs_per_tenant` needs no cooperation
  from workers; a pruned job that ended moves to
- `Keys.tenant_status(t, status)`: the tenant's ended jobs by terminal status (listing by status);
- `Keys.idempotency(t, key)`: (body hash, job id, pending|queued) for `Idempotency-Key`, as long as
  results live.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import time
from typing import Any

import redis
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from service.schemas import JobOut
from spotlight.contract.errors import Conflict, LimitReached, NotFound
from spotlight.contract.jobstate import (
    REPORT_JOB_ALIVE,
    TERMINAL,
    JobStatus,
    ReportStatus,
    ended_at,
    failure_of,
    report_of,
    started_at,
    status_fields,
    status_of,
)
from spotlight.contract.params import SearchParams
from spotlight.contract.protocol import (
    META_DEVICE,
    META_PROGRESS,
    META_SPEC,
    META_TENANT,
    DatasetRecord,
    ErrorCode,
    JobError,
    JobSpec,
    Progress,
    parse_time,
    redis_text,
    report_job_id,
    utcnow,
)
from spotlight.server import cost as cost_lib
from spotlight.server.jobqueue import enqueue_search, large_queue
from spotlight.server.keys import Keys
from spotlight.server.settings import Settings

RETRY_AFTER_S = 10

# Idempotency-Key states: a request is making the job (PENDING), or the job is queued (QUEUED).
PENDING, QUEUED = "pending", "queued"
# A claim outlives its request only when the API process died mid-request; then the key frees itself.
IDEMPOTENCY_PENDING_TTL_S = 600
IDEMPOTENCY_WAIT_S = 60  # how long a second request with the same key waits on the first one
IDEMPOTENCY_POLL_S = 0.05
# The key's job id and whether it is pending, compared inside Redis so the check and the write are one step.
_COMPLETE_CLAIM = """
local v = redis.call('get', KEYS[1])
if v and cjson.decode(v)['job_id'] == ARGV[1] and cjson.decode(v)['state'] == 'pending' then
  return redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""
_FREE_KEY = """
local v = redis.call('get', KEYS[1])
if v and cjson.decode(v)['job_id'] == ARGV[1] and ((cjson.decode(v)['state'] == 'pending') == (ARGV[2] == '1')) then
  return redis.call('del', KEYS[1])
end
return 0
"""


def _idempotency_value(digest: str, job_id: str, state: str) -> str:
    """What the key holds: one canonical text, so compare-and-set can compare it whole."""
    return json.dumps({"body_sha256": digest, "job_id": job_id, "state": state}, sort_keys=True)


def body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _created(job: Job) -> float:
    """When the job was submitted, in epoch seconds (its score in every per-tenant index)."""
    created = parse_time((job.meta.get(META_SPEC) or {}).get("created_at")) or parse_time(job.created_at)
    return created.timestamp() if created else 0.0


def _not_found(job_id: str) -> NotFound:
    return NotFound(ErrorCode.JOB_NOT_FOUND, f"No job {job_id!r} for this caller.", {"job": job_id})


class JobRegistry:
    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r = r
        self.settings = settings
        self.keys = Keys.of(settings)
        self._complete_claim = r.register_script(_COMPLETE_CLAIM)
        self._free_key = r.register_script(_FREE_KEY)
        self.queue = Queue(settings.rq_queue_name(), connection=r)
        self.large = large_queue(r, settings)  # the large lane (spotlight/server/cost.py)

    # ----- reading -----
    def fetch(self, tenant: str, job_id: str) -> Job:
        if not job_id.startswith("job_"):
            raise _not_found(job_id)
        try:
            job = Job.fetch(job_id, connection=self.r)
        except NoSuchJobError:
            raise _not_found(job_id) from None
        if not self._owned(tenant, job):
            raise _not_found(job_id)
        return job

    def _owned(self, tenant: str, job: Job) -> bool:
        # RQ's job keys are not namespaced: a job of another deployment sharing this Redis
        # (SPOTLIGHT_NAMESPACE) was enqueued on another queue, and is not ours.
        return job.meta.get(META_TENANT) == tenant and job.origin in (self.queue.name, self.large.name)

    def _views(self, tenant: str, ids: builtins.list[str]) -> builtins.list[JobOut | None]:
        """The tenant's jobs of `ids` in one round trip to Redis (None where expired or not the tenant's)."""
        jobs = Job.fetch_many([i for i in ids if i.startswith("job_")], connection=self.r) if ids else []
        found = {job.id: job for job in jobs if job is not None and self._owned(tenant, job)}
        return [self.view(found[i], refresh=False) if i in found else None for i in ids]

    def report_state(self, job: Job) -> tuple[ReportStatus | None, str | None, str | None]:
        """A finished job's report: its status, why it failed, and RQ's status of the job rendering it.

        The recorded status (spotlight/contract/jobstate.py), except that a pending report whose rendering job is
        gone, failed or stopped without recording it counts as failed: a report is never pending for good.
        """
        status, reason = report_of(job.meta)
        if status != ReportStatus.PENDING:
            return status, reason, None
        told = self.r.hget(Job.key_for(report_job_id(job.id)), "status")
        rq_status = told.decode() if isinstance(told, bytes) else told
        if rq_status in REPORT_JOB_ALIVE or rq_status == "finished":
            return status, None, rq_status
        return ReportStatus.FAILED, f"the job rendering it ended {rq_status or 'without a trace'}", rq_status

    def view(self, job: Job, *, refresh: bool = True) -> JobOut:
        meta = job.meta
        spec = JobSpec.model_validate(meta[META_SPEC])
        status = status_of(job, refresh=refresh)
        progress = Progress.model_validate(
            meta.get(META_PROGRESS)
            or {
                "n_spotlights": spec.params.n_spotlights,
                "steps": spec.params.steps,
            }
        )
        if status == JobStatus.FINISHED:
            progress = progress.model_copy(update={"fraction": 1.0})
        return JobOut(
            id=job.id,
            status=status,
            progress=progress,
            created_at=spec.created_at,
            started_at=started_at(job) if status != JobStatus.QUEUED else None,
            ended_at=ended_at(job, status),
            error=failure_of(job, status),
            params=spec.params,
            dataset=spec.dataset_id,
            callback_url=spec.callback_url,
            cancel_requested=status not in TERMINAL and bool(self.r.exists(self.keys.cancel(job.id))),
            device=meta.get(META_DEVICE),
            name=spec.name,
            tags=spec.tags,
            report=self.report_state(job)[0] if status == JobStatus.FINISHED else None,
        )

    def list(self, tenant: str, limit: int, offset: int, status: str | None = None) -> tuple[list[JobOut], int]:
        """A page of the tenant's jobs, newest first; with `status`, only jobs in that state (and their total)."""
        key = self.keys.tenant_jobs(tenant)
        if status is not None:
            return self._list_by_status(tenant, limit, offset, status)
        # Past the end: an empty page (Redis refuses offsets beyond 64 bits with an error).
        if offset >= int(self.r.zcard(key)):
            return [], int(self.r.zcard(key))
        ids = [redis_text(i) for i in self.r.zrevrange(key, offset, offset + limit - 1)]
        out: list[JobOut] = []
        for job_id, view in zip(ids, self._views(tenant, ids), strict=True):
            if view is None:  # expired with its TTL: forget it
                self.r.zrem(key, job_id)
            else:
                out.append(view)
        return out, int(self.r.zcard(key))

    def _list_by_status(self, tenant: str, limit: int, offset: int, status: str) -> tuple[builtins.list[JobOut], int]:
        """A page of the tenant's jobs in one status, newest first, reading only that page's jobs.

        Queued and running jobs are the active set (at most `max_active_jobs_per_tenant`, so it is
        read whole); an ended job is in its status's sorted set (`tenant_status_key`), moved there
        from the active set by `_settle` once it has ended, so a page costs `limit` reads however
        many jobs the tenant has.
        """
        self._ensure_indexed(tenant)
        self._settle(tenant)
        if status in TERMINAL:
            key = self.keys.tenant_status(tenant, status)
            total = int(self.r.zcard(key))
            if offset >= total:
                return [], total
            out: builtins.list[JobOut] = []
            ids = [redis_text(i) for i in self.r.zrevrange(key, offset, offset + limit - 1)]
            for job_id, view in zip(ids, self._views(tenant, ids), strict=True):
                if view is None:  # expired with its TTL
                    self.r.zrem(key, job_id)
                    continue
                if view.status != status:  # retried by RQ after it was indexed: active again
                    pipe = self.r.pipeline()
                    pipe.zrem(key, job_id)
                    pipe.sadd(self.keys.tenant_active(tenant), job_id)
                    pipe.execute()
                    continue
                out.append(view)
            return out, int(self.r.zcard(key))
        active = [redis_text(i) for i in self.r.smembers(self.keys.tenant_active(tenant))]
        views = [v for v in self._views(tenant, active) if v is not None and v.status == status]
        views.sort(key=lambda v: (v.created_at, v.id), reverse=True)
        return views[offset : offset + limit], len(views)

    def _settle(self, tenant: str) -> int:
        """Move the tenant's active jobs that have ended into their status's index; how many stay active."""
        key = self.keys.tenant_active(tenant)
        ids = [redis_text(i) for i in self.r.smembers(key)]
        pipe = self.r.pipeline()
        left = 0
        for job_id, job in zip(ids, Job.fetch_many(ids, connection=self.r), strict=True):
            if job is None:
                pipe.srem(key, job_id)
                continue
            status = status_of(job, refresh=False)
            if status in TERMINAL:
                pipe.srem(key, job_id)
                pipe.zadd(self.keys.tenant_status(tenant, status), {job_id: _created(job)})
            else:
                left += 1
        pipe.execute()
        return left

    def _ensure_indexed(self, tenant: str) -> None:
        """Index the tenant's ended jobs made before the status index existed (once per tenant)."""
        if self.r.exists(self.keys.tenant_status_indexed(tenant)):
            return
        key = self.keys.tenant_jobs(tenant)
        active = {redis_text(i) for i in self.r.smembers(self.keys.tenant_active(tenant))}
        for start in range(0, int(self.r.zcard(key)), 500):
            ids = [redis_text(i) for i in self.r.zrevrange(key, start, start + 499)]
            pipe = self.r.pipeline()
            for job_id, job in zip(ids, Job.fetch_many(ids, connection=self.r), strict=True):
                if job is not None and job_id not in active:
                    status = status_of(job, refresh=False)
                    if status in TERMINAL:
                        pipe.zadd(self.keys.tenant_status(tenant, status), {job_id: _created(job)})
                    else:
                        pipe.sadd(self.keys.tenant_active(tenant), job_id)
            pipe.execute()
        self.r.set(self.keys.tenant_status_indexed(tenant), "1")

    # ----- idempotency -----
    # One key, one job, whatever the interleaving: the first request claims the key atomically
    # (SET NX) as *pending* with its body's hash, makes the job, then marks the key *queued*. A
    # request that finds the key pending with the same body waits for that outcome (the job, or
    # the key freed when the first request failed, and then it claims the key itself); a different
    # body is a 409 at once. Only the request holding a claim frees or completes it (compare-and-
    # set in Redis), so nobody can free a claim it does not own.
    def claim_idempotency(self, tenant: str, key: str, digest: str, job_id: str) -> str | None:
        """None when this request now holds the key (pending) and must make `job_id`; else the id
        of the job the key already names. Conflict on a different body, or a claim still pending
        after `IDEMPOTENCY_WAIT_S`."""
        name = self.keys.idempotency(tenant, key)
        mine = _idempotency_value(digest, job_id, PENDING)
        deadline = time.monotonic() + IDEMPOTENCY_WAIT_S
        while True:
            if self.r.set(name, mine, nx=True, ex=IDEMPOTENCY_PENDING_TTL_S):
                return None
            raw = self.r.get(name)
            if raw is None:  # freed between our two calls: try the claim again
                continue
            saved = json.loads(raw)
            if saved["body_sha256"] != digest:
                raise Conflict(
                    ErrorCode.IDEMPOTENCY_CONFLICT,
                    "This Idempotency-Key was used with a different request body; use a new key.",
                    {"idempotency_key": key, "job": saved["job_id"]},
                )
            if saved.get("state") != PENDING:
                return str(saved["job_id"])
            if time.monotonic() > deadline:
                raise Conflict(
                    ErrorCode.IDEMPOTENCY_CONFLICT,
                    "A request with this Idempotency-Key and this body is still being processed; "
                    "retry shortly to get its job.",
                    {"idempotency_key": key, "reason": "pending"},
                    retry_after_s=RETRY_AFTER_S,
                )
            time.sleep(IDEMPOTENCY_POLL_S)

    def complete_idempotency(self, tenant: str, key: str, digest: str, job_id: str) -> None:
        """The claimed key now names the queued job, for as long as results live."""
        value = _idempotency_value(digest, job_id, QUEUED)
        self._complete_claim(
            keys=[self.keys.idempotency(tenant, key)], args=[job_id, value, self.settings.result_ttl_s]
        )

    def release_idempotency(self, tenant: str, key: str, job_id: str, *, pending: bool = True) -> None:
        """Free the key, only when it still names job_id: our own failed claim (pending), or a job
        that expired (pending=False)."""
        self._free_key(keys=[self.keys.idempotency(tenant, key)], args=[job_id, "1" if pending else "0"])

    # ----- submitting -----
    def active_count(self, tenant: str) -> int:
        """Queued + running jobs of the tenant; ids RQ reports as ended move to their status's index."""
        return self._settle(tenant)

    def check_capacity(self, tenant: str) -> None:
        cap = self.settings.max_active_jobs_per_tenant
        active = self.active_count(tenant)
        if active >= cap:
            raise LimitReached(
                ErrorCode.TOO_MANY_JOBS,
                f"You have {active} queued or running jobs, the limit is {cap}; wait for some to finish.",
                {"active": active, "limit": cap},
                retry_after_s=RETRY_AFTER_S,
            )

    def submit(
        self,
        tenant: str,
        job_id: str,
        dataset: DatasetRecord,
        params: SearchParams,
        callback_url: str | None,
        name: str | None = None,
        tags: builtins.list[str] | None = None,
        *,
        large: bool = False,
        cost: int | None = None,
    ) -> Job:
        """Queue the job, under the tenant's lock: the cap on active jobs and, with `cost`, the tenant's
        cost budget are checked and the job counted against them in one step, so two submissions at
        once cannot both take the last slot (LimitReached for the one that would pass a limit)."""
        spec = JobSpec(
            job_id=job_id,
            tenant=tenant,
            dataset_id=dataset.id,
            dataset_sha256=dataset.sha256,
            params=params,
            callback_url=callback_url,
            created_at=utcnow(),
            name=name,
            tags=list(tags or []),
        )
        lock = self.r.lock(self.keys.submit_lock(tenant), timeout=30, blocking_timeout=30)
        with lock:
            self.check_capacity(tenant)
            if cost is not None:
                active_ids = {redis_text(i) for i in self.r.smembers(self.keys.tenant_active(tenant))}
                cost_lib.check_budget(
                    self.r, self.keys, tenant, cost, active_ids, self.settings.max_active_cost_per_tenant
                )
            # One enqueue path for API and tests: timeout, TTLs, retries and the failure hook from Settings.
            job = enqueue_search(self.large if large else self.queue, spec, self.settings)
            if not self.r.zcard(self.keys.tenant_jobs(tenant)):  # a new tenant: nothing made before the status index
                self.r.set(self.keys.tenant_status_indexed(tenant), "1")
            pipe = self.r.pipeline()
            pipe.zadd(self.keys.tenant_jobs(tenant), {job_id: spec.created_at.timestamp()})
            pipe.sadd(self.keys.tenant_active(tenant), job_id)
            if cost is not None:
                pipe.hset(self.keys.cost(tenant), job_id, cost)
            pipe.execute()
        return job

    # ----- a dataset deleted -----
    def jobs_of_dataset(self, tenant: str, dataset_id: str) -> builtins.list[Job]:
        """The tenant's jobs that searched `dataset_id` (a walk of the tenant's jobs, a page of 500 per
        round trip: deleting a dataset is rare, and needs no index kept on every submit)."""
        key = self.keys.tenant_jobs(tenant)
        found: builtins.list[Job] = []
        for start in range(0, int(self.r.zcard(key)), 500):
            ids = [redis_text(i) for i in self.r.zrange(key, start, start + 499)]
            for job in Job.fetch_many(ids, connection=self.r):
                if job is not None and self._owned(tenant, job):
                    if (job.meta.get(META_SPEC) or {}).get("dataset_id") == dataset_id:
                        found.append(job)
        return found

    def stop_for_deleted_dataset(self, tenant: str, job: Job) -> None:
        """A queued or running job of a deleted dataset is canceled (a running one at its next step)."""
        try:
            self.cancel(tenant, job.id)
        except (Conflict, NotFound):  # already ended, or gone
            pass

    # ----- canceling -----
    def cancel(self, tenant: str, job_id: str) -> tuple[Job, bool]:
        """Cancel now when queued (True), or ask the running worker to stop (False); Conflict when ended."""
        job = self.fetch(tenant, job_id)
        status = status_of(job)
        if status in TERMINAL:
            raise Conflict(
                ErrorCode.JOB_NOT_CANCELABLE,
                f"The job is already {status}; nothing to cancel.",
                {"job": job_id, "status": status},
            )
        # Set first: if a worker picks the job up between here and RQ's cancel, it still stops.
        self.r.set(self.keys.cancel(job_id), "1", ex=self.settings.job_timeout_s + 3600)
        if status == JobStatus.QUEUED:
            try:
                job.cancel()
            except InvalidJobOperation:
                pass
            job.meta.update(
                status_fields(
                    JobStatus.CANCELED,
                    JobError(code=ErrorCode.CANCELED, message="Canceled by the caller while it waited in the queue."),
                )
            )
            job.save_meta()
            pipe = self.r.pipeline()
            pipe.srem(self.keys.tenant_active(tenant), job_id)
            pipe.zadd(self.keys.tenant_status(tenant, JobStatus.CANCELED), {job_id: _created(job)})
            pipe.execute()
            return job, True
        return job, False
