"""A whole service on loopback, as separate processes a fault test can kill and restart.

Redis (embedded, AOF, its own folder), the API (`python -m spotlight.client.cli api`) and workers
(`python -m spotlight.client.cli worker`), sharing one store folder. Every process runs in its own
session so a kill takes its children too; `close()` kills whatever is left.
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

from spotlight.ops.redis_server import EmbeddedRedis, free_port
from tests.runtime.gate import Gate
from tests.runtime.helpers import (
    spawn_logged,
    tail_log,
    wait_for,  # noqa: F401 - re-exported for the security tests
)

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK_PARAMS = {"n_spotlights": 2, "steps": 30, "restarts": 1, "spotlight_size": 0.1, "device": "cpu"}
TERMINAL = ("finished", "failed", "canceled")


def npz_bytes(n: int = 120, d: int = 4, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    losses = (rng.random(n) + 2.0 * (emb[:, 0] > 1.0)).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, embeddings=emb, losses=losses)
    return buf.getvalue()


class Stack:
    def __init__(self, root: Path, **settings_env: Any) -> None:
        self.root = root
        self.store_dir = root / "store"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.redis = EmbeddedRedis(root / "redis")
        self.api_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.extra_env = {k: str(v) for k, v in settings_env.items()}

    # ----- environment -----
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "REDIS_URL": self.redis.url,
                "SPOTLIGHT_STORE_URL": str(self.store_dir),
                "SPOTLIGHT_DATA_DIR": str(self.root / "data"),
                "SPOTLIGHT_WORKER_HEARTBEAT_S": "1",
                "SPOTLIGHT_WORKER_LOST_AFTER_S": "2",
                "SPOTLIGHT_MAINTENANCE_INTERVAL_S": "1",
                "SPOTLIGHT_PROGRESS_INTERVAL_S": "0.2",
                "SPOTLIGHT_LOG_JSON": "false",
                "SPOTLIGHT_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(REPO_ROOT),
            }
        )
        for key in ("SPOTLIGHT_API_KEYS", "SPOTLIGHT_API_KEYS_FILE"):
            env.pop(key, None)
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, argv: list[str], module: str = "spotlight.client.cli") -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", module, *argv]
        proc = self.procs[name] = spawn_logged(argv, self.root / f"{name}.log", self.env(), mode="ab")
        return proc

    def log(self, name: str) -> str:
        return tail_log(self.root / f"{name}.log")

    # ----- processes -----
    def start_redis(self) -> None:
        self.redis.start()

    def fsync_every_write(self) -> None:
        """Make the running Redis fsync its AOF before it acknowledges a write (`appendfsync always`,
        set through Redis itself), so a test that SIGKILLs it knows what the disk holds instead of
        sleeping past the default once-a-second fsync."""
        conn = redis.Redis.from_url(self.redis.url)
        conn.config_set("appendfsync", "always")
        assert conn.config_get("appendfsync") == {"appendfsync": "always"}
        conn.close()

    def aof_bytes(self) -> bytes:
        """Everything in Redis's append-only file(s) on disk."""
        return b"".join(p.read_bytes() for p in sorted(self.redis.data_dir.rglob("appendonly*")) if p.is_file())

    def start_api(self, timeout: float = 60) -> None:
        self._spawn("api", ["api", "--host", "127.0.0.1", "--port", str(self.api_port)])

        def up() -> bool:
            if self.procs["api"].poll() is not None:
                raise AssertionError("the API exited:\n" + self.log("api"))
            try:
                return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout, "the API to answer /healthz", interval=0.1)

    def start_worker(self, name: str, held: bool = False) -> subprocess.Popen[bytes]:
        """A worker; `held=True` holds each of its searches at the test's gate (tests/runtime/gate.py)."""
        return self._spawn(name, ["worker", "--name", name], "tests.runtime.gate" if held else "spotlight.client.cli")

    def gate(self, job_id: str) -> Gate:
        return Gate(redis.Redis.from_url(self.redis.url), job_id)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(20)

    def close(self) -> None:
        for name in list(self.procs):
            try:
                self.kill(name)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.redis.kill()

    # ----- calls -----
    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    def upload(self, client: httpx.Client, seed: int = 0, n: int = 120) -> str:
        r = client.post(
            "/v1/datasets", files={"file": ("d.npz", npz_bytes(n=n, seed=seed), "application/octet-stream")}
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def submit(self, client: httpx.Client, dataset: str, params: dict[str, Any] | None = None, **kw: Any) -> str:
        r = client.post("/v1/jobs", json={"dataset": dataset, "params": params or QUICK_PARAMS}, **kw)
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    def status(self, client: httpx.Client, job_id: str) -> dict[str, Any]:
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_ended(self, client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            s = self.status(client, job_id)
            return s if s["status"] in TERMINAL else None

        try:
            return wait_for(ended, timeout, f"job {job_id} to end", interval=0.2)
        except AssertionError as exc:  # say what the workers were doing: a job that never ends is read from their logs
            logs = {p.stem: tail_log(p)[-3000:] for p in sorted(self.root.glob("w*.log"))}
            raise AssertionError(f"{exc}; last status {self.status(client, job_id)}; worker logs: {logs}") from None
