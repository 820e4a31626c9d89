"""Results expire: a job and everything it wrote are deleted ``result_ttl_s`` after it ended.

Results hold regions of other people's data and fill the store, so they must not live forever,
and they must go as a whole: a job record that points at deleted files, or files no record points
at, are both bugs. :func:`sweep_expired` walks every tenant's job index
(``Keys.tenant_jobs``) and, for each job that ended more than ``result_ttl_s`` ago — or
whose RQ job hash has vanished (RQ's own TTL ran out, or Redis lost it) — deletes, in this order:

1. the Redis side in one transaction: the RQ job (hash, registries, results) and the tenant's
   index entry, so callers see the job disappear at once (``404``), never a half-deleted job;
2. the store folder ``jobs/<id>/``. If that fails (store down), the id is kept in a pending set
   and retried on the next sweep, so nothing is orphaned.

Uploads cut off mid-body (an API process killed) leave their private work folder under
``.ingest/`` behind; :func:`sweep_stale_work` removes those idle for longer than an hour.
:class:`ExpirySweeper` runs both in a background thread of each API process.

Result folders in the store that no RQ job owns any more (the API's job list drops index entries
whose hash RQ expired) are deleted as well, so RQ's own TTL never orphans files.

Queued and running jobs are never touched. A job whose hash is missing is only treated as gone
once its index entry (or folder) is older than a grace period — a minute, or the TTL if shorter,
since no hash legitimately expires sooner — so a job being written right now is spared. Any number of API processes may call this: a Redis lock
(``SET NX EX``) lets one sweep at a time, and every step is idempotent. Datasets are not swept:
they live until their tenant deletes them.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time

import redis as redis_lib
from rq.exceptions import NoSuchJobError
from rq.job import Job

from service.ingest import WORK_DIR
from spotlight.contract.jobstate import TERMINAL, ended_at, status_of
from spotlight.contract.protocol import (
    job_prefix,
    parse_time,
    redis_text,
)
from spotlight.server.keys import Keys
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore, store_from_settings

log = logging.getLogger(__name__)


LOCK_TTL_S = 300
MISSING_GRACE_S = 60.0
STALE_WORK_S = 3600.0

_RELEASE_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def job_ended_at(job: Job) -> float | None:
    """When the job ended (finished, failed or canceled) in epoch seconds, None while it is queued or running."""
    when = ended_at(job)
    if when is None:
        return None if status_of(job, refresh=False) not in TERMINAL else 0.0
    return when.timestamp()


def _delete_redis_side(conn: redis_lib.Redis, keys: Keys, tenant_key: str, job_id: str, job: Job | None) -> None:
    pipe = conn.pipeline(transaction=True)
    if job is not None:
        job.delete(pipeline=pipe, remove_from_queue=True)
    pipe.zrem(tenant_key, job_id)
    tenant = keys.tenant_of_jobs(tenant_key)
    pipe.srem(keys.tenant_active(tenant), job_id)
    for status in TERMINAL:
        pipe.zrem(keys.tenant_status(tenant, status), job_id)
    pipe.delete(keys.cancel(job_id))
    pipe.sadd(keys.expiry_pending(), job_id)
    pipe.execute()


def _delete_store_side(conn: redis_lib.Redis, keys: Keys, store: ArtifactStore, job_id: str) -> bool:
    try:
        store.delete_prefix(job_prefix(job_id))
    except Exception as exc:  # noqa: BLE001 - store down or unwritable: retry next sweep
        log.warning("expiry: could not delete jobs/%s from the store (%s); will retry", job_id, exc)
        return False
    conn.srem(keys.expiry_pending(), job_id)
    return True


def purge_results(conn: redis_lib.Redis, keys: Keys, store: ArtifactStore, job_id: str) -> bool:
    """Delete a job's store folder now (its dataset was deleted); should the store fail, the id waits
    in the pending set and the next sweep deletes it. The job's record stays (its status and params)."""
    conn.sadd(keys.expiry_pending(), job_id)
    return _delete_store_side(conn, keys, store, job_id)


def _folder_mtime(store: ArtifactStore, path: str) -> float | None:
    try:
        info = store.fs.info(store.full(path))
    except (OSError, ValueError):
        return None
    when = parse_time(info.get("mtime") or info.get("LastModified") or info.get("last_modified"))
    return when.timestamp() if when else None


