"""Every Redis key of ours lives under its deployment's namespace, locks included: two deployments
sharing one Redis (SPOTLIGHT_NAMESPACE) share no key, and neither's lock holds the other up."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from service import expiry
from spotlight.ops.redis_server import EmbeddedRedis
from spotlight.server.keys import Keys
from tests.service.conftest import LiveApi, npz_bytes, toy


def _built(keys: Keys) -> dict[str, str]:
    """Every key `keys` builds, by builder name, from sample arguments."""
    out = {}
    for name, method in inspect.getmembers(keys, inspect.ismethod):
        if name.startswith("_") or name == "of" or "_of" in name:
            continue
        args = [f"{p}-x" for p in inspect.signature(method).parameters]
        out[name] = method(*args)
    return out


def test_every_builder_is_namespaced_and_has_a_working_inverse() -> None:
    a, b, bare = Keys("team-a"), Keys("team-b"), Keys()
    built_a, built_b, built_bare = _built(a), _built(b), _built(bare)
    assert {"blob_lock", "submit_lock", "expiry_lock", "cancel", "dataset"} <= set(built_a)
    assert {"tenant_status", "tenant_status_indexed", "tenant_bytes", "ready_probe", "comparison"} <= set(built_a)
    assert all(k.startswith("team-a:spotlight:") for k in built_a.values()), built_a
    assert all(k.startswith("team-b:spotlight:") for k in built_b.values()), built_b
    assert all(k.startswith("spotlight:") for k in built_bare.values()), built_bare
    assert not set(built_a.values()) & set(built_b.values())
    assert (a.rq_queue, bare.rq_queue) == ("team-a:spotlight", "spotlight")
    assert (a.large_queue, a.callbacks_queue) == ("team-a:spotlight-large", "team-a:spotlight-callbacks")

    inverses: list[tuple[Callable[[str], object], str, object]] = [
        (a.dataset_id_of, a.dataset("ds_1"), "ds_1"),
        (a.tenant_of_datasets, a.tenant_datasets("t"), "t"),
        (a.sha256_of_blob_refs, a.blob_refs("ab12"), "ab12"),
        (a.sha256_of_blob_lock, a.blob_lock("ab12"), "ab12"),
        (a.tenant_of_jobs, a.tenant_jobs("t"), "t"),
        (a.tenant_of_active, a.tenant_active("t"), "t"),
        (a.tenant_and_status_of_status, a.tenant_status("t", "failed"), ("t", "failed")),
        (a.tenant_of_status_indexed, a.tenant_status_indexed("t"), "t"),
        (a.tenant_of_bytes, a.tenant_bytes("t"), "t"),
        (a.tenant_of_submit_lock, a.submit_lock("t"), "t"),
        (a.tenant_of_cost, a.cost("t"), "t"),
        (a.job_id_of_cancel, a.cancel("job_1"), "job_1"),
        (a.tenant_and_key_of_idempotency, a.idempotency("t", "k:with:colons"), ("t", "k:with:colons")),
        (a.job_id_of_yield_claim, a.yield_claim("job_1"), "job_1"),
        (a.job_id_of_unheld_since, a.unheld_since("job_1"), "job_1"),
        (a.tenant_and_id_of_comparison, a.comparison("t", "cmp_1"), ("t", "cmp_1")),
        (
            a.metric_and_label_of_stats_hist,
            a.stats_hist("job_duration_seconds", "failed"),
            ("job_duration_seconds", "failed"),
        ),
        (a.worker_of_stats, a.stats_worker("w1"), "w1"),
        (a.series_of_http, a.http_series("GET /v1/jobs 2xx"), "GET /v1/jobs 2xx"),
    ]
    for inverse, key, part in inverses:
        assert inverse(key) == part, (inverse.__name__, key)
        with pytest.raises(ValueError):
            inverse(key.replace("team-a:", "team-b:", 1))  # another namespace's key is not ours


def _upload(c) -> str:
    data = toy(20, seed=3)
    r = c.post(
        "/v1/datasets", files={"file": ("d.npz", npz_bytes(embeddings=data["embeddings"], losses=data["losses"]))}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture
def own_db(redis_server: EmbeddedRedis) -> Iterator[str]:
    """A database of the session's Redis that no other test's app writes to (their HTTP-stats
    flushers run in background threads and would add keys of the default namespace to db 0)."""
    url = redis_server.url.rsplit("/", 1)[0] + "/13"
    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()


def test_two_namespaces_on_one_redis_share_no_key_and_no_lock(make_api: Callable[..., LiveApi], own_db: str) -> None:
    a = make_api(namespace="team-a", redis_url=own_db)
    b = make_api(namespace="team-b", redis_url=own_db)
    keys_a, keys_b = Keys.of(a.settings), Keys.of(b.settings)
    conn = redis.Redis.from_url(own_db)
    with a.client() as ca, b.client() as cb:
        ds_a = _upload(ca)
        job_a = ca.post("/v1/jobs", json={"dataset": ds_a}, headers={"Idempotency-Key": "same"}).json()["id"]
        assert ca.get("/metrics").status_code == 200

        # a's locks held (as a slow upload, submission and sweep in a would hold them): b goes on.
        sha = json.loads(conn.get(keys_a.dataset(ds_a)) or "{}")["sha256"]
        held = [
            conn.lock(keys_a.blob_lock(sha), timeout=60),
            conn.lock(keys_a.submit_lock("default"), timeout=60),
        ]
        assert all(lock.acquire(blocking=False) for lock in held)
        assert conn.set(keys_a.expiry_lock(), "a-sweeping", ex=60)
        try:
            with httpx.Client(base_url=b.url, timeout=10) as quick:  # a shared lock would hold b for 30 s or more
                ds_b = _upload(quick)  # the same bytes: the same blob lock name but for the namespace
                r = quick.post("/v1/jobs", json={"dataset": ds_b}, headers={"Idempotency-Key": "same"})
                assert r.status_code == 202, r.text
                job_b = r.json()["id"]
                assert quick.delete(f"/v1/jobs/{job_b}").status_code in (200, 202)
                assert quick.get("/metrics").status_code == 200
                assert quick.get("/readyz").status_code == 200  # writes its probe key
                assert quick.get("/v1/jobs", params={"status": "canceled"}).status_code == 200
            conn.sadd(keys_b.expiry_pending(), "job_gone")
            assert expiry.sweep_expired(conn, b.store, b.settings) == ["job_gone"]  # a's sweep lock did not stop b's
        finally:
            for lock in held:
                lock.release()
            conn.delete(keys_a.expiry_lock())

        assert cb.get(f"/v1/jobs/{job_a}").status_code == 404 and ca.get(f"/v1/jobs/{job_b}").status_code == 404
        ours = {k.decode() for k in conn.keys("*") if not k.startswith(b"rq:")}
        assert any(k.startswith("team-a:spotlight:") for k in ours)
        assert any(k.startswith("team-b:spotlight:") for k in ours)
        assert all(k.startswith(("team-a:spotlight:", "team-b:spotlight:")) for k in ours), ours
    conn.close()
