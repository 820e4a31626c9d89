"""`spotlight up`: embedded Redis + API + worker in the foreground; a search over HTTP; a clean stop."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from spotlight.ops.redis_server import free_port

from .helpers import REPO_ROOT, wait_for

pytestmark = pytest.mark.e2e


def _env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "SPOTLIGHT_REDIS_URL") and not k.startswith("SPOTLIGHT_API_KEYS")
    }
    env.update({"SPOTLIGHT_LOG_JSON": "false", "SPOTLIGHT_PROGRESS_INTERVAL_S": "0.1", "PYTHONPATH": str(REPO_ROOT)})
    return env


def test_up_serves_a_search_and_stops_on_sigterm_leaving_no_process(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "up.log").open("wb")
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
        env=_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            def healthy() -> bool:
                try:
                    return http.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return up.poll() is not None  # stop waiting if it died

            wait_for(healthy, 90, "the API to answer", interval=0.3)
            assert up.poll() is None, (tmp_path / "up.log").read_text()

            rng = np.random.default_rng(0)
            x = rng.normal(size=(300, 4)).astype(np.float32)
            buf = io.BytesIO()
            np.savez(buf, embeddings=x, losses=(rng.random(300) + (x[:, 0] > 1)).astype(np.float32))
            ds = http.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue(), "application/octet-stream")})
            assert ds.status_code == 201, ds.text
            params = {"n_spotlights": 2, "steps": 40, "restarts": 2, "spotlight_size": 0.1, "device": "cpu"}
            job = http.post("/v1/jobs", json={"dataset": ds.json()["id"], "params": params})
            assert job.status_code == 202, job.text
            job_id = job.json()["id"]
            status = wait_for(
                lambda: (
                    (s := http.get(f"/v1/jobs/{job_id}").json())["status"] in ("finished", "failed", "canceled") and s
                ),
                60,
                "the job to end",
                interval=0.2,
            )
            assert status["status"] == "finished", status
            regions = http.get(f"/v1/jobs/{job_id}/regions").json()["regions"]
            assert len(regions) == 2
            # the report worker renders its report (the search worker runs --no-reports)
            report = wait_for(
                lambda: (r := http.get(f"/v1/jobs/{job_id}/report")).status_code != 409 and r,
                60,
                "the report",
                interval=0.2,
            )
            assert report.status_code == 200 and "<html" in report.text.lower()
            # (a running job canceled over HTTP: tests/security/test_faults.py, with the job held at a gate)

        family = psutil.Process(up.pid).children(recursive=True)
        cmdlines = [p.cmdline() for p in family]
        assert any("redis-server" in c[0] for c in cmdlines)
        assert any("api" in c for c in cmdlines)
        workers = [c for c in cmdlines if "worker" in c and "worker.cli" in c]  # started by module name
        assert {tuple(c[c.index("worker") + 1 :]) for c in workers} == {
            ("--callbacks-only",),
            ("--reports-only",),
            ("--no-callbacks", "--no-reports"),
        }  # a horse repeats its parent
        # the report worker leaves the CPU to the searches (worker/runner.py REPORT_NICENESS)
        from worker.runner import REPORT_NICENESS

        nices = {p.nice() for p in family if "--reports-only" in p.cmdline()}
        assert nices == {min(19, os.getpriority(os.PRIO_PROCESS, 0) + REPORT_NICENESS)}, nices
        assert all(p.nice() == os.getpriority(os.PRIO_PROCESS, 0) for p in family if "--no-reports" in p.cmdline())
        t0 = time.monotonic()
        up.send_signal(signal.SIGTERM)
        assert up.wait(40) == 0
        assert time.monotonic() - t0 < 30
        _, alive = psutil.wait_procs(family, timeout=10)  # every child exits, not only the parent
        left = [p.pid for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == [], f"processes left behind: {left}"
        # Open (no API keys) on loopback: said once, by the API that binds, not again by `up` itself.
        assert (tmp_path / "up.log").read_text().count("no API keys configured") == 1
    finally:
        if up.poll() is None:  # the test failed midway: take everything down
            for p in psutil.Process(up.pid).children(recursive=True):
                p.kill()
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(10)


def test_up_refuses_an_open_bind_without_keys(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spotlight.client.cli", "up", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")],
        cwd=REPO_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert b"without API keys" in proc.stderr
    assert not (tmp_path / "d" / "redis").exists()  # refused before starting anything
