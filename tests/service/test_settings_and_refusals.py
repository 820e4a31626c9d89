"""Bad settings say which variable and what form in one line; refusals name the setting that governs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.service.conftest import LiveApi

REPO_ROOT = Path(__file__).resolve().parents[2]


def _spotlight(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPOTLIGHT_")}
    return subprocess.run(
        [sys.executable, "-m", "spotlight.client.cli", "openapi", "-o", str(tmp_path / "o.json")],
        cwd=REPO_ROOT,
        env={**clean, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_a_bad_setting_is_one_line_naming_the_variable_and_the_form(tmp_path: Path) -> None:
    out = _spotlight(
        tmp_path, SPOTLIGHT_ALLOWED_ROOTS="/tmp/x", SPOTLIGHT_JOB_TIMEOUT_S="soon", SPOTLIGHT_WEBHOOK_RETRIES="many"
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr and len(lines) <= 4, out.stderr
    roots = next(line for line in lines if "SPOTLIGHT_ALLOWED_ROOTS" in line)
    assert "'/tmp/x'" in roots and "JSON list" in roots
    assert any("SPOTLIGHT_JOB_TIMEOUT_S='soon'" in line and "whole number" in line for line in lines)


def test_an_unknown_spotlight_variable_is_warned_about_with_the_likely_name(tmp_path: Path) -> None:
    out = _spotlight(tmp_path, SPOTLIGHT_ALLOWED_ROOT='["/data"]', SPOTLIGHT_SERVER="http://x")
    assert out.returncode == 0, out.stderr
    assert "SPOTLIGHT_ALLOWED_ROOT is not a setting" in out.stderr and "SPOTLIGHT_ALLOWED_ROOTS?" in out.stderr
    assert "SPOTLIGHT_SERVER" not in out.stderr  # read by the client CLI: known


def test_reference_and_callback_refusals_name_the_setting(api: LiveApi, tmp_path: Path) -> None:
    outside = tmp_path / "outside.npz"
    outside.write_bytes(b"PK")
    with api.client() as c:
        cases = [
            ({"uri": outside.as_uri()}, "SPOTLIGHT_ALLOWED_ROOTS"),
            ({"uri": "s3://bucket/key.parquet"}, "SPOTLIGHT_ALLOWED_SCHEMES"),
            ({"uri": "https://example.org/x.parquet"}, "SPOTLIGHT_ALLOWED_SCHEMES"),
        ]
        for body, setting in cases:
            r = c.post("/v1/datasets", json=body)
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert setting in err["message"] and err["details"]["setting"] == setting, err
        r = c.post("/v1/jobs", json={"dataset": "ds_x", "callback_url": "https://example.org/hook"})
        assert r.status_code == 400
        assert "SPOTLIGHT_ALLOWED_HOSTS" in r.json()["error"]["message"]
