"""`rediss://` URLs: the API and a worker reach Redis over TLS, the server's certificate checked
against a CA file named in the URL (README, Deployment: shared Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from spotlight.ops.redis_server import EmbeddedRedis
from tests.scaleout.cluster import Cluster, submit, upload, wait_ended
from tests.scaleout.tls_proxy import TLSProxy, make_certificate

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedRedis, TLSProxy, Path]]:
    root = tmp_path_factory.mktemp("tls-redis")
    cert, key = make_certificate(root)
    with EmbeddedRedis(root / "redis") as server:
        proxy = TLSProxy(cert, key, server.port).start()
        try:
            yield server, proxy, cert
        finally:
            proxy.stop()


def rediss_url(proxy: TLSProxy, cert: Path) -> str:
    return f"rediss://127.0.0.1:{proxy.port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"


def test_a_rediss_url_with_a_ca_file_reaches_redis_and_an_untrusted_one_does_not(tls_redis) -> None:  # type: ignore[no-untyped-def]
    server, proxy, cert = tls_redis
    tls = redis.Redis.from_url(rediss_url(proxy, cert))
    tls.set("over-tls", "yes")
    assert redis.Redis.from_url(server.url).get("over-tls") == b"yes"  # the same, real server
    tls.close()
    untrusted = redis.Redis.from_url(
        f"rediss://127.0.0.1:{proxy.port}/0?ssl_cert_reqs=required", socket_connect_timeout=5, socket_timeout=5
    )
    with pytest.raises(redis.ConnectionError):
        untrusted.ping()


def test_the_api_and_a_worker_run_a_job_over_tls(tls_redis, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, proxy, cert = tls_redis
    nodes = Cluster(tmp_path, rediss_url(proxy, cert), str(tmp_path / "store"))
    try:
        nodes.start_worker("worker")
        nodes.start_api()
        with httpx.Client(base_url=nodes.url(), timeout=30) as c:
            job = submit(c, upload(c, seed=4))
            done = wait_ended(c, job)
            assert done["status"] == "finished", (done, nodes.log("worker"))
            assert c.get(f"/v1/jobs/{job}/regions").status_code == 200
        assert redis.Redis.from_url(server.url).exists(f"rq:job:{job}")  # the one real server behind the TLS port
    finally:
        nodes.close()
