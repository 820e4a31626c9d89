"""Hardening round three (issue 25), API side, over real HTTP and a real Redis.

Each test reproduces one break of the attack and checks the class is closed: a regex that lets a
trailing newline through, an Idempotency-Key raced by concurrent requests, ...
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.service.conftest import LiveApi, toy


def _inline(n: int = 400, seed: int = 0) -> dict:
    data = toy(n, seed=seed)
    return {"embeddings": data["embeddings"].tolist(), "losses": data["losses"].tolist()}


# ----- break 4: a pattern validates the whole input, a trailing newline included -----
@pytest.mark.parametrize("device", ["cpu\n", "cuda:0\n", "auto\n", "cpu\r\n", "cuda:\u0663"])
def test_a_device_with_a_trailing_newline_is_refused(shared_api: LiveApi, device: str) -> None:
    with shared_api.client() as c:
        r = c.post("/v1/jobs", json={"dataset": "ds_none", "params": {"device": device}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"]["errors"][0]["field"] == "params.device"


def test_every_validating_regex_is_a_full_match() -> None:
    """The patterns in the code that validate input refuse a trailing newline (re's `$` would not)."""
    from service.auth import _HEX64, _TENANT
    from service.deps import _DATASET_ID, _JOB_ID
    from service.ingest.parquet import _EMB_COL
    from service.request_log import _SANE_ID
    from spotlight.params import _DEVICE
    from spotlight.protocol import TagText  # noqa: F401 - pydantic's patterns match the whole text

    for pattern, good in (
        (_TENANT, "alice"),
        (_HEX64, "a" * 64),
        (_SANE_ID, "req-1"),
        (_EMB_COL, "emb_3"),
        (_DEVICE, "cuda:1"),
        (_JOB_ID, "job_x"),
        (_DATASET_ID, "ds_x"),
    ):
        assert pattern.fullmatch(good)
        assert not pattern.fullmatch(good + "\n")
    from service.auth import KeyConfigError, _parse_entry

    with pytest.raises(KeyConfigError):
        _parse_entry("alice\n:secret", "test")


# ----- break 3: one Idempotency-Key, one job, whatever the interleaving -----
def test_sixteen_concurrent_requests_with_one_key_make_one_job(make_api) -> None:
    api: LiveApi = make_api()
    body = {"dataset": _inline(), "params": {"seed": 1}}
    with api.client() as c, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k16"}), range(16)))
        assert [r.status_code for r in answers] == [202] * 16, [r.text for r in answers if r.status_code != 202]
        assert len({r.json()["id"] for r in answers}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 15
        assert c.get("/v1/jobs").json()["total"] == 1


def test_two_bodies_racing_on_one_key_make_one_job_and_409s(make_api) -> None:
    api: LiveApi = make_api()
    bodies = [{"dataset": _inline(seed=i % 2), "params": {"seed": 1}} for i in range(16)]
    with api.client() as c, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda b: c.post("/v1/jobs", json=b, headers={"Idempotency-Key": "k2"}), bodies))
        codes = sorted(r.status_code for r in answers)
        assert set(codes) == {202, 409}, [r.text for r in answers]
        winners = {r.json()["id"] for r in answers if r.status_code == 202}
        assert len(winners) == 1
        assert all(r.json()["error"]["code"] == "idempotency_conflict" for r in answers if r.status_code == 409)
        assert c.get("/v1/jobs").json()["total"] == 1


def test_a_failed_first_request_frees_the_key_for_a_waiting_one(make_api) -> None:
    api: LiveApi = make_api()
    with api.client() as c:
        bad = c.post("/v1/jobs", json={"dataset": "ds_missing"}, headers={"Idempotency-Key": "kf"})
        assert bad.status_code == 404
        ok = c.post("/v1/jobs", json={"dataset": _inline()}, headers={"Idempotency-Key": "kf"})
        assert ok.status_code == 202, ok.text
