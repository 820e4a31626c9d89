"""Webhooks leave the search worker: a finished job queues its callback on `<queue>-callbacks`, a
search-only worker never delivers it, and a callbacks-only worker — which runs without torch —
delivers it signed. Real Redis, real worker processes, a real HTTP receiver."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from rq import Queue

from spotlight.server.jobqueue import CALLBACK_TASK_PATH, callback_queue, enqueue_callback
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore
from tests.runtime.helpers import (
    enqueue,
    make_spec,
    meta_status,
    run_burst_worker,
    spawn_logged,
    tail_log,
    wait_for,
    worker_env,
    write_dataset,
)
from tests.ux.test_webhook import Receiver
from worker.webhook import SIGNATURE_HEADER, verify_signature

SECRET = "callbacks-secret"
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_callback_is_queued_and_delivered_by_a_callbacks_only_worker_without_torch(
    redis_url: str, store_dir: Path, tmp_path: Path
) -> None:
    receiver = Receiver([200])
    receiver.thread.start()
    try:
        env = worker_env(
            redis_url,
            store_dir,
            SPOTLIGHT_WEBHOOK_SECRET=SECRET,
            SPOTLIGHT_ALLOW_PRIVATE_ADDRESSES="true",
            SPOTLIGHT_ALLOWED_HOSTS='["127.0.0.1"]',
        )
        settings = Settings(redis_url=redis_url, store_url=str(store_dir))
        spec = make_spec(write_dataset(ArtifactStore(str(store_dir)), n=200)).model_copy(
            update={"callback_url": receiver.url}
        )
        job = enqueue(redis_url, spec, settings)

        # 1. a search-only worker runs the search and leaves the callback queued
        done = run_burst_worker(env, tmp_path / "search.log", "--no-callbacks")
        assert done.returncode == 0, (tmp_path / "search.log").read_text()
        assert meta_status(job) == "finished"
        queue = callback_queue(redis.Redis.from_url(redis_url), settings)
        assert queue.name == "spotlight-callbacks" and queue.count == 1
        queued = queue.jobs[0]
        assert queued.func_name == CALLBACK_TASK_PATH and queued.args[0] == receiver.url
        assert queued.timeout >= 10  # one attempt of at most 10 s per run; RQ's Retry schedules the others
        assert queued.retries_left == 4 and queued.retry_intervals == [1, 2, 4, 8]  # README: ~65 s in all
        assert receiver.requests == []  # the search-only worker has exited: nobody else could have called

        # 2. a callbacks-only worker delivers it; torch is made unimportable to prove it needs none
        no_torch = tmp_path / "no_torch" / "torch"
        no_torch.mkdir(parents=True)
        (no_torch / "__init__.py").write_text("raise ImportError('torch is not installed in this image')\n")
        env_api_image = {**env, "PYTHONPATH": f"{no_torch.parent}:{env['PYTHONPATH']}"}
        done = run_burst_worker(env_api_image, tmp_path / "callbacks.log", "--callbacks-only")
        assert done.returncode == 0, (tmp_path / "callbacks.log").read_text()
        receiver.wait_requests(1, 10)
        assert len(receiver.requests) == 1 and queue.count == 0
        req = receiver.requests[0]
        assert verify_signature(req["body"], req["headers"][SIGNATURE_HEADER], SECRET)
        body = json.loads(req["body"])
        assert body["event"] == "job.finished" and body["job"]["id"] == spec.job_id
        assert [r["index"] for r in body["regions"]] == list(range(spec.params.n_spotlights))
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_a_job_without_callback_queues_nothing_and_workers_need_a_queue(
    redis_url: str, store_dir: Path, tmp_path: Path
) -> None:
    from worker.runner import build_worker

    settings = Settings(redis_url=redis_url, store_url=str(store_dir))
    job = enqueue(redis_url, make_spec(write_dataset(ArtifactStore(str(store_dir)), n=120)), settings)
    assert run_burst_worker(worker_env(redis_url, store_dir), tmp_path / "w.log").returncode == 0
    assert meta_status(job) == "finished"
    conn = redis.Redis.from_url(redis_url)
    assert Queue("spotlight-callbacks", connection=conn).count == 0
    # the burst worker also rendered the job's report, queued on the reports queue its search workers serve
    assert Queue("spotlight-reports", connection=conn).count == 0
    assert (job.get_meta(refresh=True).get("report") or {}).get("status") == "ready"
    assert build_worker(settings, conn).queue_names() == [
        "spotlight",
        "spotlight-large",
        "spotlight-reports",
        "spotlight-callbacks",
    ]
    assert build_worker(settings, conn, callbacks=False).queue_names() == [
        "spotlight",
        "spotlight-large",
        "spotlight-reports",
    ]
    assert build_worker(settings, conn, searches=False, reports=False).queue_names() == ["spotlight-callbacks"]
    assert build_worker(settings, conn, searches=False, callbacks=False).queue_names() == ["spotlight-reports"]
    # the search lanes first; reports and callbacks only when no search waits (worker/runner.py)
    assert build_worker(settings, conn).tiers == (
        ("spotlight", "spotlight-large"),
        ("spotlight-reports", "spotlight-callbacks"),
    )
    with pytest.raises(ValueError):
        build_worker(settings, conn, searches=False, reports=False, callbacks=False)


class HangingReceiver:
    """A real HTTP endpoint that takes each request and never answers until released: a receiver that hangs."""

    def __init__(self) -> None:
        self.arrivals = 0
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                receiver.arrivals += 1
                receiver.release.wait(60)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def test_a_hanging_receiver_does_not_hold_another_tenant_s_webhook(
    redis_url: str, store_dir: Path, tmp_path: Path
) -> None:
    """Tenant a's receiver hangs; tenant b's webhook, queued right after a's, is delivered after one
    attempt at a's (its timeout), not after a's whole retry schedule: a's next attempt is scheduled
    by RQ and runs after b's delivery."""
    hanging, good = HangingReceiver(), Receiver([200])
    hanging.thread.start()
    good.thread.start()
    env = worker_env(
        redis_url,
        store_dir,
        SPOTLIGHT_ALLOW_PRIVATE_ADDRESSES="true",
        SPOTLIGHT_ALLOWED_HOSTS='["127.0.0.1"]',
        SPOTLIGHT_WEBHOOK_TIMEOUT_S="1",
    )
    settings = Settings(redis_url=redis_url, store_url=str(store_dir), webhook_timeout_s=1)
    conn = redis.Redis.from_url(redis_url)
    enqueue_callback(conn, settings, hanging.url, {"event": "job.finished", "tenant": "a"}, "job_a")
    enqueue_callback(conn, settings, good.url, {"event": "job.finished", "tenant": "b"}, "job_b")
    proc = spawn_logged(
        [sys.executable, "-m", "spotlight.client.cli", "worker", "--callbacks-only", "--name", "cb"],
        tmp_path / "cb.log",
        env,
    )
    try:
        good.wait_requests(1, 30)
        assert hanging.arrivals == 1, tail_log(tmp_path / "cb.log")  # b came before a's second attempt
        wait_for(lambda: hanging.arrivals >= 2, 30, "a's next attempt, scheduled by RQ")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        hanging.release.set()
        for server in (hanging.server, good.server):
            server.shutdown()
            server.server_close()
