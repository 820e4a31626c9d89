"""Results expire: a job and everything it wrote are deleted ``result_ttl_s`` after it ended.

Results hold regions of other people's data and fill the store, so they must not live forever,
and they must go as a whole: a job record that points at deleted files, or files no record points
at, are both bugs. :func:`sweep_expired` walks every tenant's job index
(``protocol.tenant_jobs_key``) and, for each job that ended more than ``result_ttl_s`` ago — or
whose RQ job hash has vanished (RQ's own TTL ran out, or Redis lost it) — deletes, in this order:

1. the Redis side in one transaction: the RQ job (hash, registries, results) and the tenant's
   index entry, so callers see the job disappear at once (``404``), never a half-deleted job;
2. the store folder ``jobs/<id>/``. If that fails (store down), the id is kept in a pending set
   and retried on the next sweep, so nothing is orphaned.

Queued and running jobs are never touched. A job whose hash is missing is only treated as gone
once its index entry is older than a grace period, so a job being submitted right now (index
written, RQ job not yet) survives. Any number of API processes may call this: a Redis lock
(``SET NX EX``) lets one sweep at a time, and every step is idempotent. Datasets are not swept:
they live until their tenant deletes them.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import datetime, timezone
from typing import Any

import redis as redis_lib
from rq.exceptions import NoSuchJobError
from rq.job import Job

from spotlight.protocol import (
    KEY_PREFIX,
    META_ENDED_AT,
    cancel_key,
    job_prefix,
    rq_status_to_job_status,
    tenant_jobs_key,
)
from spotlight.settings import Settings
from spotlight.store import ArtifactStore

log = logging.getLogger(__name__)

LOCK_KEY = f"{KEY_PREFIX}:lock:expiry"
PENDING_KEY = f"{KEY_PREFIX}:expiry:pending"  # job ids whose store folder still has to go
TENANT_JOBS_PATTERN = f"{KEY_PREFIX}:tenant:*:jobs"
LOCK_TTL_S = 300
MISSING_GRACE_S = 300.0
_ENDED = ("finished", "failed", "canceled")

_RELEASE_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _timestamp(value: Any) -> float | None:
    """Seconds since the epoch from a datetime, an ISO string or a number; None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    if dt.tzinfo is None:  # RQ stores naive UTC
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def job_ended_at(job: Job) -> float | None:
    """When the job ended (finished, failed or canceled), or None while it is queued or running."""
    status = rq_status_to_job_status(_status_text(job), job.meta or {})
    if status not in _ENDED:
        return None
    for candidate in ((job.meta or {}).get(META_ENDED_AT), job.ended_at, job.enqueued_at, job.created_at):
        ts = _timestamp(candidate)
        if ts is not None:
            return ts
    return 0.0


def _status_text(job: Job) -> str | None:
    try:
        status = job.get_status(refresh=False)
    except Exception:
        return None
    return getattr(status, "value", status)


def _delete_redis_side(conn: redis_lib.Redis, tenant_key: str, job_id: str, job: Job | None) -> None:
    pipe = conn.pipeline(transaction=True)
    if job is not None:
        job.delete(pipeline=pipe, remove_from_queue=True)
    pipe.zrem(tenant_key, job_id)
    pipe.delete(cancel_key(job_id))
    pipe.sadd(PENDING_KEY, job_id)
    pipe.execute()


def _delete_store_side(conn: redis_lib.Redis, store: ArtifactStore, job_id: str) -> bool:
    try:
        store.delete_prefix(job_prefix(job_id))
    except Exception as exc:  # store down or unwritable: retry next sweep
        log.warning("expiry: could not delete jobs/%s from the store (%s); will retry", job_id, exc)
        return False
    conn.srem(PENDING_KEY, job_id)
    return True


def sweep_expired(
    redis: redis_lib.Redis,
    store: ArtifactStore,
    settings: Settings,
    now: float | None = None,
    *,
    missing_grace_s: float = MISSING_GRACE_S,
) -> list[str]:
    """Delete every job that ended more than ``settings.result_ttl_s`` ago, from Redis and the
    store together. Returns the ids deleted by this call (empty when another process holds the
    sweep lock). `redis` must be a connection RQ can use (``decode_responses=False``)."""
    now = time.time() if now is None else now
    token = secrets.token_hex(8)
    if not redis.set(LOCK_KEY, token, nx=True, ex=LOCK_TTL_S):
        return []
    deleted: list[str] = []
    try:
        # Store folders left over by an earlier sweep that could not reach the store.
        for raw in redis.smembers(PENDING_KEY):
            job_id = _text(raw)
            if _delete_store_side(redis, store, job_id):
                deleted.append(job_id)

        cutoff = now - settings.result_ttl_s
        for raw_key in redis.scan_iter(match=TENANT_JOBS_PATTERN, count=200):
            tenant_key = _text(raw_key)
            for raw_id, created in redis.zrange(tenant_key, 0, -1, withscores=True):
                job_id = _text(raw_id)
                try:
                    job: Job | None = Job.fetch(job_id, connection=redis)
                except NoSuchJobError:
                    job = None
                if job is None:
                    # The hash is gone (RQ's TTL, or lost): drop the index entry and files, unless
                    # the entry is so young the job may still be being enqueued.
                    if created > now - missing_grace_s:
                        continue
                else:
                    ended = job_ended_at(job)
                    if ended is None or ended > cutoff:
                        continue
                _delete_redis_side(redis, tenant_key, job_id, job)
                # Gone for callers now; if the store is down its files follow on a later sweep.
                _delete_store_side(redis, store, job_id)
                if job_id not in deleted:
                    deleted.append(job_id)
    finally:
        redis.eval(_RELEASE_LOCK, 1, LOCK_KEY, token)
    if deleted:
        log.info("expiry: deleted %d expired job(s)", len(deleted))
    return deleted
