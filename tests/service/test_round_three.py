"""Hardening round three (issue 25), API side, over real HTTP and a real Redis.

Each test reproduces one break of the attack and checks the class is closed: a regex that lets a
trailing newline through, an Idempotency-Key raced by concurrent requests, ...
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from spotlight.server.keys import Keys
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
    from spotlight.contract.params import _DEVICE
    from spotlight.contract.protocol import TagText

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
    # the contract's own `pattern`s run on pydantic's engine, where `$` is the end of the text
    from pydantic import TypeAdapter, ValidationError

    from spotlight.server.settings import Settings

    with pytest.raises(ValidationError):
        Settings(namespace="blue\n")
    with pytest.raises(ValidationError):
        TypeAdapter(TagText).validate_python("nightly\n")


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


# ----- break 1: score bodies have their own cap, are parsed off the event loop, a few at a time -----
def test_a_score_body_over_its_own_cap_is_413_before_parsing(shared_api: LiveApi) -> None:
    limit = shared_api.settings.max_score_body_bytes
    assert limit < shared_api.settings.max_inline_bytes
    row = "[" + ",".join(["0"] * 7) + "]"
    body = ('{"embeddings": [' + ",".join([row] * (limit // len(row) + 10)) + "]}").encode()
    with shared_api.client() as c:
        r = c.post("/v1/jobs/job_nope/score", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text[:300]
        assert r.json()["error"]["details"]["limit_bytes"] == limit
        assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"embeddings": [[True, 0.5]]}, "validation_error"),  # `true` is not 1.0
        ({"embeddings": [["1", 0.5]]}, "validation_error"),
        ({"embeddings": [[0.1]], "dataset": "ds_x"}, "validation_error"),
    ],
)
def test_score_bodies_are_validated_strictly(shared_api: LiveApi, body: dict, code: str) -> None:
    with shared_api.client() as c:
        r = c.post("/v1/jobs/job_nope/score", json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text


def test_malformed_score_json_is_the_usual_400(shared_api: LiveApi) -> None:
    with shared_api.client() as c:
        r = c.post(
            "/v1/jobs/job_nope/score", content=b'{"embeddings": [[1,', headers={"Content-Type": "application/json"}
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json", r.text


def test_score_slots_refuse_past_the_tenants_share_and_the_servers() -> None:
    from service.errors import http_status
    from service.limits import SCORE_SLOTS_PER_TENANT, SCORE_SLOTS_TOTAL, score_slots
    from spotlight.contract.errors import DomainError

    slots = score_slots()
    held = [slots.take("alice") for _ in range(SCORE_SLOTS_PER_TENANT)]
    for h in held:
        h.__enter__()
    with pytest.raises(DomainError) as own, slots.take("alice"):
        pass
    assert http_status(own.value) == 429 and own.value.retry_after_s and own.value.code == "too_many_requests"
    others = [slots.take(f"t{i}") for i in range(SCORE_SLOTS_TOTAL - SCORE_SLOTS_PER_TENANT)]
    for h in others:
        h.__enter__()
    with pytest.raises(DomainError) as server, slots.take("bob"):
        pass
    assert http_status(server.value) == 503 and server.value.details["reason"] == "score_requests"
    for h in held + others:
        h.__exit__(None, None, None)
    with slots.take("alice"):  # all freed
        pass


def _held_request(api: LiveApi, head: bytes, body: bytes = b"") -> socket.socket:
    """A connection that sent `head` (and `body`) and then reads nothing: a receive window of a few
    kB, so an answer larger than the kernel's buffers stays unsent."""
    host, port = api.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(head + body)
    return sock


def _refused_for_slots(c, path: str, body: dict) -> list[str]:
    """What the tenant's own requests got until one was refused for its score slots (empty once it
    was): asked a few times, as the held requests reach the server in their own time."""
    import time

    seen = []
    for _ in range(200):
        r = c.post(path, json=body)
        if r.status_code == 429 and r.json()["error"]["details"].get("reason") == "score_requests":
            return []
        seen.append(f"{r.status_code} {r.text[:80]}")
        time.sleep(0.1)
    return seen


