"""`spotlight submit` as a laptop user runs it: two .npy files in, a table of regions out, over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis

from spotlight.ops.redis_server import EmbeddedRedis

pytestmark = pytest.mark.e2e
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_submit_uploads_npy_files_waits_and_prints_the_planted_region(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    from tests.service.conftest import _Servers

    url = redis_server.url.rsplit("/", 1)[0] + "/11"
    redis.Redis.from_url(url).flushdb()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    pocket = np.linalg.norm(x - x[0], axis=1) < np.quantile(np.linalg.norm(x - x[0], axis=1), 0.05)
    losses = (rng.random(600) * 0.2 + 2.0 * pocket).astype(np.float32)
    labels = np.where(pocket, 7, rng.integers(0, 3, 600))
    np.save(tmp_path / "emb.npy", x)
    np.save(tmp_path / "loss.npy", losses)
    np.save(tmp_path / "labels.npy", labels)
    servers = _Servers(url, tmp_path)
    api = servers.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTLIGHT_")}
    env.update(
        {
            "REDIS_URL": url,
            "SPOTLIGHT_STORE_URL": str(tmp_path / "store"),
            "PYTHONPATH": str(REPO_ROOT),
            "SPOTLIGHT_LOG_JSON": "false",
            "COLUMNS": "200",
        }
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "spotlight.client.cli", "worker", "--burst"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "spotlight.client.cli",
                "submit",
                str(tmp_path / "emb.npy"),
                str(tmp_path / "loss.npy"),
                "--labels",
                str(tmp_path / "labels.npy"),
                "--server",
                api.url,
                "--wait",
                "--timeout",
                "150",
                "--param",
                "n_spotlights=2",
                "--param",
                "spotlight_size=30",
                "--param",
                'device="cpu"',
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        worker.wait(60)
        servers.stop_all()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 regions" in done.stdout
    # the first region is the planted pocket: its label stands out and its lift is far above 1
    first = next(line for line in done.stdout.splitlines() if line.strip().startswith("│      0"))
    assert "label=7" in first
    cells = first.split("│")  # region, verdict, p-value, members (held out), mean loss, lift, …
    assert cells[2].strip() == "significant", first
    lift = float(cells[6])  # the held-out members' lift
    assert lift > 3, first
    # its top failing rows (by contribution; no ids were uploaded, so row numbers) are pocket rows
    assert "top failing rows" in done.stdout
    rows = [int(i) for i in cells[9].split(",")]
    assert len(rows) == 3 and all(pocket[i] for i in rows), (rows, first)
