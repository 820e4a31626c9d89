"""The store's remote paths (no local folder, no memory map, put instead of rename), through fsspec's
in-memory filesystem: the same code that serves s3:// without needing a server. (Real S3 against a
local object server: the deployment tests.)"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rq.job import Job

from spotlight.contract.protocol import JobSpec
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore, StoreError, store_from_settings
from tests.runtime.helpers import render_queued_report
from tests.service.conftest import LiveApi, npz_bytes, toy


@pytest.fixture
def memory_url() -> Iterator[str]:
    url = f"memory://spotlight-{secrets.token_hex(6)}"
    yield url
    import fsspec

    fs = fsspec.filesystem("memory")
    root = url.removeprefix("memory://")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_reads_and_writes_without_a_local_path(memory_url: str, tmp_path: Path) -> None:
    store = ArtifactStore(memory_url)
    assert not store.is_local and store.local_path("x.npy") is None

    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    store.save_npy("jobs/j/weights.npy", array)
    loaded = store.load_npy("jobs/j/weights.npy")
    assert not isinstance(loaded, np.memmap) and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, array)
    store.write_json("jobs/j/regions.json", {"regions": [1, 2]})
    assert store.read_json("jobs/j/regions.json") == {"regions": [1, 2]}
    assert store.exists("jobs/j/regions.json") and not store.exists("jobs/j/nothing.json")
    assert store.size("jobs/j/regions.json") == len(b'{"regions": [1, 2]}')
    assert sorted(store.list("jobs/j")) == ["jobs/j/regions.json", "jobs/j/weights.npy"]  # no temporary left
    assert store.list("jobs/none") == []

    local = tmp_path / "part.npy"
    np.save(local, np.ones(5))
    store.move_in(str(local), "datasets/abc/losses.npy")  # uploaded, then the local copy removed
    assert not local.exists() and store.load_npy("datasets/abc/losses.npy").sum() == 5

    store.check_writable()
    assert store.list(".probe") == []  # the readiness probe cleans up after itself
    store.delete_prefix("jobs/j")
    assert not store.exists("jobs/j/weights.npy") and store.list("jobs") == []
    store.delete_prefix("jobs/j")  # twice: harmless


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(memory_url: str) -> None:
    store = ArtifactStore(memory_url)
    with pytest.raises(ZeroDivisionError), store.open_write_atomic("jobs/j/regions.json") as f:
        f.write(b'{"regions": [')
        raise ZeroDivisionError  # the writer fails halfway
    assert store.list("jobs/j") == []
    with pytest.raises((OSError, StoreError)), store.open_write_atomic("jobs/j/regions.json") as f:
        f.write(b"{")
        raise OSError("disk full")  # the writer's own failure (the task catches both kinds)
    assert store.list("jobs/j") == []


def test_a_job_from_upload_to_results_on_a_remote_store(make_api, memory_url: str) -> None:
    """API ingests into the remote store, the worker's task reads it without memory maps and writes
    its results there, and the API serves them back."""
    from worker.task import execute

    api: LiveApi = make_api(store_url=memory_url)
    assert not api.store.is_local
    data = toy(80, d=3)
    data["losses"][data["embeddings"][:, 0] > 0.8] += 3.0
    with api.client() as c:
        r = c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**data))})
        assert r.status_code == 201, r.text
        ds = r.json()
        job = c.post(
            "/v1/jobs",
            json={
                "dataset": ds["id"],
                "params": {"n_spotlights": 2, "steps": 20, "spotlight_size": 0.1, "device": "cpu"},
            },
        )
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        assert not os.path.exists(memory_url.removeprefix("memory://"))  # nothing went to a local folder

        rq_job = Job.fetch(job_id, connection=api.redis)
        settings = Settings(redis_url=api.settings.redis_url, store_url=memory_url, progress_interval_s=0.05)
        summary = execute(JobSpec.model_validate(rq_job.args[0]), rq_job, settings, store_from_settings(settings))
        assert summary["status"] == "finished", summary

        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "finished"
        regions = c.get(f"/v1/jobs/{job_id}/regions").json()["regions"]
        assert [reg["index"] for reg in regions] == [0, 1]
        members = c.get(f"/v1/jobs/{job_id}/regions/0/members?limit=5").json()
        assert 0 < len(members["members"]) <= 5
        weights = c.get(f"/v1/jobs/{job_id}/weights")
        assert weights.status_code == 200
        assert np.load(io.BytesIO(weights.content)).shape == (80, 2)
        # finished with its results stored; the report is queued for a search worker, not rendered yet
        pending = c.get(f"/v1/jobs/{job_id}/report")
        assert pending.status_code == 409 and pending.json()["error"]["code"] == "report_not_ready"
        assert int(pending.headers["Retry-After"]) > 0
        assert render_queued_report(settings, job_id, store_from_settings(settings))["report"] == "ready"
        report = c.get(f"/v1/jobs/{job_id}/report")
        assert report.status_code == 200 and job_id in report.text