def _answer_then_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    sock.settimeout(10)
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def test_an_answer_before_the_body_is_read_closes_the_connection(shared_api: LiveApi) -> None:
    """A refused body is not read to its end: the server answers and hangs up instead of draining
    up to Content-Length on the event loop (as often as a client sends it again)."""
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\n\r\n"
    )
    nowhere = head.replace(b"/v1/jobs", b"/v1/nowhere").replace(b"1000000000", b"1000000")
    for request, status in ((head, b"413"), (nowhere, b"404")):
        sock = _held_request(shared_api, request, b'{"dataset": {"embeddings": [' + b"[0]," * 4096)
        try:
            answer = _answer_then_eof(sock)
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 " + status) and b"connection: close" in answer.lower(), answer[:300]
    with shared_api.client() as c:  # a request whose body was read keeps its connection
        r = c.post("/v1/jobs", json={"dataset": "ds_nope"})
        assert r.status_code == 404 and "close" not in r.headers.get("connection", "")


def test_a_client_hanging_up_mid_body_is_no_server_error(shared_api: LiveApi, caplog) -> None:
    """A body that never arrives is the client's doing: logged as such, never as an unhandled error
    (a 500 in the access log and the metrics an attacker could fill by hanging up)."""
    import logging
    import time

    head = (
        b"POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    with caplog.at_level(logging.INFO, logger="spotlight.api"):
        _held_request(shared_api, head, b'{"embeddings": [[0.5, 1.5],').close()
        for _ in range(100):
            if any("client closed" in r.getMessage() for r in caplog.records):
                break
            time.sleep(0.05)
        assert any("client closed" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_score_slot_is_taken_before_the_body_is_read(api: LiveApi) -> None:
    """Bodies still arriving hold slots: many slow senders cannot buffer a cap's worth of bytes each."""
    import select

    from service.limits import SCORE_SLOTS_PER_TENANT

    head = (
        b"POST /v1/jobs/job_nope/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000\r\n\r\n"
    )
    seen: list[str] = []
    with api.client() as c:
        # A held request that reaches the server while one of the test's own requests has a slot is
        # refused itself (429, connection closed): the pair is then sent again.
        for _ in range(5):
            held = [_held_request(api, head, b'{"embeddings": [') for _ in range(SCORE_SLOTS_PER_TENANT)]
            try:
                if select.select(held, [], [], 0.5)[0]:  # one was answered: it holds nothing
                    continue
                for _ in range(20):
                    r = c.post("/v1/jobs/job_nope/score", json={"embeddings": [[0.0]]})
                    if r.status_code == 429 and r.json()["error"]["details"].get("reason") == "score_requests":
                        return
                    seen.append(f"{r.status_code} {r.text[:80]}")
                    if select.select(held, [], [], 0.1)[0]:
                        break
            finally:
                for sock in held:
                    sock.close()
    raise AssertionError(f"the tenant's own requests were never refused for its slots: {seen[-3:]}")


def test_a_score_slot_is_held_until_the_answer_is_sent(api: LiveApi) -> None:
    """An answer a client does not read stays inside its slot: slow readers cannot hold n x k weights
    each outside the bound."""
    import json
    import time

    import numpy as np

    from service.limits import SCORE_SLOTS_PER_TENANT
    from tests.service.conftest import npz_bytes
    from tests.service.test_score import _finished_gaussian_job

    with api.client() as c:
        job_id, _, _ = _finished_gaussian_job(api, c)
        rng = np.random.default_rng(0)
        rows = {"embeddings": rng.normal(size=(400_000, 3)).astype(np.float32), "losses": np.zeros(400_000)}
        ds = c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**rows))}).json()["id"]
        path = f"/v1/jobs/{job_id}/score"
        body = json.dumps({"dataset": ds}).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        held = [_held_request(api, head, body) for _ in range(SCORE_SLOTS_PER_TENANT)]
        try:
            for sock in held:  # each answer has begun: its slot is past the scoring
                assert sock.recv(64).startswith(b"HTTP/1.1 200")
            assert not (seen := _refused_for_slots(c, path, {"embeddings": [[0.0, 0.0, 0.0]]})), seen[-3:]
        finally:
            for sock in held:
                sock.close()
        # the slots come back when the connections go
        for _ in range(50):
            r = c.post(path, json={"embeddings": [[0.0, 0.0, 0.0]]})
            if r.status_code == 200:
                break
            time.sleep(0.1)
        assert r.status_code == 200, r.text


