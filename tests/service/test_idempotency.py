"""Idempotency-Key across tenants and over time, over real HTTP and a real Redis.

The key is scoped by tenant: tenant B reusing tenant A's key must neither see A's job (its id in
a 409, or A's job replayed) nor free A's key. A key lives as long as results do, and a job that
expired frees its key for a new job.
"""

from __future__ import annotations

from rq.job import Job

from spotlight.server.keys import Keys
from tests.service.conftest import LiveApi, npz_bytes, toy

KEYS = "a:key-a,b:key-b"


def _dataset(c, seed: int = 0) -> str:
    data = toy(20, seed=seed)
    r = c.post(
        "/v1/datasets", files={"file": ("d.npz", npz_bytes(embeddings=data["embeddings"], losses=data["losses"]))}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_the_same_key_in_two_tenants_names_two_jobs(make_api) -> None:
    api: LiveApi = make_api(api_keys=KEYS)
    with api.client("key-a") as a, api.client("key-b") as b:
        ds_a, ds_b = _dataset(a), _dataset(b, seed=1)
        first_a = a.post("/v1/jobs", json={"dataset": ds_a}, headers={"Idempotency-Key": "shared"})
        assert first_a.status_code == 202, first_a.text
        job_a = first_a.json()["id"]

        # B, same key, a different body: a new job of B's, not a conflict naming A's job
        other_body = b.post("/v1/jobs", json={"dataset": ds_b}, headers={"Idempotency-Key": "shared"})
        assert other_body.status_code == 202, other_body.text
        assert other_body.json()["id"] != job_a and job_a not in other_body.text
        assert "Idempotent-Replayed" not in other_body.headers
        # B replays its own request: B's job
        again_b = b.post("/v1/jobs", json={"dataset": ds_b}, headers={"Idempotency-Key": "shared"})
        assert again_b.json()["id"] == other_body.json()["id"] and again_b.headers["Idempotent-Replayed"] == "true"
        # B sends A's exact body (A's dataset id is not B's: 404, and nothing of A's leaks)
        a_body = b.post("/v1/jobs", json={"dataset": ds_a}, headers={"Idempotency-Key": "shared-2"})
        assert a_body.status_code == 404 and job_a not in a_body.text

        # A's key still names A's job: B's requests neither took nor freed it
        replay_a = a.post("/v1/jobs", json={"dataset": ds_a}, headers={"Idempotency-Key": "shared"})
        assert replay_a.status_code == 202 and replay_a.json()["id"] == job_a
        assert replay_a.headers["Idempotent-Replayed"] == "true"
        conflict_a = a.post(
            "/v1/jobs", json={"dataset": ds_a, "params": {"seed": 9}}, headers={"Idempotency-Key": "shared"}
        )
        assert conflict_a.status_code == 409 and conflict_a.json()["error"]["details"]["job"] == job_a
        assert a.get("/v1/jobs").json()["total"] == 1 and b.get("/v1/jobs").json()["total"] == 1


def test_a_key_lives_as_long_as_results(make_api) -> None:
    api: LiveApi = make_api(result_ttl_s=3600)
    with api.client() as c:
        r = c.post("/v1/jobs", json={"dataset": _dataset(c)}, headers={"Idempotency-Key": "ttl"})
        assert r.status_code == 202
    ttl = api.redis.ttl(Keys.of(api.settings).idempotency("default", "ttl"))
    assert 3600 - 60 < ttl <= 3600


def test_an_expired_job_frees_its_key(make_api) -> None:
    api: LiveApi = make_api()
    with api.client() as c:
        ds = _dataset(c)
        body = {"dataset": ds, "params": {"seed": 5}}
        first = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "old"}).json()["id"]
        Job.fetch(first, connection=api.redis).delete()  # what RQ does when the job's TTL runs out

        again = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "old"})
        assert again.status_code == 202, again.text
        assert again.json()["id"] != first and "Idempotent-Replayed" not in again.headers
        # the key now names the new job
        replay = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "old"})
        assert replay.json()["id"] == again.json()["id"] and replay.headers["Idempotent-Replayed"] == "true"
