"""The `spotlight` command's small parts: openapi export, submit's argument checks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from spotlight.client.cli import _parse_param, main


def test_openapi_prints_the_spec_and_writes_the_same_to_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["openapi"]) == 0
    printed = capsys.readouterr().out
    spec = json.loads(printed)
    assert spec["openapi"].startswith("3.") and "/v1/jobs" in spec["paths"]
    out = tmp_path / "o" / "openapi.json"
    assert main(["openapi", "--output", str(out)]) == 0
    assert out.read_text() == printed


def test_params_are_json_values_or_strings() -> None:
    assert _parse_param("steps=200") == ("steps", 200)
    assert _parse_param("spotlight_size=0.05") == ("spotlight_size", 0.05)
    assert _parse_param("kernel=flat") == ("kernel", "flat")
    with pytest.raises(argparse.ArgumentTypeError, match="key=value"):  # argparse turns it into a usage error
        _parse_param("steps")


def test_submit_refuses_wrong_file_sets_before_any_request(tmp_path: Path) -> None:
    np.save(tmp_path / "e.npy", np.zeros((3, 2)))
    np.savez(tmp_path / "d.npz", embeddings=np.zeros((3, 2)), losses=np.zeros(3))
    unreachable = ["--server", "http://127.0.0.1:9"]  # nothing listens: any request would fail differently
    with pytest.raises(SystemExit, match="single .npz"):
        main(["submit", str(tmp_path / "e.npy"), *unreachable])
    with pytest.raises(SystemExit, match="no such file"):
        main(["submit", str(tmp_path / "missing.npz"), *unreachable])
    with pytest.raises(SystemExit, match="go inside"):
        main(["submit", str(tmp_path / "d.npz"), "--labels", str(tmp_path / "e.npy"), *unreachable])