def test_a_score_answer_is_written_in_pieces_members_and_ids_too() -> None:
    """Every row of a body can be a member of every region: no piece of the answer (one json.dumps,
    holding the interpreter lock and so the event loop) may grow with n."""
    import asyncio
    import json

    import numpy as np

    from service.scoring import Scored

    n = 100_000
    members = [list(range(n)), list(range(n - 1, -1, -1))]
    ids = [f"row-{i}" for i in range(n)]
    weights = np.random.default_rng(0).random((n, 2))
    scored = Scored(n=n, member_min_weight=[0.5, None], weights=weights, members=members, ids=ids)

    got = asyncio.run(_pieces_of(scored))
    assert max(len(p) for p in got) < 1_000_000  # a piece holds a chunk of items, never all n (~3 MB here)
    answer = json.loads(b"".join(got))
    assert list(answer) == ["job", "dataset", "n", "member_min_weight", "members", "ids", "weights"]
    assert answer["members"] == members and answer["ids"] == ids and answer["n"] == n
    assert np.array_equal(np.asarray(answer["weights"]), weights)
    # many regions: a piece is a number of weights, not a number of rows
    wide = np.random.default_rng(1).random((10_000, 50))
    many = Scored(n=10_000, member_min_weight=[None] * 50, weights=wide, members=[[]] * 50, ids=None)
    got = asyncio.run(_pieces_of(many))
    assert max(len(p) for p in got) < 1_000_000
    assert np.array_equal(np.asarray(json.loads(b"".join(got))["weights"]), wide)
    none = Scored(n=0, member_min_weight=[], weights=np.zeros((0, 0)), members=[], ids=None)
    assert json.loads(b"".join(asyncio.run(_pieces_of(none)))) == {
        "job": "job_x",
        "dataset": "ds_x",
        "n": 0,
        "member_min_weight": [],
        "members": [],
        "ids": None,
        "weights": [],
    }


async def _pieces_of(scored) -> list[bytes]:
    from service.routers.score import _answer

    return [p async for p in _answer("job_x", "ds_x", scored).body_iterator]  # type: ignore[misc]


