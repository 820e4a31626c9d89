"""/metrics from Redis: job counts from RQ's registries, histograms the worker recorded, workers and devices."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from service.app import create_app
from spotlight.contract.protocol import META_STATUS
from spotlight.ops.redis_server import free_port
from spotlight.server import jobstats
from spotlight.server.keys import Keys
from spotlight.server.settings import Settings
from tests.runtime.gate import HELD_TASK_PATH, Gate

REPO_ROOT = Path(__file__).resolve().parents[2]
QUEUE = "metrics-test"
KEYS = Keys(queue=QUEUE)


def _app(redis_url: str | None, tmp_path: Path) -> TestClient:
    settings = Settings(
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        store_url=str(tmp_path / "store"),
        queue_name=QUEUE,
        log_level="WARNING",
        api_keys=None,
        api_keys_file=None,
    )
    return TestClient(create_app(settings))


def scrape(client: TestClient) -> dict[str, list[Any]]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(r.text):
        out.setdefault(family.name, []).extend(family.samples)
    return out


def value(samples: list[Any], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


@pytest.fixture
def worker_proc(redis_url: str, tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        code = textwrap.dedent(f"""
            import redis
            from rq import Queue, SimpleWorker
            conn = redis.Redis.from_url({redis_url!r})
            SimpleWorker([Queue({QUEUE!r}, connection=conn)], connection=conn, name={name!r}).work(burst=True)
        """)
        log = (tmp_path / f"{name}.log").open("wb")
        p = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def test_jobs_by_status_queue_depth_and_workers_from_redis(redis_url: str, tmp_path: Path, worker_proc: Any) -> None:
    conn = redis.Redis.from_url(redis_url)
    q = Queue(QUEUE, connection=conn)
    q.enqueue("time.sleep", 0)  # finished
    ours_failed = q.enqueue("time.sleep", 0)  # RQ says finished; our worker said failed
    ours_failed.meta[META_STATUS] = "failed"
    ours_failed.save_meta()
    q.enqueue("math.sqrt", -1)  # raises: RQ's failed registry
    canceled = q.enqueue("time.sleep", 0)
    canceled.cancel()
    running = q.enqueue(HELD_TASK_PATH)  # each runs until its gate opens (tests/runtime/gate.py)
    ending = q.enqueue(HELD_TASK_PATH)  # still RQ-started, but our worker already wrote that it ended
    ending.meta[META_STATUS] = "finished"
    ending.save_meta()
    jobstats.record_worker_device(conn, KEYS, "w-metrics", "cuda:0")
    jobstats.record_worker_device(conn, KEYS, "w-other", "cpu")
    worker_proc("w-metrics")
    worker_proc("w-other")
    for job in (running, ending):
        Gate(conn, job.id).wait_held(60)
    assert {m.decode().split(":")[0] for m in conn.zrange(q.started_job_registry.key, 0, -1)} == {running.id, ending.id}
    q.enqueue("time.sleep", 0)
    q.enqueue("time.sleep", 0)

    api1, api2 = _app(redis_url, tmp_path / "a"), _app(redis_url, tmp_path / "b")
    m = scrape(api1)
    jobs = m["spotlight_jobs"]
    assert {s.labels["status"]: s.value for s in jobs} == {
        "queued": 2,
        "running": 1,
        "finished": 2,
        "failed": 2,
        "canceled": 1,
    }
    assert value(m["spotlight_queue_depth"], "spotlight_queue_depth") == 2
    assert value(m["spotlight_redis_up"], "spotlight_redis_up") == 1
    assert value(m["spotlight_workers"], "spotlight_workers", state="busy") == 2
    info = m["spotlight_worker_info"]
    assert sorted((s.labels["worker"], s.labels["device"], s.labels["state"]) for s in info) == [
        ("w-metrics", "cuda:0", "busy"),
        ("w-other", "cpu", "busy"),
    ]
    # a second API process reads the same state
    m2 = scrape(api2)
    assert {s.labels["status"]: s.value for s in m2["spotlight_jobs"]} == {s.labels["status"]: s.value for s in jobs}
    for job in (running, ending):
        Gate(conn, job.id).open()


def test_histograms_recorded_by_workers_are_shared_by_every_api_process(redis_url: str, tmp_path: Path) -> None:
    conn = redis.Redis.from_url(redis_url)
    jobstats.record_job_end(conn, KEYS, "finished", duration_s=0.3, queue_wait_s=0.02)
    jobstats.record_job_end(conn, KEYS, "finished", duration_s=45.0, queue_wait_s=3.0)
    jobstats.record_job_end(conn, KEYS, "failed", duration_s=7.0, queue_wait_s=None)
    jobstats.record_job_end(conn, KEYS, "canceled", duration_s=float("nan"), queue_wait_s=-1.0)  # clock skew -> 0
    for api in (_app(redis_url, tmp_path / "a"), _app(redis_url, tmp_path / "b")):
        m = scrape(api)
        d = m["spotlight_job_duration_seconds"]
        assert value(d, "spotlight_job_duration_seconds_count", status="finished") == 2
        assert value(d, "spotlight_job_duration_seconds_sum", status="finished") == pytest.approx(45.3)
        assert value(d, "spotlight_job_duration_seconds_bucket", status="finished", le="0.5") == 1
        assert value(d, "spotlight_job_duration_seconds_bucket", status="finished", le="30.0") == 1
        assert value(d, "spotlight_job_duration_seconds_bucket", status="finished", le="60.0") == 2
        assert value(d, "spotlight_job_duration_seconds_bucket", status="finished", le="+Inf") == 2
        assert value(d, "spotlight_job_duration_seconds_bucket", status="failed", le="10.0") == 1
        assert value(d, "spotlight_job_duration_seconds_bucket", status="failed", le="5.0") == 0
        assert not [s for s in d if s.labels.get("status") == "canceled"]  # NaN duration not observed
        w = m["spotlight_job_queue_wait_seconds"]
        assert value(w, "spotlight_job_queue_wait_seconds_count") == 3
        assert value(w, "spotlight_job_queue_wait_seconds_bucket", le="0.05") == 2  # 0.02 and the skewed 0
        assert value(w, "spotlight_job_queue_wait_seconds_sum") == pytest.approx(3.02)
        ended = {
            s.labels["status"]: s.value for s in m["spotlight_jobs_ended"] if s.name == "spotlight_jobs_ended_total"
        }
        assert ended == {"finished": 2, "failed": 1, "canceled": 1}


def test_scrape_answers_when_redis_is_unreachable(tmp_path: Path) -> None:
    m = scrape(_app(f"redis://127.0.0.1:{free_port()}/0", tmp_path))
    assert value(m["spotlight_redis_up"], "spotlight_redis_up") == 0
    assert "spotlight_jobs" not in m


def test_metrics_route_is_wired_by_the_app_factory_and_kept_out_of_the_api_spec(tmp_path: Path) -> None:
    app = _app(None, tmp_path)
    assert "/metrics" not in app.app.openapi()["paths"]
    m = scrape(app)
    assert value(m["spotlight_redis_up"], "spotlight_redis_up") == 0
