"""A job that would not fit a worker's memory is refused at submission, with a clear 400 that names
the setting (spotlight/server/cost.py job_memory_bytes against SPOTLIGHT_WORKER_MEMORY_BYTES), instead of
being queued and then exhausting the worker's machine. Memory grows with rows x (coordinates and
regions), which the element-step cost alone did not see: a 1-dimensional dataset with many rows and
many regions is cheap in element-steps and large in memory."""

from __future__ import annotations

from pathlib import Path

from spotlight.contract.params import SearchParams
from spotlight.server.cost import WORKER_BASE_BYTES, job_memory_bytes
from tests.conftest import api_client

N, D = 400, 1
FEW = {"n_spotlights": 2, "steps": 1, "restarts": 1, "device": "cpu"}
MANY = {**FEW, "n_spotlights": 50}


def test_memory_grows_with_rows_coordinates_and_regions() -> None:
    p = SearchParams(**FEW)
    base = job_memory_bytes(p, N, D)
    assert base > WORKER_BASE_BYTES
    assert job_memory_bytes(p, 2 * N, D) - WORKER_BASE_BYTES == 2 * (base - WORKER_BASE_BYTES)
    assert job_memory_bytes(p, N, 10 * D) > base
    assert job_memory_bytes(SearchParams(**MANY), N, D) > base
    assert job_memory_bytes(p, N, D, ["labels"]) > base  # the evidence columns are coordinates too
    # the report: 4 M rows x 1 dimension, 50 regions peaked at 3.2 GB; the bound is above it
    assert job_memory_bytes(SearchParams(**MANY), 4_000_000, 1) > 3.2e9


def test_a_job_over_the_worker_memory_is_refused_at_submission(redis_url: str, tmp_path: Path) -> None:
    limit = (job_memory_bytes(SearchParams(**FEW), N, D) + job_memory_bytes(SearchParams(**MANY), N, D)) // 2
    with api_client(redis_url, tmp_path, worker_memory_bytes=limit) as client:
        r = client.post("/v1/datasets", json={"embeddings": [[float(i % 7)] for i in range(N)], "losses": [1.0] * N})
        assert r.status_code == 201, r.text
        dataset = r.json()["id"]
        r = client.post("/v1/jobs", json={"dataset": dataset, "params": MANY})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "job_too_costly"
        assert "SPOTLIGHT_WORKER_MEMORY_BYTES" in error["message"] and "memory" in error["message"]
        assert error["details"]["setting"] == "SPOTLIGHT_WORKER_MEMORY_BYTES"
        assert error["details"]["memory_bytes"] > error["details"]["limit"] == limit
        assert client.get("/v1/jobs").json()["jobs"] == []  # nothing was queued
        assert client.post("/v1/jobs", json={"dataset": dataset, "params": FEW}).status_code == 202