def test_a_body_at_the_score_cap_is_decoded_a_few_kb_at_a_time(tmp_path, monkeypatch) -> None:
    """The stdlib decoder holds the interpreter lock for a whole slice: a slice of a few tens of kB
    (milliseconds) is what keeps the event loop answering while four bodies at the cap are parsed."""
    import json

    import numpy as np

    import service.ingest.inline_json as inline
    from service.scoring import large_body_rows
    from spotlight.server.settings import Settings

    decoded: list[int] = []
    loads = json.loads

    def measured_loads(text, *a, **kw):  # type: ignore[no-untyped-def]
        decoded.append(len(text))
        return loads(text, *a, **kw)

    monkeypatch.setattr(inline.json, "loads", measured_loads)
    cap = Settings(redis_url=None).max_score_body_bytes
    row = "[" + ",".join(["0"] * 7) + "]"
    body = ('{"embeddings": [' + ",".join([row] * ((cap - 20) // (len(row) + 1))) + "]}").encode()
    rows = large_body_rows(body, str(tmp_path))
    assert rows.x is not None and rows.x.shape == ((cap - 20) // (len(row) + 1), 7) and not np.any(rows.x)
    assert len(decoded) > 100 and max(decoded) <= 64 * 1024, (len(decoded), max(decoded))


def test_a_large_bare_body_is_read_in_slices_and_scores_as_a_small_one(api: LiveApi) -> None:
    import json

    import numpy as np

    from tests.service.test_score import _finished_gaussian_job

    with api.client() as c:
        job_id, data, _ = _finished_gaussian_job(api, c)
        rng = np.random.default_rng(3)
        x = rng.normal(size=(20_000, 3))
        raw = json.dumps({"embeddings": x.tolist()}).encode()
        assert len(raw) > 256 * 1024
        big = c.post(f"/v1/jobs/{job_id}/score", content=raw, headers={"Content-Type": "application/json"})
        assert big.status_code == 200, big.text[:300]
        small = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": x[:50].tolist()})
        assert small.status_code == 200, small.text
        assert np.allclose(np.asarray(big.json()["weights"])[:50], np.asarray(small.json()["weights"]))
        assert big.json()["n"] == 20_000 and len(big.json()["weights"]) == 20_000

        # over the whole-parse size, only bare rows: an inline dataset is uploaded first
        ds = {"dataset": {"embeddings": x.tolist(), "losses": [0.0] * len(x)}}
        r = c.post(f"/v1/jobs/{job_id}/score", json=ds)
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "dataset", r.text[:300]
        for bad, field in (([[True, 0.0, 1.0]], "embeddings"), ([[0.0, 1.0]], "embeddings")):
            body = json.dumps({"embeddings": x.tolist() + bad}).encode()
            r = c.post(f"/v1/jobs/{job_id}/score", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and field in r.text, r.text[:300]


# ----- break 2: listing by status reads only the page's jobs -----
def _job_reads(api: LiveApi) -> int:
    stats = api.redis.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


def test_listing_by_status_reads_the_page_not_every_job(api: LiveApi) -> None:
    from tests.service.conftest import npz_bytes

    with api.client() as c:
        data = toy(20)
        ds = c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**data))}).json()["id"]
        made = []
        for i in range(40):
            job = c.post("/v1/jobs", json={"dataset": ds, "params": {"seed": i}}).json()["id"]
            assert c.delete(f"/v1/jobs/{job}").status_code == 200
            made.append(job)
        queued = [c.post("/v1/jobs", json={"dataset": ds}).json()["id"] for _ in range(2)]

        api.redis.config_resetstat()
        page = c.get("/v1/jobs", params={"status": "queued"}).json()
        assert sorted(j["id"] for j in page["jobs"]) == sorted(queued) and page["total"] == 2
        assert _job_reads(api) <= 4  # the active jobs, not the 42 the tenant has

        api.redis.config_resetstat()
        page = c.get("/v1/jobs", params={"status": "canceled", "limit": 5, "offset": 5}).json()
        assert [j["id"] for j in page["jobs"]] == made[::-1][5:10] and page["total"] == 40
        assert _job_reads(api) <= 5 + 2 + 2

        # jobs from before the index: indexed once, with the same answers
        keys = Keys.of(api.settings)
        api.redis.delete(keys.tenant_status_indexed("default"), keys.tenant_status("default", "canceled"))
        page = c.get("/v1/jobs", params={"status": "canceled", "limit": 5, "offset": 5}).json()
        assert [j["id"] for j in page["jobs"]] == made[::-1][5:10] and page["total"] == 40
        assert c.get("/v1/jobs", params={"status": "finished"}).json() == {"jobs": [], "total": 0}
        api.mark_finished(queued[0])
        assert [j["id"] for j in c.get("/v1/jobs", params={"status": "finished"}).json()["jobs"]] == [queued[0]]
        assert c.get("/v1/jobs", params={"status": "queued"}).json()["total"] == 1


# ----- break 9: a deleted dataset leaves every artefact derived from its rows -----
def test_deleting_a_dataset_deletes_its_jobs_results(api: LiveApi) -> None:
    from spotlight.contract.protocol import job_prefix
    from tests.service.test_score import _finished_gaussian_job

    with api.client() as c:
        job_id, data, _ = _finished_gaussian_job(api, c)
        api.store.write_bytes(f"{job_prefix(job_id)}/report.html", b"<html>row ids and thumbnails</html>")
        ds = c.get(f"/v1/jobs/{job_id}").json()["dataset"]
        waiting = c.post("/v1/jobs", json={"dataset": ds, "params": {"seed": 2}}).json()["id"]
        assert c.get(f"/v1/jobs/{job_id}/weights").status_code == 200
        assert api.store.list(job_prefix(job_id))

        assert c.delete(f"/v1/datasets/{ds}").status_code == 204
        for path in ("regions", "regions/0/members", "weights", "report"):
            r = c.get(f"/v1/jobs/{job_id}/{path}")
            assert r.status_code == 410 and r.json()["error"]["code"] == "dataset_gone", (path, r.text)
        r = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": [[0.0, 0.0, 0.0]]})
        assert r.status_code == 410
        assert api.store.list(job_prefix(job_id)) == []  # weights, members, regions: gone from the store
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "finished"  # the record stays
        assert c.get(f"/v1/jobs/{waiting}").json()["status"] == "canceled"


def test_a_canceled_jobs_results_say_why_there_are_none(api: LiveApi) -> None:
    from tests.service.conftest import npz_bytes

    with api.client() as c:
        ds = c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**toy(20)))}).json()["id"]
        job = c.post("/v1/jobs", json={"dataset": ds}).json()["id"]
        c.delete(f"/v1/jobs/{job}")
        r = c.get(f"/v1/jobs/{job}/regions")
        assert r.status_code == 409 and "canceled, so it has no results" in r.json()["error"]["message"]


