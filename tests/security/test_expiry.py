"""Results expire after result_ttl_s: deleted from the store and Redis together, by one sweeper."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus

from spotlight import expiry
from spotlight.protocol import (
    META_ENDED_AT,
    META_STATUS,
    REGIONS_FILE,
    TASK_PATH,
    job_file,
    tenant_jobs_key,
)
from spotlight.settings import Settings
from spotlight.store import ArtifactStore

TTL = 3600.0
NOW = 1_900_000_000.0


@pytest.fixture
def conn(redis_url: str):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def store(store_dir: Path) -> ArtifactStore:
    return ArtifactStore(str(store_dir))


@pytest.fixture
def settings() -> Settings:
    return Settings(result_ttl_s=int(TTL))


def make_job(conn, store, tenant: str, job_id: str, status: str | None, ended: float | None = None,
             created: float = NOW - 10 * TTL, own_status: bool = True) -> None:
    """An RQ job as the API enqueues it, moved to `status` as the worker would, with result files."""
    if status is not None:
        job = Queue("spotlight", connection=conn).enqueue(TASK_PATH, job_id=job_id, meta={"tenant": tenant})
        if status != "queued":
            job.set_status(JobStatus(status if status != "running" else "started"))
        if ended is not None:
            when = datetime.fromtimestamp(ended, timezone.utc)
            if own_status:
                job.meta[META_STATUS] = status
                job.meta[META_ENDED_AT] = when.isoformat()
            job.ended_at = when.replace(tzinfo=None)
        job.save()
    conn.zadd(tenant_jobs_key(tenant), {job_id: created})
    store.write_json(job_file(job_id, REGIONS_FILE), {"regions": []})


def present(conn, store, tenant: str, job_id: str) -> tuple[bool, bool, bool]:
    return (
        Job.exists(job_id, connection=conn),
        conn.zscore(tenant_jobs_key(tenant), job_id) is not None,
        store.exists(job_file(job_id, REGIONS_FILE)),
    )


def test_jobs_ended_longer_than_the_ttl_ago_are_deleted_everywhere(conn, store, settings) -> None:
    make_job(conn, store, "a", "job_old_finished", "finished", ended=NOW - TTL - 5)
    make_job(conn, store, "b", "job_old_failed", "failed", ended=NOW - 2 * TTL)
    make_job(conn, store, "a", "job_old_rq_only", "failed", ended=NOW - 2 * TTL, own_status=False)
    make_job(conn, store, "a", "job_recent", "finished", ended=NOW - TTL + 60)
    make_job(conn, store, "a", "job_queued", "queued")
    make_job(conn, store, "b", "job_running", "running")

    deleted = expiry.sweep_expired(conn, store, settings, now=NOW)

    assert sorted(deleted) == ["job_old_failed", "job_old_finished", "job_old_rq_only"]
    for tenant, job_id in (("a", "job_old_finished"), ("b", "job_old_failed"), ("a", "job_old_rq_only")):
        assert present(conn, store, tenant, job_id) == (False, False, False)
        assert not store.list(f"jobs/{job_id}")
    for tenant, job_id in (("a", "job_recent"), ("a", "job_queued"), ("b", "job_running")):
        assert present(conn, store, tenant, job_id) == (True, True, True)
    queued = Queue("spotlight", connection=conn).get_job_ids()
    assert "job_queued" in queued
    assert not {"job_old_finished", "job_old_failed", "job_old_rq_only"} & set(queued)


def test_a_job_whose_rq_hash_is_gone_is_cleaned_up_after_a_grace_period(conn, store, settings) -> None:
    make_job(conn, store, "a", "job_lost", None, created=NOW - 3600)
    make_job(conn, store, "a", "job_being_submitted", None, created=NOW - 1)
    deleted = expiry.sweep_expired(conn, store, settings, now=NOW)
    assert deleted == ["job_lost"]
    assert present(conn, store, "a", "job_lost") == (False, False, False)
    assert present(conn, store, "a", "job_being_submitted") == (False, True, True)


def test_sweeping_twice_is_harmless(conn, store, settings) -> None:
    make_job(conn, store, "a", "job_old", "finished", ended=NOW - 2 * TTL)
    assert expiry.sweep_expired(conn, store, settings, now=NOW) == ["job_old"]
    assert expiry.sweep_expired(conn, store, settings, now=NOW) == []
    assert conn.get(expiry.LOCK_KEY) is None


def test_only_one_process_sweeps_at_a_time(conn, store, settings) -> None:
    make_job(conn, store, "a", "job_old", "finished", ended=NOW - 2 * TTL)
    conn.set(expiry.LOCK_KEY, "another-process", ex=60)
    assert expiry.sweep_expired(conn, store, settings, now=NOW) == []
    assert present(conn, store, "a", "job_old") == (True, True, True)
    assert conn.get(expiry.LOCK_KEY) == b"another-process"  # not released by the loser


def test_concurrent_sweepers_delete_each_job_once(conn, store, settings, redis_url) -> None:
    for i in range(20):
        make_job(conn, store, f"t{i % 3}", f"job_{i}", "finished", ended=NOW - 2 * TTL)
    results: list[list[str]] = []

    def sweep() -> None:
        client = redis.Redis.from_url(redis_url)
        try:
            for _ in range(5):
                results.append(expiry.sweep_expired(client, store, settings, now=NOW))
        finally:
            client.close()

    threads = [threading.Thread(target=sweep) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    flat = [j for r in results for j in r]
    assert sorted(flat) == sorted(f"job_{i}" for i in range(20))
    assert not store.list("jobs")


def test_an_unreachable_store_leaves_nothing_orphaned(conn, store, settings, monkeypatch) -> None:
    make_job(conn, store, "a", "job_old", "finished", ended=NOW - 2 * TTL)

    def broken(prefix: str) -> None:
        raise OSError("store down")

    with monkeypatch.context() as m:
        m.setattr(store, "delete_prefix", broken)
        assert expiry.sweep_expired(conn, store, settings, now=NOW) == ["job_old"]
    # callers no longer see the job; its files wait in the pending set
    assert present(conn, store, "a", "job_old") == (False, False, True)
    assert conn.sismember(expiry.PENDING_KEY, "job_old")
    assert expiry.sweep_expired(conn, store, settings, now=NOW) == ["job_old"]
    assert present(conn, store, "a", "job_old") == (False, False, False)
    assert not conn.sismember(expiry.PENDING_KEY, "job_old")


def test_the_default_clock_is_now(conn, store) -> None:
    make_job(conn, store, "a", "job_just_ended", "finished", ended=time.time() - 5)
    assert expiry.sweep_expired(conn, store, Settings(result_ttl_s=3600)) == []
    assert expiry.sweep_expired(conn, store, Settings(result_ttl_s=1)) == ["job_just_ended"]
