"""Two deployments share one Redis under different SPOTLIGHT_NAMESPACEs and never see each
other's jobs: not through the API, not through the queue, not through a key of ours."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from spotlight.ops.redis_server import EmbeddedRedis
from tests.scaleout.cluster import Cluster, status, submit, upload, wait_ended, wait_workers, worker_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("shared-redis")) as server:
        yield server


def deployment(root: Path, redis_url: str, namespace: str) -> Cluster:
    return Cluster(root / namespace, redis_url, str(root / namespace / "store"), SPOTLIGHT_NAMESPACE=namespace)


def test_two_namespaces_on_one_redis_do_not_see_each_other(shared_redis: EmbeddedRedis, tmp_path: Path) -> None:
    a, b = deployment(tmp_path, shared_redis.url, "team-a"), deployment(tmp_path, shared_redis.url, "team-b")
    try:
        a.start_worker("worker-a")
        a.start_api()
        b.start_api()
        wait_workers(shared_redis.url, "team-a:spotlight", {"worker-a"})
        with httpx.Client(base_url=a.url(), timeout=30) as ca, httpx.Client(base_url=b.url(), timeout=30) as cb:
            job_b = submit(cb, upload(cb, seed=2))  # b has no worker yet
            job_a = submit(ca, upload(ca, seed=2))  # the same bytes, the same (open) tenant
            assert wait_ended(ca, job_a)["status"] == "finished"
            # a's worker was idle after its job and never took b's, which waits on b's own queue.
            assert status(cb, job_b)["status"] == "queued"
            assert ca.get(f"/v1/jobs/{job_b}").status_code == 404
            assert cb.get(f"/v1/jobs/{job_a}").status_code == 404
            assert [j["id"] for j in ca.get("/v1/jobs").json()["jobs"]] == [job_a]
            assert [j["id"] for j in cb.get("/v1/jobs").json()["jobs"]] == [job_b]

            conn = redis.Redis.from_url(shared_redis.url)
            ours = {k.decode() for k in conn.keys("*") if not k.startswith(b"rq:")}
            assert ours and all(k.startswith(("team-a:spotlight:", "team-b:spotlight:")) for k in ours), ours
            assert {k.decode() for k in conn.keys("rq:queue:*")} >= {"rq:queue:team-b:spotlight"}
            assert conn.lrange("rq:queue:team-b:spotlight", 0, -1) == [job_b.encode()]
            conn.close()

            b.start_worker("worker-b")
            assert wait_ended(cb, job_b)["status"] == "finished"
            assert (worker_of(shared_redis.url, job_a), worker_of(shared_redis.url, job_b)) == ("worker-a", "worker-b")
    finally:
        a.close()
        b.close()