# ----- break 8: a full disk is a 503 for the one who hits it, never a 500 for everyone -----
def _upload(c, seed: int = 0, n: int = 200):
    from tests.service.conftest import npz_bytes

    return c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**toy(n, seed=seed)))})


def test_each_tenant_has_a_storage_quota(make_api) -> None:
    api: LiveApi = make_api(api_keys="a:ka,b:kb", max_stored_bytes_per_tenant=12_000)
    with api.client("ka") as a, api.client("kb") as b:
        first = _upload(a, 0)
        assert first.status_code == 201, first.text
        over = _upload(a, 1)
        assert over.status_code == 413 and over.json()["error"]["code"] == "storage_quota_exceeded", over.text
        assert len(api.stored_datasets()) == 1 and not api.leftovers()
        assert _upload(b, 2).status_code == 201  # b's quota is its own
        assert a.delete(f"/v1/datasets/{first.json()['id']}").status_code == 204
        assert _upload(a, 1).status_code == 201  # deleting frees the quota
        # an inline dataset in a job counts too
        job = a.post("/v1/jobs", json={"dataset": _inline(2000, seed=5)})
        assert job.status_code == 413 and job.json()["error"]["code"] == "storage_quota_exceeded"


def test_uploads_stop_before_the_disk_is_full(make_api) -> None:
    api: LiveApi = make_api(min_free_store_bytes=2**62)
    with api.client() as c:
        r = _upload(c)
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_error", r.text
        assert r.json()["error"]["details"]["reason"] == "disk_full" and "Retry-After" in r.headers
        assert c.get("/healthz").status_code == 200


def test_a_full_disk_is_503_store_error_not_500(make_api, tmp_path) -> None:
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("needs a small filesystem: mounting a tmpfs is not permitted here")
    try:
        api: LiveApi = make_api(store_url=str(mnt / "store"), data_dir=mnt / "data", min_free_store_bytes=0)
        with api.client() as c:
            r = _upload(c, n=40_000)  # ~1 MB of arrays on a 600 KB disk
            assert r.status_code == 503 and r.json()["error"]["code"] == "store_error", r.text
            assert c.get("/healthz").status_code == 200
            assert _upload(c, n=50).status_code == 201  # room for a small one: the failed upload left nothing
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_redis_refusing_writes_is_not_ready_and_503(make_api, tmp_path) -> None:
    import redis

    from spotlight.ops.redis_server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis").start()
    own = redis.Redis.from_url(server.url)  # the API's Redis (api.redis is the session's)
    try:
        api: LiveApi = make_api(redis_url=server.url)
        with api.client() as c:
            ds = _upload(c).json()["id"]
            assert c.get("/readyz").status_code == 200
            # a Redis that answers PING and refuses every write (as it does with MISCONF on a full disk)
            own.config_set("min-replicas-to-write", 1)
            ready = c.get("/readyz")
            assert ready.status_code == 503 and "redis" in ready.json()["error"]["message"], ready.text
            r = c.post("/v1/jobs", json={"dataset": ds})
            assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable", r.text
            own.config_set("min-replicas-to-write", 0)
            assert c.get("/readyz").status_code == 200
    finally:
        server.stop()


# ----- degradation: image decoding in the API has a budget per upload -----
def test_an_upload_decodes_images_within_its_pixel_budget_and_repeats_once() -> None:
    from service.ingest.images import ImageBudget, image_value
    from tests.service.test_tables_in import _png

    budget = ImageBudget(pixels=3 * 40 * 40)
    same = _png((0, 0, 255), size=40)
    uris = [image_value(same, budget) for _ in range(300)]  # 300 identical images: decoded once
    assert uris[0].startswith("data:image/") and len(set(uris)) == 1
    assert budget.pixels_left == 2 * 40 * 40
    assert image_value(_png((0, 255, 0), size=40), budget).startswith("data:image/")
    assert image_value(_png((255, 0, 0), size=40), budget).startswith("data:image/")
    assert image_value(_png((9, 9, 9), size=40), budget) is None  # past the upload's budget: null, not decoded
    assert budget.pixels_left == 0


