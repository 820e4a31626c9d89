"""Separate nodes: one API and two workers as separate process trees, each with its own working
directory and data folder, sharing nothing but a Redis server (on its own port) and the S3 store.
This is the deployment a cluster runs (deploy/k8s)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from spotlight.ops.redis_server import EmbeddedRedis
from tests.runtime.helpers import wait_for
from tests.scaleout.cluster import Cluster, status, submit, upload, wait_ended, wait_workers, worker_of
from tests.scaleout.seaweed import SeaweedS3

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKERS = ("node-a", "node-b")
# Slow on any CPU: many regions, many restarts over a larger matrix; the convergence test stops
# each region early, so the retry still ends in seconds on a quiet core.
SLOW = {"n_spotlights": 12, "steps": 800, "restarts": 8, "spotlight_size": 0.05, "device": "cpu"}


@pytest.fixture(scope="module")
def nodes(s3: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("nodes")
    bucket = s3.make_bucket()
    with EmbeddedRedis(root / "redis-node") as server:
        c = Cluster(root, server.url, f"s3://{bucket}/spotlight", own_home=True, **s3.env())
        try:
            for name in WORKERS:
                c.start_worker(name)
            c.start_api("api")
            wait_workers(server.url, "spotlight", set(WORKERS))
            yield c
        finally:
            c.close()


def test_ten_jobs_drain_across_both_workers(nodes: Cluster) -> None:
    with httpx.Client(base_url=nodes.url(), timeout=30) as c:
        ds = upload(c, n=300, seed=5)
        jobs = [submit(c, ds) for _ in range(10)]
        ended = [wait_ended(c, job, timeout=180) for job in jobs]
    assert [e["status"] for e in ended] == ["finished"] * 10, [e.get("error") for e in ended]
    ran_on = {job: worker_of(nodes.redis_url, job) for job in jobs}
    assert set(ran_on.values()) == set(WORKERS), ran_on  # both took work, nobody else did
    # Each worker node read the dataset through its own cache; no node has a store of its own.
    for name in WORKERS:
        assert list((nodes.node_dir(name) / "data" / "cache").rglob("embeddings.npy"))
        assert not (nodes.node_dir(name) / "data" / "store").exists()


def test_a_worker_killed_mid_job_leaves_the_job_to_the_other(nodes: Cluster) -> None:
    with httpx.Client(base_url=nodes.url(), timeout=30) as c:
        job = submit(c, upload(c, n=4000, d=16, seed=9), SLOW)
        wait_for(lambda: status(c, job)["status"] == "running", 120, "the job to start")
        victim = worker_of(nodes.redis_url, job)
        assert victim in WORKERS
        assert status(c, job)["status"] == "running", "the job ended before its worker could be killed"
        nodes.kill(victim)
        survivor = next(w for w in WORKERS if w != victim)
        done = wait_ended(c, job, timeout=300)
        assert done["status"] == "finished", (done, nodes.log(survivor))
        assert worker_of(nodes.redis_url, job) == survivor
        regions = c.get(f"/v1/jobs/{job}/regions")
        assert regions.status_code == 200 and regions.json()["regions"]
