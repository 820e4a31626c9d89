"""Webhooks leave the search worker: a finished job queues its callback on `<queue>-callbacks`, a
search-only worker never delivers it, and a callbacks-only worker — which runs without torch —
delivers it signed. Real Redis, real worker processes, a real HTTP receiver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rq import Queue

from spotlight.jobqueue import CALLBACK_TASK_PATH, callback_queue
from spotlight.settings import Settings
from spotlight.store import ArtifactStore
from tests.runtime.helpers import (
    REPO_ROOT,
    enqueue,
    make_spec,
    meta_status,
    worker_env,
    write_dataset,
)
from tests.ux.test_webhook import Receiver
from worker.webhook import SIGNATURE_HEADER, verify_signature

SECRET = "callbacks-secret"
pytestmark = pytest.mark.timeout(180)


def _worker(env: dict[str, str], log: Path, *flags: str) -> subprocess.CompletedProcess[bytes]:
    with log.open("wb") as out:
        return subprocess.run(
            [sys.executable, "-m", "spotlight.cli", "worker", "--burst", *flags],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=150,
        )


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
        done = _worker(env, tmp_path / "search.log", "--no-callbacks")
        assert done.returncode == 0, (tmp_path / "search.log").read_text()
        assert meta_status(job) == "finished"
        queue = callback_queue(redis.Redis.from_url(redis_url), settings)
        assert queue.name == "spotlight-callbacks" and queue.count == 1
        queued = queue.jobs[0]
        assert queued.func_name == CALLBACK_TASK_PATH and queued.args[0] == receiver.url
        assert queued.timeout >= 65  # README: a receiver that is down gets ~65 s of attempts (tests/ux/test_webhook.py)
        assert receiver.requests == []  # the search-only worker has exited: nobody else could have called

        # 2. a callbacks-only worker delivers it; torch is made unimportable to prove it needs none
        no_torch = tmp_path / "no_torch" / "torch"
        no_torch.mkdir(parents=True)
        (no_torch / "__init__.py").write_text("raise ImportError('torch is not installed in this image')\n")
        env_api_image = {**env, "PYTHONPATH": f"{no_torch.parent}:{env['PYTHONPATH']}"}
        done = _worker(env_api_image, tmp_path / "callbacks.log", "--callbacks-only")
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
    assert _worker(worker_env(redis_url, store_dir), tmp_path / "w.log").returncode == 0
    assert meta_status(job) == "finished"
    conn = redis.Redis.from_url(redis_url)
    assert Queue("spotlight-callbacks", connection=conn).count == 0
    assert build_worker(settings, conn).queue_names() == ["spotlight", "spotlight-large", "spotlight-callbacks"]
    assert build_worker(settings, conn, callbacks=False).queue_names() == ["spotlight", "spotlight-large"]
    with pytest.raises(ValueError):
        build_worker(settings, conn, searches=False, callbacks=False)