# ----- minor: class codes the job never saw, and numbers no code can be -----
def test_score_labels_are_codes_the_job_saw(api: LiveApi) -> None:
    from tests.service.test_score_evidence import _finished_job_with_evidence

    with api.client() as c:
        job_id, data, _ = _finished_job_with_evidence(api, c)
        x = data["embeddings"][:2].tolist()
        for labels, words in (([0, 99], "code 99"), ([0, -1], "greater than or equal to 0"), ([0, 2**70], "less than")):
            r = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": x, "labels": labels})
            assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", r.text
            assert words in r.json()["error"]["message"] and "class names" not in r.json()["error"]["message"], r.text
        for labels in ([True, 0], [0.5, 1]):
            r = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": x, "labels": labels})
            assert r.status_code == 400, r.text
        assert c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": x, "labels": [0, 2]}).status_code == 200


# ----- minor: repeated query parameters, hidden characters in labels, Host headers without keys -----
def test_a_query_parameter_given_twice_is_refused_unless_it_is_a_list(shared_api: LiveApi) -> None:
    with shared_api.client() as c:
        r = c.get("/v1/jobs?status=queued&status=failed")
        assert r.status_code == 400 and r.json()["error"]["details"]["repeated"] == ["status"], r.text
        assert c.get("/v1/jobs?limit=5&limit=6").status_code == 400
        assert c.get("/v1/jobs?status=queued").status_code == 200
        # tags is a list: repeating it is how several are given (refused here for the bad file, not the tags)
        r = c.post("/v1/datasets?tags=a&tags=b", content=b"{}", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "repeated" not in r.json()["error"]["details"], r.text


@pytest.mark.parametrize("text", ["a\x00b", "line\nbreak", "evil\u202egnp.exe", "iso\u2066late"])
def test_names_and_tags_refuse_control_and_bidi_characters(shared_api: LiveApi, text: str) -> None:
    with shared_api.client() as c:
        for body in ({"dataset": "ds_x", "name": text}, {"dataset": "ds_x", "tags": [text]}):
            r = c.post("/v1/jobs", json=body)
            assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", (body, r.text)
        for query in ({"name": text}, {"tags": text}):
            r = c.post("/v1/datasets", params=query, content=b"{}", headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["details"]["field"] in query, (query, r.text)
    assert shared_api.stored_datasets() == []


def test_a_keyless_api_answers_only_its_own_host_names(make_api) -> None:
    api: LiveApi = make_api(trusted_hosts=["spotlight.lan"])
    with api.client() as c:
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.nip.io"):
            r = c.get("/v1/datasets", headers={"Host": host})
            assert r.status_code == 421 and r.json()["error"]["code"] == "host_not_allowed", (host, r.text)
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "app.localhost", "spotlight.lan", "myhost"):
            assert c.get("/v1/datasets", headers={"Host": host}).status_code == 200, host
    keyed: LiveApi = make_api(api_keys="a:ka")
    with keyed.client("ka") as c:  # with keys every request is authenticated: any Host
        assert c.get("/v1/datasets", headers={"Host": "api.example.com"}).status_code == 200


def test_an_unknown_key_gets_the_name_it_was_likely_meant_to_be(shared_api: LiveApi) -> None:
    with shared_api.client() as c:
        for body, words in (
            ({"dataset": "ds_x", "params": {"n_spotlight": 3}}, "did you mean n_spotlights?"),
            ({"dataset": "ds_x", "n_spotlights": 3}, "n_spotlights is a search parameter: put it inside params"),
            ({"datset": "ds_x"}, "did you mean dataset?"),
        ):
            r = c.post("/v1/jobs", json=body)
            assert r.status_code == 400 and words in r.json()["error"]["message"] + r.text, r.text


def test_the_quota_is_counted_in_one_step_so_racing_uploads_cannot_both_pass(api: LiveApi) -> None:
    """Two uploads checked at once both see room; the count taken with INCRBY lets only one through."""
    from service.dataset_registry import DatasetRegistry
    from spotlight.contract.errors import TooLarge

    tenant_bytes_key = Keys.of(api.settings).tenant_bytes
    registry = DatasetRegistry(
        api.redis,
        api.store,
        Keys.of(api.settings),
        api.settings.model_copy(update={"max_stored_bytes_per_tenant": 100}),
    )
    api.redis.set(tenant_bytes_key("racer"), 60)
    registry.check_room("racer", 30)  # both pass the early check...
    registry._reserve("racer", 30)
    with pytest.raises(TooLarge) as refused:
        registry._reserve("racer", 30)  # ...the count refuses the second, and leaves nothing counted for it
    assert refused.value.code == "storage_quota_exceeded"
    assert int(api.redis.get(tenant_bytes_key("racer"))) == 90
