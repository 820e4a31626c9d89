"""The `spotlight` command's small parts: openapi export, submit's argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spotlight.cli import _parse_param, _submit_files, build_parser, main


def test_openapi_prints_the_spec_and_writes_the_same_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    with pytest.raises(Exception):
        _parse_param("steps")


def test_submit_takes_two_npy_or_one_npz(tmp_path: Path) -> None:
    for name in ("e.npy", "l.npy", "lab.npy", "d.npz"):
        np.save(tmp_path / name, np.zeros(3)) if name.endswith(".npy") else np.savez(tmp_path / name, a=np.zeros(1))
    parse = build_parser().parse_args
    fields = _submit_files(parse(["submit", str(tmp_path / "e.npy"), str(tmp_path / "l.npy"), "--labels", str(tmp_path / "lab.npy")]))
    assert set(fields) == {"embeddings", "losses", "labels"}
    assert set(_submit_files(parse(["submit", str(tmp_path / "d.npz")]))) == {"file"}
    with pytest.raises(SystemExit, match="single .npz"):
        _submit_files(parse(["submit", str(tmp_path / "e.npy")]))
    with pytest.raises(SystemExit, match="no such file"):
        _submit_files(parse(["submit", str(tmp_path / "missing.npz")]))
