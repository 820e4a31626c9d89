"""Nodes of a deployment as separate process trees: each API or worker has its own working
directory and its own ``SPOTLIGHT_DATA_DIR``; they share only what the cluster passes to all of
them (Redis's URL and the store's URL, plus S3 credentials). Nothing else on disk is common.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from rq.job import Job

from spotlight.ops.redis_server import free_port
from tests.runtime.helpers import spawn_logged, tail_log, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK = {"n_spotlights": 2, "steps": 30, "restarts": 1, "spotlight_size": 0.1, "device": "cpu"}
TERMINAL = ("finished", "failed", "canceled")


def npz_bytes(n: int = 200, d: int = 4, seed: int = 0, labels: bool = True) -> bytes:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    losses = (rng.random(n) + 2.0 * (emb[:, 0] > 1.0)).astype(np.float32)
    arrays: dict[str, Any] = {"embeddings": emb, "losses": losses}
    if labels:
        arrays["labels"] = rng.integers(0, 3, size=n)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class Cluster:
    """API and worker nodes against one Redis URL and one store URL."""

    def __init__(
        self, root: Path, redis_url: str, store_url: str, *, own_home: bool = False, **shared_env: str
    ) -> None:
        """`own_home`: each node also gets its own HOME (no user-level cache, such as the compiled
        CPU kernel's, shared between nodes; each worker then builds its own on its first search)."""
        self.root = Path(root)
        self.own_home = own_home
        self.redis_url = redis_url
        self.store_url = store_url
        self.shared_env = {k: str(v) for k, v in shared_env.items()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def node_dir(self, name: str) -> Path:
        return self.root / name

    def env(self, name: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTLIGHT_", "AWS_")) and k != "REDIS_URL"}
        env.update(
            {
                "REDIS_URL": self.redis_url,
                "SPOTLIGHT_STORE_URL": self.store_url,
                "SPOTLIGHT_DATA_DIR": str(self.node_dir(name) / "data"),
                "SPOTLIGHT_WORKER_HEARTBEAT_S": "1",
                "SPOTLIGHT_WORKER_LOST_AFTER_S": "2",
                "SPOTLIGHT_MAINTENANCE_INTERVAL_S": "1",
                "SPOTLIGHT_PROGRESS_INTERVAL_S": "0.2",
                "SPOTLIGHT_LOG_JSON": "false",
                "SPOTLIGHT_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(REPO_ROOT),  # the code is the image every node runs
            }
        )
        if self.own_home:
            env["HOME"] = str(self.node_dir(name) / "home")
            env["XDG_CACHE_HOME"] = str(self.node_dir(name) / "home" / ".cache")
        env.update(self.shared_env)
        env.update(extra)
        return env

    def spawn(self, name: str, argv: list[str], **extra: str) -> subprocess.Popen[bytes]:
        cwd = self.node_dir(name)
        cwd.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "spotlight.client.cli", *argv]
        proc = self.procs[name] = spawn_logged(argv, cwd / "node.log", self.env(name, **extra), cwd=cwd, mode="ab")
        return proc

    def log(self, name: str) -> str:
        return tail_log(self.node_dir(name) / "node.log")

    def url(self, name: str = "api") -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start_api(self, name: str = "api", timeout: float = 90, **extra: str) -> str:
        self.ports[name] = port = free_port()
        proc = self.spawn(name, ["api", "--host", "127.0.0.1", "--port", str(port)], **extra)

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited:\n{self.log(name)}")
            try:
                return httpx.get(self.url(name) + "/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, f"{name} to answer /readyz", interval=0.2)
        return self.url(name)

    def start_worker(self, name: str, *flags: str, **extra: str) -> subprocess.Popen[bytes]:
        return self.spawn(name, ["worker", "--name", name, *flags], **extra)

    def kill(self, name: str) -> None:
        """SIGKILL the node's whole process tree (a machine lost)."""
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

    def close(self) -> None:
        for name in list(self.procs):
            try:
                self.kill(name)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


# ----- calls -----
def upload(client: httpx.Client, **kw: Any) -> str:
    r = client.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**kw), "application/octet-stream")})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def submit(client: httpx.Client, dataset: str, params: dict[str, Any] | None = None) -> str:
    r = client.post("/v1/jobs", json={"dataset": dataset, "params": params or QUICK})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def status(client: httpx.Client, job_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_ended(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        s = status(client, job_id)
        return s if s["status"] in TERMINAL else None

    return wait_for(ended, timeout, f"job {job_id} to end", interval=0.2)


def worker_of(redis_url: str, job_id: str) -> str | None:
    """The name of the worker that last took the job, as RQ recorded it in Redis."""
    conn = redis.Redis.from_url(redis_url)
    try:
        return Job.fetch(job_id, connection=conn).worker_name
    finally:
        conn.close()


def wait_workers(redis_url: str, queue_name: str, names: set[str], timeout: float = 120) -> None:
    """Until every named worker has registered on the queue (RQ's worker registry in Redis)."""
    from rq import Queue, Worker

    conn = redis.Redis.from_url(redis_url)
    try:
        queue = Queue(queue_name, connection=conn)
        wait_for(
            lambda: names <= {w.name for w in Worker.all(queue=queue)},
            timeout,
            f"workers {sorted(names)} to register",
            interval=0.2,
        )
    finally:
        conn.close()
