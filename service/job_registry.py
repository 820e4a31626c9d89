"""Jobs: RQ holds them (queue, status, timeout, retry, TTL); this module names, caps and reads them.

The API enqueues `protocol.TASK_PATH` by its import path, so it never imports the worker or torch;
the one argument is a `JobSpec` (ids and params, never arrays). Per-tenant state kept beside RQ:
- `tenant_jobs_key(t)`: every job of the tenant, scored by creation time (listing, newest first);
- `tenant_active_key(t)`: jobs that may still be queued or running, pruned lazily on each submit
  by asking RQ, so the cap of `max_active_jobs_per_tenant` needs no cooperation from workers;
- `idempotency_key(t, key)`: (body hash, job id) for `Idempotency-Key`, as long as results live.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import redis
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from service.errors import ApiError
from service.schemas import JobOut
from spotlight.jobqueue import enqueue_search
from spotlight.params import SearchParams
from spotlight.protocol import (
    META_DEVICE,
    META_ENDED_AT,
    META_ERROR,
    META_PROGRESS,
    META_SPEC,
    META_STARTED_AT,
    META_STATUS,
    META_TENANT,
    DatasetRecord,
    ErrorCode,
    JobError,
    JobSpec,
    JobStatus,
    Progress,
    cancel_key,
    idempotency_key,
    rq_status_to_job_status,
    tenant_active_key,
    tenant_jobs_key,
    utcnow,
)
from spotlight.settings import Settings

TERMINAL: frozenset[str] = frozenset({"finished", "failed", "canceled"})
RETRY_AFTER_S = 10


def body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, ErrorCode.JOB_NOT_FOUND, f"No job {job_id!r} for this caller.", {"job": job_id})


def _as_dt(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _failure_from_rq(job: Job) -> JobError:
    """The error of a job RQ marked failed without the worker writing one (crash, timeout, bug)."""
    text = ""
    try:
        result = job.latest_result()
        text = (result.exc_string or "") if result is not None else ""
    except Exception:  # a result we cannot read must not break the status call
        text = ""
    last = text.strip().splitlines()[-1] if text.strip() else ""
    if "JobTimeoutException" in text:
        return JobError(code=ErrorCode.JOB_TIMEOUT, message="The job ran past its time limit.")
    if "Abandoned" in text or "terminated unexpectedly" in text or "horse" in text.lower() or not text:
        return JobError(code=ErrorCode.WORKER_LOST, message="The worker running the job stopped unexpectedly.")
    return JobError(code=ErrorCode.SEARCH_FAILED, message=last[:500] or "The search failed.")


class JobRegistry:
    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r = r
        self.settings = settings
        self.queue = Queue(settings.rq_queue_name(), connection=r)

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
        if job.meta.get(META_TENANT) != tenant or job.origin != self.queue.name:
            raise _not_found(job_id)
        return job

    def status(self, job: Job) -> JobStatus:
        try:
            rq_status = job.get_status(refresh=True)
        except InvalidJobOperation:
            rq_status = None
        return rq_status_to_job_status(rq_status.value if rq_status is not None else None, job.meta)

    def view(self, job: Job) -> JobOut:
        meta = job.meta
        spec = JobSpec.model_validate(meta[META_SPEC])
        status = self.status(job)
        progress = Progress.model_validate(meta.get(META_PROGRESS) or {
            "n_spotlights": spec.params.n_spotlights, "steps": spec.params.steps,
        })
        if status == "finished":
            progress = progress.model_copy(update={"fraction": 1.0})
        error: JobError | None = None
        if meta.get(META_ERROR):
            error = JobError.model_validate(meta[META_ERROR])
        elif status == "failed":
            error = _failure_from_rq(job)
        elif status == "canceled":
            error = JobError(code=ErrorCode.CANCELED, message="The job was canceled.")
        started = _as_dt(meta.get(META_STARTED_AT)) or job.started_at
        ended = _as_dt(meta.get(META_ENDED_AT)) or (job.ended_at if status in TERMINAL else None)
        return JobOut(
            id=job.id,
            status=status,
            progress=progress,
            created_at=spec.created_at,
            started_at=started if status != "queued" else None,
            ended_at=ended,
            error=error,
            params=spec.params,
            dataset=spec.dataset_id,
            callback_url=spec.callback_url,
            cancel_requested=status not in TERMINAL and bool(self.r.exists(cancel_key(job.id))),
            device=meta.get(META_DEVICE),
        )

    def list(self, tenant: str, limit: int, offset: int) -> tuple[list[JobOut], int]:
        key = tenant_jobs_key(tenant)
        # Past the end: an empty page (Redis refuses offsets beyond 64 bits with an error).
        if offset >= int(self.r.zcard(key)):
            return [], int(self.r.zcard(key))
        ids = [i.decode() for i in self.r.zrevrange(key, offset, offset + limit - 1)]
        out: list[JobOut] = []
        for job_id in ids:
            try:
                out.append(self.view(self.fetch(tenant, job_id)))
            except ApiError:  # expired with its TTL: forget it
                self.r.zrem(key, job_id)
        return out, int(self.r.zcard(key))

    # ----- idempotency -----
    def idempotent_replay(self, tenant: str, key: str, digest: str) -> str | None:
        """The job id an earlier request with this key made, None when the key is new; 409 on a different body."""
        raw = self.r.get(idempotency_key(tenant, key))
        if raw is None:
            return None
        saved = json.loads(raw)
        if saved["body_sha256"] != digest:
            raise ApiError(409, ErrorCode.IDEMPOTENCY_CONFLICT,
                           "This Idempotency-Key was used with a different request body; use a new key.",
                           {"idempotency_key": key, "job": saved["job_id"]})
        return str(saved["job_id"])

    def claim_idempotency(self, tenant: str, key: str, digest: str, job_id: str) -> str | None:
        """Reserve the key for job_id; returns the other job id when a concurrent request won."""
        value = json.dumps({"body_sha256": digest, "job_id": job_id})
        if self.r.set(idempotency_key(tenant, key), value, nx=True, ex=self.settings.result_ttl_s):
            return None
        return self.idempotent_replay(tenant, key, digest)

    def release_idempotency(self, tenant: str, key: str, job_id: str) -> None:
        raw = self.r.get(idempotency_key(tenant, key))
        if raw is not None and json.loads(raw).get("job_id") == job_id:
            self.r.delete(idempotency_key(tenant, key))

    # ----- submitting -----
    def active_count(self, tenant: str) -> int:
        """Queued + running jobs of the tenant, dropping ids RQ reports as ended or gone."""
        key = tenant_active_key(tenant)
        for raw in self.r.smembers(key):
            job_id = raw.decode()
            try:
                job = Job.fetch(job_id, connection=self.r)
                ended = self.status(job) in TERMINAL
            except NoSuchJobError:
                ended = True
            if ended:
                self.r.srem(key, job_id)
        return int(self.r.scard(key))

    def check_capacity(self, tenant: str) -> None:
        cap = self.settings.max_active_jobs_per_tenant
        active = self.active_count(tenant)
        if active >= cap:
            raise ApiError(
                429, ErrorCode.TOO_MANY_JOBS,
                f"You have {active} queued or running jobs, the limit is {cap}; wait for some to finish.",
                {"active": active, "limit": cap}, headers={"Retry-After": str(RETRY_AFTER_S)},
            )

    def submit(
        self, tenant: str, job_id: str, dataset: DatasetRecord, params: SearchParams, callback_url: str | None
    ) -> Job:
        spec = JobSpec(
            job_id=job_id, tenant=tenant, dataset_id=dataset.id, dataset_sha256=dataset.sha256,
            params=params, callback_url=callback_url, created_at=utcnow(),
        )
        lock = self.r.lock(f"spotlight:lock:submit:{tenant}", timeout=30, blocking_timeout=30)
        with lock:
            self.check_capacity(tenant)
            # One enqueue path for API and tests: timeout, TTLs, retries and the failure hook from Settings.
            job = enqueue_search(self.queue, spec, self.settings)
            pipe = self.r.pipeline()
            pipe.zadd(tenant_jobs_key(tenant), {job_id: spec.created_at.timestamp()})
            pipe.sadd(tenant_active_key(tenant), job_id)
            pipe.execute()
        return job

    # ----- canceling -----
    def cancel(self, tenant: str, job_id: str) -> tuple[Job, bool]:
        """Cancel now when queued (True), or ask the running worker to stop (False); 409 when ended."""
        job = self.fetch(tenant, job_id)
        status = self.status(job)
        if status in TERMINAL:
            raise ApiError(409, ErrorCode.JOB_NOT_CANCELABLE, f"The job is already {status}; nothing to cancel.",
                           {"job": job_id, "status": status})
        # Set first: if a worker picks the job up between here and RQ's cancel, it still stops.
        self.r.set(cancel_key(job_id), "1", ex=self.settings.job_timeout_s + 3600)
        if status == "queued":
            try:
                job.cancel()
            except InvalidJobOperation:
                pass
            job.meta[META_STATUS] = "canceled"
            job.meta[META_ERROR] = JobError(code=ErrorCode.CANCELED, message="Canceled by the caller before it started.").model_dump()
            job.meta[META_ENDED_AT] = utcnow().isoformat()
            job.save_meta()
            self.r.srem(tenant_active_key(tenant), job_id)
            return job, True
        return job, False
