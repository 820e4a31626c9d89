"""`spotlight up` supervises its embedded Redis: killed, it is restarted on the same AOF; the API
answers 503 (never a 5xx fault or a hang) until it is back, what was stored before is still there,
and the workers serve new jobs afterwards. `up` itself keeps running."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import redis

from spotlight.ops.redis_server import free_port
from tests.runtime.helpers import REPO_ROOT, wait_for

pytestmark = pytest.mark.e2e

PARAMS = {"n_spotlights": 1, "steps": 20, "restarts": 1, "spotlight_size": 0.1, "device": "cpu"}


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "SPOTLIGHT_REDIS_URL") and not k.startswith("SPOTLIGHT_API_KEYS")
    }
    env.update(
        {
            "SPOTLIGHT_LOG_JSON": "false",
            "SPOTLIGHT_PROGRESS_INTERVAL_S": "0.1",
            "PYTHONPATH": str(REPO_ROOT),
            "SPOTLIGHT_MAINTENANCE_INTERVAL_S": "1",
            "SPOTLIGHT_WORKER_HEARTBEAT_S": "1",
        }
    )
    return env


def _cmdline(p: psutil.Process) -> str:
    """A process's command line; '' for one that has exited (a callbacks worker's RQ scheduler that
    lost Redis is a zombie until its worker's next maintenance reaps it)."""
    try:
        return " ".join(p.cmdline())
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return ""


def _redis_child(up: subprocess.Popen[bytes]) -> psutil.Process:
    found = [p for p in psutil.Process(up.pid).children(recursive=True) if "redis-server" in _cmdline(p)]
    assert len(found) == 1, found
    return found[0]


def _finished(http: httpx.Client, job_id: str) -> bool:
    return http.get(f"/v1/jobs/{job_id}").json()["status"] == "finished"


def test_a_killed_embedded_redis_is_restarted_and_the_service_recovers(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "up.log"
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spotlight.client.cli",
            "up",
            "--port",
            str(port),
            "--workers",
            "1",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=REPO_ROOT,
        env=_env(),
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            def ready() -> bool:
                try:
                    return http.get("/readyz").status_code == 200 or up.poll() is not None
                except httpx.TransportError:
                    return False

            wait_for(ready, 90, "the API to answer", interval=0.3)
            rng = np.random.default_rng(0)
            x = rng.normal(size=(200, 3)).astype(np.float32)
            buf = io.BytesIO()
            np.savez(buf, embeddings=x, losses=(rng.random(200) + (x[:, 0] > 1)).astype(np.float32))
            ds = http.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue())}).json()["id"]
            job = http.post("/v1/jobs", json={"dataset": ds, "params": PARAMS}).json()["id"]
            wait_for(lambda: _finished(http, job), 90, "the first job to finish", interval=0.2)

            old = _redis_child(up)
            port_redis = next(c.laddr.port for c in old.net_connections() if c.status == psutil.CONN_LISTEN)
            direct = redis.Redis(port=port_redis)
            direct.bgrewriteaof()  # everything so far is on disk before the crash
            wait_for(
                lambda: (
                    direct.info("persistence")["aof_rewrite_in_progress"] == 0
                    and direct.info("persistence")["aof_rewrite_scheduled"] == 0
                ),
                30,
                "the AOF rewrite",
            )
            old.kill()
            old.wait(10)

            statuses: list[int] = []

            def back() -> bool:
                try:
                    r = http.get("/v1/jobs", timeout=10)
                except httpx.TransportError:
                    return False
                statuses.append(r.status_code)
                return r.status_code == 200

            wait_for(back, 90, "the API to reach Redis again", interval=0.1)
            assert set(statuses) <= {200, 503}, statuses
            assert up.poll() is None, log_path.read_text()
            assert _redis_child(up).pid != old.pid
            # What was stored before the crash is still there.
            assert http.get(f"/v1/datasets/{ds}").status_code == 200
            assert http.get(f"/v1/jobs/{job}").json()["status"] == "finished"
            assert http.get(f"/v1/jobs/{job}/regions").status_code == 200
            # And the workers serve new jobs.
            again = http.post("/v1/jobs", json={"dataset": ds, "params": PARAMS}).json()["id"]
            wait_for(lambda: _finished(http, again), 120, "a job after the restart", interval=0.2)
            assert up.poll() is None
        assert "restarting it on its AOF" in log_path.read_text()
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            for p in psutil.Process(up.pid).children(recursive=True):
                p.kill()
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(10)
