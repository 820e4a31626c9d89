"""Jobs: RQ holds them (queue, status, timeout, retry, TTL); this module names, caps and reads them.

The API enqueues `protocol.TASK_PATH` by its import path, so it never imports the worker or torch;
the one argument is a `JobSpec` (ids and params, never arrays). Per-tenant state kept beside RQ:
- `Keys.tenant_jobs(t)`: every job of the tenant, scored by creation time (listing, newest first);
- `Keys.tenant_active(t)`: jobs that may still be queued or running, pruned lazily on each submit
  by asking RQ, so the cap of `max_active_jobs_per_tenant` needs no cooperation from workers;
- `Keys.idempotency(t, key)`: (body hash, job id) for `Idempotency-Key`, as long as results live.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from typing import Any

import redis
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from service.schemas import JobOut
from spotlight import cost as cost_lib
from spotlight.errors import Conflict, LimitReached, NotFound
from spotlight.jobqueue import enqueue_search, large_queue
from spotlight.jobstate import TERMINAL, JobStatus, ended_at, failure_of, started_at, status_fields, status_of
from spotlight.keys import Keys
from spotlight.params import SearchParams
from spotlight.protocol import (
    META_DEVICE,
    META_PROGRESS,
    META_SPEC,
    META_TENANT,
    DatasetRecord,
    ErrorCode,
    JobError,
    JobSpec,
    Progress,
    redis_text,
    utcnow,
)
from spotlight.settings import Settings

RETRY_AFTER_S = 10


def body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _not_found(job_id: str) -> NotFound:
    return NotFound(ErrorCode.JOB_NOT_FOUND, f"No job {job_id!r} for this caller.", {"job": job_id})


class JobRegistry:
    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r = r
        self.settings = settings
        self.keys = Keys.of(settings)
        self.queue = Queue(settings.rq_queue_name(), connection=r)
        self.large = large_queue(r, settings)  # the large lane (spotlight/cost.py)

    # ----- reading -----
    def fetch(self, tenant: str, job_id: str) -> Job:
        if not job_id.startswith("job_"):
            raise _not_found(job_id)
        try:
            job = Job.fetch(job_id, connection=self.r)
        except NoSuchJobError:
            raise _not_found(job_id) from None
        # RQ's job keys are not namespaced: a job of another deployment sharing this Redis
        # (SPOTLIGHT_NAMESPACE) was enqueued on another queue, and is not ours.
        if job.meta.get(META_TENANT) != tenant or job.origin not in (self.queue.name, self.large.name):
            raise _not_found(job_id)
        return job

    def view(self, job: Job) -> JobOut:
        meta = job.meta
        spec = JobSpec.model_validate(meta[META_SPEC])
        status = status_of(job)
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
        for job_id in ids:
            try:
                out.append(self.view(self.fetch(tenant, job_id)))
            except NotFound:  # expired with its TTL: forget it
                self.r.zrem(key, job_id)
        return out, int(self.r.zcard(key))

    def _list_by_status(self, tenant: str, limit: int, offset: int, status: str) -> tuple[builtins.list[JobOut], int]:
        """Statuses live in each job's RQ hash, not in the index: walk the index (newest first) and filter."""
        key = self.keys.tenant_jobs(tenant)
        matched: list[JobOut] = []
        total = 0
        for start in range(0, int(self.r.zcard(key)), 500):
            for raw in self.r.zrevrange(key, start, start + 499):
                job_id = redis_text(raw)
                try:
                    view = self.view(self.fetch(tenant, job_id))
                except NotFound:  # expired with its TTL
                    continue
                if view.status != status:
                    continue
                if offset <= total < offset + limit:
                    matched.append(view)
                total += 1
        return matched, total

    # ----- idempotency -----
    def idempotent_replay(self, tenant: str, key: str, digest: str) -> str | None:
        """The job id an earlier request with this key made, None when the key is new; Conflict on a different body."""
        raw = self.r.get(self.keys.idempotency(tenant, key))
        if raw is None:
            return None
        saved = json.loads(raw)
        if saved["body_sha256"] != digest:
            raise Conflict(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "This Idempotency-Key was used with a different request body; use a new key.",
                {"idempotency_key": key, "job": saved["job_id"]},
            )
        return str(saved["job_id"])

    def claim_idempotency(self, tenant: str, key: str, digest: str, job_id: str) -> str | None:
        """Reserve the key for job_id; returns the other job id when a concurrent request won."""
        value = json.dumps({"body_sha256": digest, "job_id": job_id})
        if self.r.set(self.keys.idempotency(tenant, key), value, nx=True, ex=self.settings.result_ttl_s):
            return None
        return self.idempotent_replay(tenant, key, digest)

    def release_idempotency(self, tenant: str, key: str, job_id: str) -> None:
        raw = self.r.get(self.keys.idempotency(tenant, key))
        if raw is not None and json.loads(raw).get("job_id") == job_id:
            self.r.delete(self.keys.idempotency(tenant, key))

    # ----- submitting -----
    def active_count(self, tenant: str) -> int:
        """Queued + running jobs of the tenant, dropping ids RQ reports as ended or gone."""
        key = self.keys.tenant_active(tenant)
        for raw in self.r.smembers(key):
            job_id = redis_text(raw)
            try:
                job = Job.fetch(job_id, connection=self.r)
                ended = status_of(job) in TERMINAL
            except NoSuchJobError:
                ended = True
            if ended:
                self.r.srem(key, job_id)
        return int(self.r.scard(key))

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
            pipe = self.r.pipeline()
            pipe.zadd(self.keys.tenant_jobs(tenant), {job_id: spec.created_at.timestamp()})
            pipe.sadd(self.keys.tenant_active(tenant), job_id)
            if cost is not None:
                pipe.hset(self.keys.cost(tenant), job_id, cost)
            pipe.execute()
        return job

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
            self.r.srem(self.keys.tenant_active(tenant), job_id)
            return job, True
        return job, False
