"""Test helpers: a dataset written in the store layout, job specs, and real worker processes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis
from rq.job import Job

from spotlight.contract.params import SearchParams
from spotlight.contract.protocol import (
    META_STATUS,
    REPORT_TASK_PATH,
    JobSpec,
    dataset_file,
    new_job_id,
    report_job_id,
    utcnow,
)
from spotlight.server.jobqueue import enqueue_search, job_queue, report_queue
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore

from . import gate

REPO_ROOT = Path(__file__).resolve().parents[2]

# A search that takes well under a second. Tests that need a job to be running while they kill,
# cancel or time it out hold it at a gate instead of hoping it is slow (tests/runtime/gate.py).
QUICK = {"n_spotlights": 2, "steps": 30, "restarts": 2, "spotlight_size": 0.1, "device": "cpu"}


def write_dataset(
    store: ArtifactStore, n: int = 200, d: int = 4, seed: int = 0, labels: bool = True, planted: bool = True
) -> str:
    """Store a synthetic dataset as the API would (protocol.py's layout) and return its sha256.
    `planted`: a high-loss slice (emb[:, 0] > 1); without it the losses are unrelated to place (a null)."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    losses = rng.random(n).astype(np.float32)
    if planted:
        losses[emb[:, 0] > 1.0] += 2.0  # a high-loss slice
    sha = hashlib.sha256(emb.tobytes() + losses.tobytes()).hexdigest()
    fields = ["embeddings", "losses"]
    store.save_npy(dataset_file(sha, "embeddings.npy"), emb)
    store.save_npy(dataset_file(sha, "losses.npy"), losses)
    if labels:
        store.save_npy(dataset_file(sha, "labels.npy"), rng.integers(0, 3, size=n).astype(np.int64))
        fields.append("labels")
    store.write_json(dataset_file(sha, "manifest.json"), {"n": n, "dim": d, "fields": fields, "sha256": sha})
    return sha


def make_spec(sha: str, params: dict[str, Any] | None = None, tenant: str = "t1") -> JobSpec:
    return JobSpec(
        job_id=new_job_id(),
        tenant=tenant,
        dataset_id="ds_test",
        dataset_sha256=sha,
        params=SearchParams(**(params or QUICK)),
        created_at=utcnow(),
    )


def enqueue(redis_url: str, spec: JobSpec, settings: Settings) -> Job:
    conn = redis.Redis.from_url(redis_url)
    return enqueue_search(job_queue(conn, settings), spec, settings)


def render_queued_report(settings: Settings, job_id: str, store: ArtifactStore) -> dict[str, Any]:
    """Run, in this process, the report job that finished job `job_id` queued (as a search worker would
    take it from the reports queue), and return its summary."""
    from worker.task import render_report

    conn = redis.Redis.from_url(settings.redis_url or "")
    queued = Job.fetch(report_job_id(job_id), connection=conn)
    assert queued.origin == report_queue(conn, settings).name and queued.func_name == REPORT_TASK_PATH
    return render_report(str(queued.args[0]), dict(queued.args[1]), conn, settings, store)


def worker_env(redis_url: str, store_dir: Path, **overrides: Any) -> dict[str, str]:
    """Environment of a worker subprocess: fast heartbeats so lost workers are noticed in seconds."""
    env = dict(os.environ)
    env.update(
        {
            "REDIS_URL": redis_url,
            "SPOTLIGHT_STORE_URL": str(store_dir),
            "SPOTLIGHT_DATA_DIR": str(store_dir.parent / "data"),
            "SPOTLIGHT_WORKER_HEARTBEAT_S": "1",
            "SPOTLIGHT_WORKER_LOST_AFTER_S": "2",
            "SPOTLIGHT_MAINTENANCE_INTERVAL_S": "1",
            "SPOTLIGHT_PROGRESS_INTERVAL_S": "0.1",
            "SPOTLIGHT_LOG_JSON": "false",
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def spawn_logged(
    argv: list[str], log_path: Path, env: dict[str, str], cwd: Path = REPO_ROOT, mode: str = "wb"
) -> subprocess.Popen[bytes]:
    """A process in its own session (so a test can kill its whole group), stdout and stderr to `log_path`."""
    log = log_path.open(mode)
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def run_burst_worker(
    env: dict[str, str], log: Path, *flags: str, timeout: float = 150
) -> subprocess.CompletedProcess[bytes]:
    """`spotlight worker --burst FLAGS` in a subprocess, as a deployment starts it, its output in `log`."""
    with log.open("wb") as out:
        return subprocess.run(
            [sys.executable, "-m", "spotlight.client.cli", "worker", "--burst", *flags],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )


def tail_log(log_path: Path, chars: int = 4000) -> str:
    """The end of a process's log ('' before it wrote one)."""
    return log_path.read_text(errors="replace")[-chars:] if log_path.exists() else ""


class WorkerProcs:
    """`python -m spotlight.client.cli worker` subprocesses, each in its own session; all killed at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, held: bool = False) -> subprocess.Popen[bytes]:
        """A worker; `held=True` holds each of its searches at the test's gate (tests/runtime/gate.py)."""
        argv = (
            gate.worker_argv(name) if held else [sys.executable, "-m", "spotlight.client.cli", "worker", "--name", name]
        )
        proc = self.procs[name] = spawn_logged(argv, self.log_dir / f"{name}.log", self.env)
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait(10)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until it is truthy: for state only readable by asking (an HTTP status, a
    process table). What a test can block on (a gate, a Redis list) it blocks on instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def meta_status(job: Job) -> str | None:
    return job.get_meta(refresh=True).get(META_STATUS)