def _orphan_folders(conn: redis_lib.Redis, store: ArtifactStore, indexed: set[str], older_than: float) -> list[str]:
    """Result folders of jobs neither indexed nor known to RQ, untouched since `older_than`."""
    try:
        candidates = [p.rsplit("/", 1)[-1] for p in store.list("jobs")]
    except (OSError, ValueError) as exc:
        log.warning("expiry: cannot list the store's jobs (%s)", exc)
        return []
    candidates = [c for c in candidates if c not in indexed and not c.startswith(".")]
    if not candidates:
        return []
    pipe = conn.pipeline(transaction=False)
    for job_id in candidates:
        pipe.exists(Job.key_for(job_id))
    known = pipe.execute()
    orphans = []
    for job_id, exists in zip(candidates, known, strict=True):
        if exists:
            continue
        mtime = _folder_mtime(store, job_prefix(job_id))
        if mtime is None or mtime <= older_than:
            orphans.append(job_id)
    return orphans


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
    keys = Keys.of(settings)
    token = secrets.token_hex(8)
    if not redis.set(keys.expiry_lock(), token, nx=True, ex=LOCK_TTL_S):
        return []
    deleted: list[str] = []
    try:
        # Store folders left over by an earlier sweep that could not reach the store.
        for raw in redis.smembers(keys.expiry_pending()):
            job_id = redis_text(raw)
            if _delete_store_side(redis, keys, store, job_id):
                deleted.append(job_id)

        cutoff = now - settings.result_ttl_s
        grace = min(missing_grace_s, float(settings.result_ttl_s))
        indexed: set[str] = set()
        for raw_key in redis.scan_iter(match=keys.tenant_jobs_pattern(), count=200):
            tenant_key = redis_text(raw_key)
            entries: list[tuple[bytes, float]] = redis.zrange(tenant_key, 0, -1, withscores=True)  # type: ignore[assignment]
            for raw_id, created in entries:
                job_id = redis_text(raw_id)
                indexed.add(job_id)
                try:
                    job: Job | None = Job.fetch(job_id, connection=redis)
                except NoSuchJobError:
                    job = None
                if job is None:
                    # The hash is gone (RQ's TTL, or lost): drop the index entry and files, unless
                    # the entry is so young the job may still be being enqueued.
                    if created > now - grace:
                        continue
                else:
                    ended = job_ended_at(job)
                    if ended is None or ended > cutoff:
                        continue
                _delete_redis_side(redis, keys, tenant_key, job_id, job)
                # Gone for callers now; if the store is down its files follow on a later sweep.
                _delete_store_side(redis, keys, store, job_id)
                if job_id not in deleted:
                    deleted.append(job_id)
        for job_id in _orphan_folders(redis, store, indexed, now - grace):
            if _delete_store_side(redis, keys, store, job_id) and job_id not in deleted:
                deleted.append(job_id)
    finally:
        redis.eval(_RELEASE_LOCK, 1, keys.expiry_lock(), token)
    if deleted:
        log.info("expiry: deleted %d expired job(s)", len(deleted))
    return deleted


def _newest_mtime(path: str) -> float:
    newest = os.stat(path).st_mtime
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime)
            except OSError:
                continue
    return newest


def sweep_stale_work(store: ArtifactStore, now: float | None = None, max_idle_s: float = STALE_WORK_S) -> list[str]:
    """Delete upload work folders (``.ingest/<token>``) nothing has written to for `max_idle_s`:
    what an API process killed mid-upload left behind. A live upload keeps writing, so it is spared."""
    root = store.local_path(WORK_DIR)
    if root is None or not os.path.isdir(root):
        return []
    now = time.time() if now is None else now
    removed: list[str] = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        try:
            if now - _newest_mtime(path) <= max_idle_s:
                continue
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(name)
        except OSError:
            continue
    return removed


class ExpirySweeper(threading.Thread):
    """Sweeps expired results and stale upload folders every `interval_s` until stopped.

    The interval defaults to a quarter of the TTL, between 1 s and 5 min, so a job outlives its TTL
    by at most that much. Errors are logged and the next round tries again.
    """

    def __init__(self, settings: Settings, interval_s: float | None = None) -> None:
        super().__init__(name="spotlight-expiry", daemon=True)
        self.settings = settings
        self.interval_s = interval_s if interval_s is not None else min(300.0, max(1.0, settings.result_ttl_s / 4))
        self._stop_event = threading.Event()

    def run(self) -> None:
        if not self.settings.redis_url:
            return
        conn = redis_lib.Redis.from_url(self.settings.redis_url, socket_connect_timeout=5, socket_timeout=30)
        store = store_from_settings(self.settings)
        try:
            while not self._stop_event.wait(self.interval_s):
                try:
                    sweep_expired(conn, store, self.settings)
                    sweep_stale_work(store)
                except Exception as exc:  # noqa: BLE001 - Redis restarting, store down: try again next round
                    log.warning("expiry sweep failed: %s", exc)
        finally:
            conn.close()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self.join(timeout)
