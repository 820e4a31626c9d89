"""The Python client: parsing (mock transport) and the real API over HTTP (uvicorn + real Redis)."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from spotlight.client import Job, JobFailedError, JobWaitTimeout, SpotlightClient, SpotlightError


# ----- parsing, against a mock transport -----
def _mock(handler: Callable[[httpx.Request], httpx.Response]) -> SpotlightClient:
    return SpotlightClient("http://spotlight.test/", api_key="k1", transport=httpx.MockTransport(handler))


def test_error_json_becomes_spotlight_error_with_the_servers_code() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer k1"
        return httpx.Response(
            409,
            json={"error": {"code": "job_not_finished", "message": "still running", "details": {"status": "running"}}},
        )

    with _mock(handler) as sc, pytest.raises(SpotlightError) as info:
        sc.job("job_1").regions()
    err = info.value
    assert (err.code, err.message, err.status_code, err.details) == (
        "job_not_finished",
        "still running",
        409,
        {"status": "running"},
    )
    assert err.response is not None and "job_not_finished" in str(err)


def test_non_contract_error_and_network_failure_are_spotlight_errors_too() -> None:
    with (
        _mock(lambda r: httpx.Response(502, text="<html>bad gateway</html>")) as sc,
        pytest.raises(SpotlightError) as info,
    ):
        sc.datasets()
    assert info.value.code == "http_502" and "bad gateway" in info.value.message

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with _mock(refuse) as sc, pytest.raises(SpotlightError) as info:
        sc.dataset("ds_x")
    assert info.value.code == "connection_error" and info.value.status_code is None


def _report_answers(answers: list[httpx.Response]) -> tuple[SpotlightClient, list[float]]:
    """A client whose report requests get `answers` in turn; the list of when each came."""
    import time

    asked: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/jobs/job_1/report"
        asked.append(time.monotonic())
        return answers[min(len(asked), len(answers)) - 1]

    return _mock(handler), asked


def _not_ready(retry_after: str = "0.2") -> httpx.Response:
    body = {"error": {"code": "report_not_ready", "message": "still rendering", "details": {"report": "pending"}}}
    return httpx.Response(409, json=body, headers={"Retry-After": retry_after})


def test_report_waits_for_a_report_still_being_rendered_as_retry_after_says() -> None:
    html = httpx.Response(200, text="<html>the report</html>", headers={"content-type": "text/html"})
    sc, asked = _report_answers([_not_ready(), _not_ready(), html])
    with sc:
        assert sc.job("job_1").report() == "<html>the report</html>"
    assert len(asked) == 3 and all(b - a >= 0.15 for a, b in zip(asked, asked[1:], strict=False))


def test_report_waits_only_as_long_as_asked_and_a_failed_report_raises_at_once() -> None:
    sc, asked = _report_answers([_not_ready("30")])
    with sc, pytest.raises(SpotlightError) as info:
        sc.job("job_1").report(timeout=0.3)
    assert info.value.code == "report_not_ready" and 2 <= len(asked) <= 3 and asked[-1] - asked[0] < 2
    failed = httpx.Response(
        409, json={"error": {"code": "report_failed", "message": "could not be made", "details": {"reason": "x"}}}
    )
    sc, asked = _report_answers([failed])
    with sc, pytest.raises(SpotlightError) as info:
        sc.job("job_1").save_report("unused.html")
    assert info.value.code == "report_failed" and len(asked) == 1


def test_upload_sends_one_npz_with_every_field() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        body = request.read()
        boundary = request.headers["content-type"].split("boundary=")[1].encode()
        part = next(p for p in body.split(b"--" + boundary) if b'name="file"' in p)
        seen["npz"] = np.load(io.BytesIO(part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]), allow_pickle=False)
        return httpx.Response(
            201,
            json={"id": "ds_1", "n": 3, "dim": 2, "fields": [], "sha256": "x", "created_at": "2026-01-01T00:00:00Z"},
        )

    emb = np.arange(6, dtype=np.float64).reshape(3, 2)
    with _mock(handler) as sc:
        out = sc.upload(
            emb,
            [0.1, 0.2, 0.3],
            labels=[0, 1, 1],
            ids=["a", 2, "c"],
            metadata=[{"x": np.int64(1)}, {"x": 2}, {"y": "z"}],
        )
    assert out["id"] == "ds_1"
    npz = seen["npz"]
    assert npz["embeddings"].dtype == np.float32 and npz["embeddings"].shape == (3, 2)
    assert npz["labels"].dtype == np.int64
    assert npz["ids"].tolist() == ["a", "2", "c"]  # mixed ids sent as strings
    assert json.loads(str(npz["metadata"])) == [{"x": 1}, {"x": 2}, {"y": "z"}]


def test_upload_refuses_bad_arguments_before_sending() -> None:
    with _mock(lambda r: httpx.Response(500)) as sc:
        with pytest.raises(ValueError):
            sc.upload()
        with pytest.raises(ValueError):
            sc.upload(np.zeros((2, 2)), [1, 2], labels=[0.5, 1.5])
        with pytest.raises(ValueError):
            sc.submit("ds_1", losses=[1, 2])


def test_wait_raises_on_failure_and_on_timeout_and_rides_out_a_503() -> None:
    answers = iter(
        [
            httpx.Response(503, json={"error": {"code": "service_unavailable", "message": "redis down"}}),
            httpx.Response(200, json={"id": "job_1", "status": "running", "progress": {"fraction": 0.5}}),
            httpx.Response(
                200,
                json={
                    "id": "job_1",
                    "status": "failed",
                    "progress": {},
                    "error": {"code": "search_failed", "message": "boom"},
                },
            ),
        ]
    )
    with _mock(lambda r: next(answers)) as sc:
        with pytest.raises(JobFailedError) as info:
            sc.job("job_1").wait(progress=False, poll=0.01)
    assert info.value.code == "search_failed" and info.value.status["status"] == "failed"

    running = {"id": "job_2", "status": "running", "progress": {"fraction": 0.1}}
    with _mock(lambda r: httpx.Response(200, json=running)) as sc:
        with pytest.raises(JobWaitTimeout):
            sc.job("job_2").wait(progress=False, timeout=0.2, poll=0.05)


# ----- the real API -----
@pytest.fixture
def live(redis_url: str, tmp_path: Path) -> Any:
    from tests.service.conftest import _Servers

    servers = _Servers(redis_url, tmp_path)
    yield servers
    servers.stop_all()


def _data(n: int = 300, d: int = 4, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    losses = (rng.random(n) + 2.0 * (x[:, 0] > 1.0)).astype(np.float32)
    return {
        "embeddings": x,
        "losses": losses,
        "labels": rng.integers(0, 3, n),
        "ids": [f"row-{i}" for i in range(n)],
        "metadata": [{"group": "a" if v > 1 else "b"} for v in x[:, 0]],
    }


def test_client_against_the_real_api_datasets_jobs_errors(live: Any, tmp_path: Path) -> None:
    api = live.start()
    data = _data()
    with SpotlightClient(api.url) as sc:
        assert sc.health()
        ds = sc.upload(**data)
        assert ds["id"].startswith("ds_") and (ds["n"], ds["dim"]) == (300, 4)
        assert {"embeddings", "losses", "labels", "ids", "metadata"} <= set(ds["fields"])
        assert sc.dataset(ds["id"])["sha256"] == ds["sha256"]
        assert [d["id"] for d in sc.datasets()] == [ds["id"]]

        # a path: .npz on disk, and separate .npy files named after their keys
        np.savez(tmp_path / "d.npz", embeddings=data["embeddings"][:50], losses=data["losses"][:50])
        assert sc.upload(path=tmp_path / "d.npz")["n"] == 50
        np.save(tmp_path / "embeddings.npy", data["embeddings"][:40])
        np.save(tmp_path / "losses.npy", data["losses"][:40])
        assert sc.upload(path=[tmp_path / "embeddings.npy", tmp_path / "losses.npy"])["n"] == 40

        # bad input: the server's code comes through
        with pytest.raises(SpotlightError) as info:
            sc.upload(data["embeddings"], data["losses"][:10])
        assert info.value.code == "shape_mismatch" and info.value.status_code == 400
        with pytest.raises(SpotlightError) as info:
            sc.dataset("ds_nope")
        assert info.value.code == "dataset_not_found" and info.value.status_code == 404
        with pytest.raises(SpotlightError) as info:
            sc.submit(ds["id"], n_spotlights=0)
        assert info.value.code == "validation_error"

        # a job with no worker running stays queued: results are 409, cancel works
        job = sc.submit(ds["id"], n_spotlights=2, steps=20, device="cpu", idempotency_key="k-1")
        assert isinstance(job, Job) and job.id.startswith("job_")
        again = sc.submit(ds["id"], n_spotlights=2, steps=20, device="cpu", idempotency_key="k-1")
        assert again.id == job.id
        status = job.status()
        assert status["status"] == "queued" and status["params"]["n_spotlights"] == 2
        with pytest.raises(SpotlightError) as info:
            job.regions()
        assert info.value.code == "job_not_finished" and info.value.status_code == 409
        with pytest.raises(JobWaitTimeout):
            job.wait(progress=False, timeout=0.3, poll=0.1)
        assert job.cancel()["status"] == "canceled"
        with pytest.raises(JobFailedError) as failed:
            job.wait(progress=False)
        assert failed.value.code == "canceled"
        assert job.report_url == f"{api.url}/v1/jobs/{job.id}/report"
        assert [j["id"] for j in sc.jobs()] == [job.id]

        sc.delete_dataset(ds["id"])
        with pytest.raises(SpotlightError) as info:
            sc.dataset(ds["id"])
        assert info.value.code == "dataset_not_found"


def test_client_api_key_is_sent_and_a_wrong_one_is_unauthorized(live: Any) -> None:
    api = live.start(api_keys="team:right-key")
    with SpotlightClient(api.url, api_key="right-key") as sc:
        assert sc.datasets() == []
    with SpotlightClient(api.url, api_key="wrong") as sc, pytest.raises(SpotlightError) as info:
        sc.datasets()
    assert info.value.code == "unauthorized" and info.value.status_code == 401


def test_client_module_imports_nothing_beyond_numpy_httpx_and_pydantic() -> None:
    """pydantic is allowed (the typed region record, spotlight/contract/records.py); settings, servers and torch are not."""
    import sys

    code = (
        "import sys; import spotlight.client; "
        "bad = [m for m in ('torch', 'fastapi', 'redis', 'rq', 'pyarrow', 'spotlight.server.settings') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_worker_side_modules_do_not_import_torch_or_fastapi() -> None:
    import sys

    code = (
        "import sys; import worker.describe, worker.report, worker.webhook, spotlight.server.jobstats; "
        "print([m for m in ('torch', 'fastapi', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # matplotlib too is imported only when a report is drawn


def test_submit_by_reference_sends_the_reference_and_params(tmp_path: Path) -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/jobs"
        bodies.append(json.loads(request.content))
        return httpx.Response(202, json={"id": "job_9", "status": "queued"}, headers={})

    with _mock(handler) as sc:
        job = sc.submit({"uri": "file:///data/x.npz"}, n_spotlights=2, callback_url="https://cb.example/x")
        with pytest.raises(ValueError):
            sc.submit(tmp_path / "missing.npz", losses=[1.0])  # refused before anything is read or sent
    assert job.id == "job_9" and repr(job) == "Job('job_9', status='queued')"
    assert bodies == [
        {
            "dataset": {"uri": "file:///data/x.npz"},
            "params": {"n_spotlights": 2},
            "callback_url": "https://cb.example/x",
        }
    ]


def test_cli_refuses_removed_and_idle_params_before_uploading() -> None:
    """`spotlight submit --param` says what the server would: a removed parameter and a setting without effect."""
    from spotlight.client.commands import CliExit, _check_params

    with pytest.raises(CliExit, match="evidence_precision was removed"):
        _check_params({"evidence_precision": "tied"})
    with pytest.raises(CliExit, match="barrier_scale would have no effect"):
        _check_params({"kernel": "ball", "barrier_scale": 2.0})
    _check_params({"kernel": "gaussian", "barrier_scale": 2.0})
