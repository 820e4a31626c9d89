"""Results expire after result_ttl_s: deleted from the store and Redis together, by one sweeper."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus

from service import expiry
from spotlight.contract.protocol import (
    META_ENDED_AT,
    META_STATUS,
    REGIONS_FILE,
    TASK_PATH,
    job_file,
)
from spotlight.server.keys import Keys
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore

TTL = 3600.0
NOW = 1_900_000_000.0
KEYS = Keys()  # the settings below name no namespace


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


def make_job(
    conn,
    store,
    tenant: str,
    job_id: str,
    status: str | None,
    ended: float | None = None,
    created: float = NOW - 10 * TTL,
    own_status: bool = True,
) -> None:
    """An RQ job as the API enqueues it, moved to `status` as the worker would, with result files."""
    if status is not None:
        job = Queue("spotlight", connection=conn).enqueue(TASK_PATH, job_id=job_id, meta={"tenant": tenant})
        if status != "queued":
            job.set_status(JobStatus(status if status != "running" else "started"))
        if ended is not None:
            when = datetime.fromtimestamp(ended, UTC)
            if own_status:
                job.meta[META_STATUS] = status
                job.meta[META_ENDED_AT] = when.isoformat()
            job.ended_at = when.replace(tzinfo=None)
        job.save()
    conn.zadd(KEYS.tenant_jobs(tenant), {job_id: created})
    store.write_json(job_file(job_id, REGIONS_FILE), {"regions": []})


def present(conn, store, tenant: str, job_id: str) -> tuple[bool, bool, bool]:
    return (
        Job.exists(job_id, connection=conn),
        conn.zscore(KEYS.tenant_jobs(tenant), job_id) is not None,
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
    assert conn.get(KEYS.expiry_lock()) is None


def test_only_one_process_sweeps_at_a_time(conn, store, settings) -> None:
    make_job(conn, store, "a", "job_old", "finished", ended=NOW - 2 * TTL)
    conn.set(KEYS.expiry_lock(), "another-process", ex=60)
    assert expiry.sweep_expired(conn, store, settings, now=NOW) == []
    assert present(conn, store, "a", "job_old") == (True, True, True)
    assert conn.get(KEYS.expiry_lock()) == b"another-process"  # not released by the loser


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
    assert conn.sismember(KEYS.expiry_pending(), "job_old")
    assert expiry.sweep_expired(conn, store, settings, now=NOW) == ["job_old"]
    assert present(conn, store, "a", "job_old") == (False, False, False)
    assert not conn.sismember(KEYS.expiry_pending(), "job_old")


def test_the_default_clock_is_now(conn, store) -> None:
    make_job(conn, store, "a", "job_just_ended", "finished", ended=time.time() - 5)
    assert expiry.sweep_expired(conn, store, Settings(result_ttl_s=3600)) == []
    assert expiry.sweep_expired(conn, store, Settings(result_ttl_s=1)) == ["job_just_ended"]


def test_stale_upload_folders_are_removed_and_live_ones_kept(store, store_dir) -> None:
    work = store_dir / expiry.WORK_DIR
    for name in ("cut_off", "live", "old_dir_fresh_file"):
        (work / name).mkdir(parents=True)
        (work / name / "part").write_bytes(b"x")
    old = NOW - 2 * expiry.STALE_WORK_S
    for path in (work / "cut_off", work / "cut_off" / "part", work / "old_dir_fresh_file"):
        os.utime(path, (old, old))
    for path in (work / "live", work / "live" / "part", work / "old_dir_fresh_file" / "part"):
        os.utime(path, (NOW - 10, NOW - 10))
    assert expiry.sweep_stale_work(store, now=NOW) == ["cut_off"]
    assert sorted(p.name for p in work.iterdir()) == ["live", "old_dir_fresh_file"]


@pytest.mark.e2e
def test_the_api_sweeps_expired_results_by_itself(tmp_path: Path) -> None:
    from .stack import Stack, wait_for

    s = Stack(tmp_path, SPOTLIGHT_RESULT_TTL_S=3)
    s.start_redis()
    try:
        s.start_api()
        s.start_worker("w1")
        with s.client() as c:
            ds = s.upload(c)
            job = s.submit(c, ds)
            assert s.wait_ended(c, job, 90)["status"] == "finished", s.log("w1")
            assert (s.store_dir / "jobs" / job).is_dir()
            wait_for(lambda: not (s.store_dir / "jobs" / job).exists(), 30, "the sweeper to delete the results")
            r = c.get(f"/v1/jobs/{job}")
            assert (r.status_code, r.json()["error"]["code"]) == (404, "job_not_found")
            assert job not in [j["id"] for j in c.get("/v1/jobs").json()["jobs"]]
            assert c.get(f"/v1/datasets/{ds}").status_code == 200  # datasets stay until deleted
    finally:
        s.close()


def test_result_folders_no_job_owns_are_deleted_once_settled(conn, store, store_dir, settings) -> None:
    """RQ expired the hash and the API's list dropped the index entry: the files must still go."""
    now = time.time()
    store.write_json(job_file("job_orphan", REGIONS_FILE), {"regions": []})
    old = now - 2 * expiry.MISSING_GRACE_S
    os.utime(store_dir / "jobs" / "job_orphan", (old, old))
    store.write_json(job_file("job_just_written", REGIONS_FILE), {"regions": []})
    make_job(conn, store, "a", "job_running", "running", created=now - 10)
    conn.zrem(KEYS.tenant_jobs("a"), "job_running")  # known to RQ only: still spared
    os.utime(store_dir / "jobs" / "job_running", (old, old))

    assert expiry.sweep_expired(conn, store, settings, now=now) == ["job_orphan"]
    assert sorted(p.name for p in (store_dir / "jobs").iterdir()) == ["job_just_written", "job_running"]
