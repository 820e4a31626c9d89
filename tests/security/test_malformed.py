"""Malformed requests get a 4xx, never a 5xx: ids the queue would refuse, nesting deeper than the
parsers recurse, multipart boundaries past the parser's limit, `.npy` headers whose sizes overflow
int64, every `.npy` format version numpy writes, booleans where numbers belong, parameters the
dataset cannot satisfy, and 405 answers naming the methods that are allowed."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from spotlight.server.settings import Settings
from tests.conftest import api_client


@pytest.fixture
def client(redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with api_client(redis_url, tmp_path, max_elements=10_000) as c:
        yield c


def _npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=version, allow_pickle=False)
    return buf.getvalue()


def _header_only(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _dataset(client: TestClient, **extra: Any) -> str:
    body = {"embeddings": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, 0.5]], "losses": [1.0, 2.0, 0.5, 0.1], **extra}
    r = client.post("/v1/datasets", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


BAD_IDS = ["job_a.b", "job_%20", "job_%C3%A9", "job_%00", "job_x%0A", "ds_a.b", "ds_%00", "x" * 300, "job_" + "a" * 65]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_ids_the_queue_would_refuse_are_404_on_every_route(client: TestClient, bad: str) -> None:
    routes = [
        ("GET", f"/v1/jobs/{bad}"),
        ("DELETE", f"/v1/jobs/{bad}"),
        ("GET", f"/v1/jobs/{bad}/regions"),
        ("GET", f"/v1/jobs/{bad}/regions/0/members"),
        ("GET", f"/v1/jobs/{bad}/weights"),
        ("GET", f"/v1/jobs/{bad}/report"),
        ("GET", f"/v1/datasets/{bad}"),
        ("DELETE", f"/v1/datasets/{bad}"),
    ]
    for method, path in routes:
        r = client.request(method, path)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] in ("job_not_found", "dataset_not_found")


def test_a_dataset_id_in_a_job_body_that_is_no_id_is_404(client: TestClient) -> None:
    for bad in ("ds_\x00", "ds_a.b", "job_x"):
        r = client.post("/v1/jobs", json={"dataset": bad})
        assert r.status_code == 404, r.text


@pytest.mark.parametrize("depth", [100, 5_000, 100_000])
def test_deeply_nested_json_is_a_4xx(client: TestClient, depth: int) -> None:
    deep = "[" * depth + "]" * depth
    r = client.post("/v1/datasets", content=deep, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    nested = '{"a":' * depth + "1" + "}" * depth
    meta = '{"embeddings": [[1.0],[2.0],[3.0]], "losses": [1,2,3], "metadata": [' + nested + ", {}, {}]}"
    r = client.post("/v1/datasets", content=meta, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    job = '{"dataset": {"embeddings": [[1.0],[2.0]], "losses": [1, 2], "metadata": [' + nested + ", {}]}}"
    r = client.post("/v1/jobs", content=job, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    jsonl = ("\n".join([nested, "{}", "{}"])).encode()
    files = {
        "embeddings": ("e.npy", _npy(np.ones((3, 2)))),
        "losses": ("l.npy", _npy(np.ones(3))),
        "metadata": ("m.jsonl", jsonl),
    }
    r = client.post("/v1/datasets", files=files)
    assert 400 <= r.status_code < 500, r.text
    files["metadata"] = ("m.json", ("[" + ",".join([nested, "{}", "{}"]) + "]").encode())
    r = client.post("/v1/datasets", files=files)
    assert 400 <= r.status_code < 500, r.text
    assert client.get("/v1/datasets").json()["total"] == 0


def test_shallow_metadata_is_still_accepted(client: TestClient) -> None:
    nested = '{"a":' * 10 + "1" + "}" * 10
    meta = '{"embeddings": [[1.0],[2.0]], "losses": [1,2], "metadata": [' + nested + ", {}]}"
    r = client.post("/v1/datasets", content=meta, headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("length", [257, 300, 5000])
def test_a_multipart_boundary_past_the_parsers_limit_is_400(client: TestClient, length: int) -> None:
    b = "x" * length
    body = f'--{b}\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc\r\n--{b}--\r\n'
    r = client.post("/v1/datasets", content=body, headers={"content-type": f"multipart/form-data; boundary={b}"})
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("shape", [(2**32, 2**32), (2**31, 2**31), (2**62, 4), (2**63 - 1, 2**63 - 1), (3, 2**62)])
def test_npy_shapes_whose_size_overflows_int64_are_refused(client: TestClient, shape: tuple[int, int]) -> None:
    files = {"embeddings": ("e.npy", _header_only(shape)), "losses": ("l.npy", _npy(np.ones(3)))}
    r = client.post("/v1/datasets", files=files)
    assert r.status_code in (400, 413), r.text
    # The element count is computed exactly, so the limit sees the real (huge) number.
    from service.ingest.npy import NpyInfo

    info = NpyInfo("x", shape, np.dtype("<f4"), False, 128)
    assert info.elements == shape[0] * shape[1] and info.elements > 10_000


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_every_npy_format_version_numpy_writes_is_read(client: TestClient, version: tuple[int, int]) -> None:
    files = {
        "embeddings": ("e.npy", _npy(np.arange(10, dtype=np.float32).reshape(5, 2), version)),
        "losses": ("l.npy", _npy(np.ones(5, dtype=np.float32), version)),
    }
    r = client.post("/v1/datasets", files=files)
    assert r.status_code == 201, r.text
    assert (r.json()["n"], r.json()["dim"]) == (5, 2)


def test_an_unknown_npy_version_is_a_clear_400(client: TestClient) -> None:
    raw = bytearray(_npy(np.ones((3, 2)), (2, 0)))
    raw[6] = 9  # major version 9
    r = client.post("/v1/datasets", files={"embeddings": ("e.npy", bytes(raw)), "losses": ("l.npy", _npy(np.ones(3)))})
    assert r.status_code == 400 and "_read_array_header" not in r.text, r.text


@pytest.mark.parametrize(
    "field,value",
    [
        ("steps", True),
        ("n_spotlights", True),
        ("restarts", False),
        ("seed", True),
        ("steps", "500"),
        ("spotlight_size", True),
        ("learning_rate", True),
        ("n_permutations", True),
        ("steps", 5.0),
    ],
)
def test_numbers_are_strict(client: TestClient, field: str, value: Any) -> None:
    ds = _dataset(client)
    r = client.post("/v1/jobs", json={"dataset": ds, "params": {field: value}})
    assert r.status_code == 400, r.text
    assert f"params.{field}" in r.text


def test_entropy_penalties_need_the_field_they_penalise(client: TestClient) -> None:
    ds = _dataset(client)
    for coeff, needs in (("label_entropy_coeff", "labels"), ("prediction_entropy_coeff", "predictions")):
        r = client.post("/v1/jobs", json={"dataset": ds, "params": {coeff: 0.5}})
        assert r.status_code == 400, r.text
        assert needs in r.json()["error"]["message"]
    with_both = _dataset(client, labels=[0, 1, 0, 1], predictions=[1, 1, 0, 0])
    r = client.post(
        "/v1/jobs",
        json={
            "dataset": with_both,
            "params": {"label_entropy_coeff": 0.5, "prediction_entropy_coeff": 0.5, "device": "cpu"},
        },
    )
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    "method,path,allowed",
    [
        ("PUT", "/v1/jobs", {"GET", "POST"}),
        ("PATCH", "/v1/jobs/job_abc", {"GET", "DELETE"}),
        ("POST", "/healthz", {"GET"}),
        ("DELETE", "/v1/datasets", {"GET", "POST"}),
        ("POST", "/v1/jobs/job_abc/regions", {"GET"}),
    ],
)
def test_405_names_the_allowed_methods(client: TestClient, method: str, path: str, allowed: set[str]) -> None:
    r = client.request(method, path)
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed
    assert set(r.json()["error"]["details"]["allowed"]) == allowed


def test_dedup_is_disclosed_only_within_a_tenant(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(
        redis_url=redis_url,
        data_dir=tmp_path,
        store_url=str(tmp_path / "store"),
        api_keys="a:key-a,b:key-b",
        api_keys_file=None,
    )
    body = {"embeddings": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], "losses": [1.0, 2.0, 0.5]}
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        a, b = ({"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"})
        first = c.post("/v1/datasets", json=body, headers=a).json()
        assert first["deduplicated"] is False
        # Another tenant sending the same bytes learns nothing about tenant a.
        other = c.post("/v1/datasets", json=body, headers=b).json()
        assert other["deduplicated"] is False and other["id"] != first["id"]
        # The same tenant is told (its own earlier upload), and both copies share one stored folder.
        again = c.post("/v1/datasets", json=body, headers=a).json()
        assert again["deduplicated"] is True
        assert len(list((tmp_path / "store" / "datasets").iterdir())) == 1
        # b's view stays the same after a deletes all its copies.
        for ds in (first["id"], again["id"]):
            assert c.delete(f"/v1/datasets/{ds}", headers=a).status_code == 204
        assert c.get(f"/v1/datasets/{other['id']}", headers=b).status_code == 200
        assert c.post("/v1/datasets", json=body, headers=b).json()["deduplicated"] is True


def test_cuda_jobs_need_a_live_worker_with_a_gpu(client: TestClient, redis_url: str) -> None:
    import redis as redis_lib
    from rq import Queue, Worker

    from spotlight.server import capabilities

    conn = redis_lib.Redis.from_url(redis_url)
    ds = _dataset(client)

    def submit(device: str) -> Any:
        return client.post("/v1/jobs", json={"dataset": ds, "params": {"device": device, "steps": 5}})

    for device in ("cuda", "cuda:0", "cuda:3"):
        r = submit(device)
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "params.device", r.text
    # A worker that published a GPU but is not alive (not in RQ's registry) counts for nothing.
    settings = client.app.state.settings
    capabilities.publish(conn, settings, "gone-worker", 2)
    assert submit("cuda").status_code == 400
    # A live worker (registered with RQ) with one GPU: cuda and cuda:0 are accepted, cuda:1 is not.
    worker = Worker([Queue("spotlight", connection=conn)], name="gpu-worker", connection=conn)
    worker.register_birth()
    try:
        capabilities.publish(conn, settings, "gpu-worker", 1)
        assert submit("cuda").status_code == 202
        assert submit("cuda:0").status_code == 202
        assert submit("cuda:1").status_code == 400
        assert submit("cpu").status_code == 202 and submit("auto").status_code == 202
    finally:
        worker.register_death()
    assert submit("cuda").status_code == 400


def test_a_cpu_build_reports_no_cuda_devices_without_a_child_process() -> None:
    import torch

    from worker.devices import detect_cuda_devices

    if torch.version.cuda:
        pytest.skip("a CUDA build of torch: the count comes from a child process")
    assert detect_cuda_devices() == 0
    assert not torch.cuda.is_initialized()
