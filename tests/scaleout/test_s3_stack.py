"""The whole service with its store on S3: an API node and a worker node (separate processes,
separate folders) against a real SeaweedFS endpoint and a real Redis. Upload, search, every
result route, an `s3://` reference, dataset deletion and result expiry all go through S3."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from spotlight.ops.redis_server import EmbeddedRedis
from tests.runtime.helpers import wait_for
from tests.scaleout.cluster import Cluster, npz_bytes, submit, upload, wait_ended
from tests.scaleout.seaweed import SeaweedS3

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(s3: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("s3stack")
    bucket = s3.make_bucket()
    with EmbeddedRedis(root / "redis") as server:
        c = Cluster(root, server.url, f"s3://{bucket}/spotlight", **s3.env(), SPOTLIGHT_ALLOWED_SCHEMES='["file","s3"]')
        c.bucket = bucket  # type: ignore[attr-defined]
        try:
            c.start_worker("worker")
            c.start_api("api")
            yield c
        finally:
            c.close()


def keys(s3: SeaweedS3, prefix: str) -> list[str]:
    """The objects under `prefix/` (SeaweedFS may briefly keep an emptied folder's own entry)."""
    fs = s3.filesystem()
    return sorted(k for k in fs.find(prefix) if k.startswith(prefix.rstrip("/") + "/"))


def test_a_search_runs_end_to_end_with_every_artifact_on_s3(cluster: Cluster, s3: SeaweedS3) -> None:
    root = f"{cluster.bucket}/spotlight"  # type: ignore[attr-defined]
    with httpx.Client(base_url=cluster.url(), timeout=30) as c:
        ds = upload(c, n=240, seed=1)
        sha = c.get(f"/v1/datasets/{ds}").json()["sha256"]
        assert f"{root}/datasets/{sha}/manifest.json" in keys(s3, f"{root}/datasets/{sha}")
        job = submit(c, ds)
        done = wait_ended(c, job)
        assert done["status"] == "finished", (done, cluster.log("worker"))

        regions = c.get(f"/v1/jobs/{job}/regions").json()["regions"]
        assert len(regions) == 2
        page = c.get(f"/v1/jobs/{job}/regions/0/members", params={"limit": 5}).json()
        assert 0 < len(page["members"]) <= 5
        by_contribution = c.get(f"/v1/jobs/{job}/regions/0/members", params={"order": "contribution"})
        assert by_contribution.status_code == 200 and by_contribution.json()["members"]
        weights = np.load(io.BytesIO(c.get(f"/v1/jobs/{job}/weights").content), allow_pickle=False)
        assert weights.shape == (240, 2) and weights.dtype == np.float32
        # the report is rendered by a follow-on job after the job finished
        report = wait_for(
            lambda: (r := c.get(f"/v1/jobs/{job}/report")).status_code == 200 and r,
            60,
            "the report",
            interval=0.2,
        )
        assert "<html" in report.text.lower()

    stored = [k.rsplit("/", 1)[-1] for k in keys(s3, f"{root}/jobs/{job}")]
    assert {"regions.json", "weights.npy", "members_0.npy", "members_1.npy", "report.html"} <= set(stored)
    # regions.json ("done") was put last of the results: only the report, rendered afterwards, is newer.
    fs = s3.filesystem()
    modified = {k.rsplit("/", 1)[-1]: fs.info(k)["LastModified"] for k in keys(s3, f"{root}/jobs/{job}")}
    assert modified["regions.json"] == max(v for k, v in modified.items() if k != "report.html")
    assert modified["report.html"] >= modified["regions.json"]
    # Every object was put whole under its final name: no temporary names anywhere in the bucket.
    assert not [k for k in keys(s3, root) if ".tmp-" in k or ".part-" in k]
    # Nothing landed on either node's disk but the worker's cache of the dataset's arrays.
    assert not (cluster.node_dir("api") / "data" / "store").exists()
    assert not (cluster.node_dir("worker") / "data" / "store").exists()
    cached = [p.name for p in (cluster.node_dir("worker") / "data" / "cache").rglob("*.npy")]
    assert "embeddings.npy" in cached and "losses.npy" in cached


def test_a_dataset_can_be_a_reference_to_an_s3_object(cluster: Cluster, s3: SeaweedS3) -> None:
    bucket = cluster.bucket  # type: ignore[attr-defined]
    s3.filesystem().pipe(f"{bucket}/incoming/run-7.npz", npz_bytes(n=150, seed=7))
    with httpx.Client(base_url=cluster.url(), timeout=30) as c:
        r = c.post("/v1/datasets", json={"uri": f"s3://{bucket}/incoming/run-7.npz"})
        assert r.status_code == 201, r.text
        assert r.json()["n"] == 150
        assert wait_ended(c, submit(c, r.json()["id"]))["status"] == "finished"

        missing = c.post("/v1/datasets", json={"uri": f"s3://{bucket}/incoming/nothing.npz"})
        assert missing.status_code == 400
        assert missing.json()["error"]["code"] == "reference_unreadable"


def test_deleting_a_dataset_deletes_its_objects(cluster: Cluster, s3: SeaweedS3) -> None:
    root = f"{cluster.bucket}/spotlight"  # type: ignore[attr-defined]
    with httpx.Client(base_url=cluster.url(), timeout=30) as c:
        ds = upload(c, n=90, seed=11)
        sha = c.get(f"/v1/datasets/{ds}").json()["sha256"]
        assert keys(s3, f"{root}/datasets/{sha}")
        assert c.delete(f"/v1/datasets/{ds}").status_code == 204
        assert c.get(f"/v1/datasets/{ds}").status_code == 404
    assert keys(s3, f"{root}/datasets/{sha}") == []


def test_results_expire_from_s3(cluster: Cluster, s3: SeaweedS3) -> None:
    """An API node with a 3 s result TTL sweeps a finished job's objects and its record.
    (Runs last in this module: its sweeper also expires the jobs of the tests above.)"""
    root = f"{cluster.bucket}/spotlight"  # type: ignore[attr-defined]
    url = cluster.start_api("api-short-ttl", SPOTLIGHT_RESULT_TTL_S="3")
    with httpx.Client(base_url=url, timeout=30) as c:
        job = submit(c, upload(c, n=80, seed=3))
        assert wait_ended(c, job)["status"] == "finished"
        assert keys(s3, f"{root}/jobs/{job}")
        wait_for(lambda: not keys(s3, f"{root}/jobs/{job}"), 60, "the sweeper to delete the job's objects")
        wait_for(lambda: c.get(f"/v1/jobs/{job}").status_code == 404, 30, "the job's record to go")
    assert json.loads(json.dumps(cluster.log("api-short-ttl"))).count("Traceback") == 0
