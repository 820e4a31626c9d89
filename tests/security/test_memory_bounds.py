"""Inputs are sized from their headers before they are materialised, and an inline JSON body is
walked in slices: counts that cannot match are refused before parsing, and what is parsed never
exists as one Python object per number. (Peak memory itself is measured by bench/inline_memory.py;
these tests assert the behaviour that keeps it bounded.)"""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.ingest import build_in
from service.ingest.inline_json import parse_dataset_body
from spotlight.server.settings import Settings


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url, data_dir=tmp_path, store_url=str(tmp_path / "store"), api_keys=None, api_keys_file=None
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_npz_metadata_with_the_wrong_row_count_is_refused_before_parsing(client: TestClient, monkeypatch) -> None:
    n = 10
    meta = np.array(["{}"] * 200_000)  # 200 000 rows for n = 10: refused on the header's count
    parsed: list[int] = []
    import service.ingest as ingest

    real = ingest.loads
    monkeypatch.setattr(ingest, "loads", lambda text: parsed.append(1) or real(text))
    body = _npz(embeddings=np.ones((n, 2)), losses=np.ones(n), metadata=meta)
    r = client.post("/v1/datasets", files={"file": ("d.npz", body)})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "shape_mismatch"
    assert r.json()["error"]["details"]["length"] == 200_000
    assert parsed == []


def test_npz_ids_with_the_wrong_count_are_refused_from_the_header(client: TestClient, monkeypatch) -> None:
    import sys

    build = sys.modules["service.ingest.build"]  # the package re-exports a function of that name
    loaded: list[int] = []
    real = build.load_small
    monkeypatch.setattr(build, "load_small", lambda info: loaded.append(1) or real(info))
    body = _npz(embeddings=np.ones((5, 2)), losses=np.ones(5), ids=np.arange(100_000))
    r = client.post("/v1/datasets", files={"file": ("d.npz", body)})
    assert r.status_code == 400 and r.json()["error"]["code"] == "shape_mismatch", r.text
    assert loaded == []


def test_npz_metadata_rows_are_read_and_echoed(client: TestClient) -> None:
    n = 6
    meta = np.array([json.dumps({"i": i, "note": "line\nbreak-free"}) for i in range(n)])
    pretty = np.array([json.dumps({"i": i}, indent=2) for i in range(n)])  # line breaks as whitespace
    for m in (meta, pretty):
        r = client.post(
            "/v1/datasets", files={"file": ("d.npz", _npz(embeddings=np.eye(n), losses=np.ones(n), metadata=m))}
        )
        assert r.status_code == 201, r.text
        assert "metadata" in r.json()["fields"]


def test_one_huge_metadata_string_is_refused_by_its_header(settings: Settings, tmp_path: Path) -> None:
    from service.ingest import _metadata_from_npy
    from spotlight.contract.errors import TooLarge

    path = tmp_path / "m.npy"
    np.save(path, np.array("[" + ",".join(["{}"] * 1000) + "]"))
    small = settings.model_copy(update={"max_inline_bytes": 1000})
    with pytest.raises(TooLarge) as info:
        _metadata_from_npy(str(path), 1000, str(tmp_path), small)
    assert info.value.code == "payload_too_large"


def _short_numbers_body(n: int, d: int) -> bytes:
    row = "[" + ",".join(["0"] * d) + "]"
    return ('{"embeddings": [' + ",".join([row] * n) + '], "losses": [' + ",".join(["1"] * n) + "]}").encode()


def test_an_inline_body_is_parsed_in_slices_not_as_one_object_per_number(tmp_path: Path, monkeypatch) -> None:
    """The body's Python objects at any moment are one slice's, not the whole body's: traced
    allocations stay a small multiple of the body, far below the ~32 bytes per number (16 times
    the body, for numbers written "0,") that parsing it whole costs."""
    import service.ingest.inline_json as inline

    monkeypatch.setattr(inline, "SLICE_CHARS", 1 << 16)
    n, d = 40_000, 32  # 1.3 M numbers written as "0,": 2.7 MB of JSON
    body = _short_numbers_body(n, d)
    tracemalloc.start()
    try:
        src = parse_dataset_body(body, str(tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not isinstance(src, str)
    emb = np.load(src.arrays["embeddings"])
    assert emb.shape == (n, d) and not emb.any()
    assert np.load(src.arrays["losses"]).tolist() == [1.0] * n
    # The decoded text (1 byte a character) plus one slice's objects and arrays.
    assert peak < 3 * len(body), (peak, len(body))


@pytest.mark.parametrize(
    "body,code",
    [
        (b'{"embeddings": [[1, 2], [3]], "losses": [1, 2]}', "shape_mismatch"),
        (b'{"embeddings": [[1, 2], [3, "x"]], "losses": [1, 2]}', "validation_error"),
        (b'{"embeddings": [[1, true]], "losses": [1]}', "validation_error"),
        (b'{"embeddings": [1, 2], "losses": [1, 2]}', "validation_error"),
        (b'{"embeddings": [[1]], "losses": [[1]]}', "validation_error"),
        (b'{"embeddings": [[1]], "losses": [1], "labels": [0.5]}', "validation_error"),
        (b'{"embeddings": [[1]], "losses": [1], "extra": [1]}', "validation_error"),
        (b'{"embeddings": [[1]], "losses": [1], "ids": [[1]]}', "validation_error"),
        (b'{"embeddings": [[1]], "losses": [1]', "malformed_json"),
        (b'{"embeddings": [[1]], "losses": [1,]}', "malformed_json"),
        (b'{"embeddings": [[1]] "losses": [1]}', "malformed_json"),
        (b'{"embeddings": [[1]], "losses": [1]} trailing', "malformed_json"),
        (b'{"uri": "file:///x.npz", "losses": [1]}', "validation_error"),
        (b'{"losses": [1]}', "validation_error"),
        (b"\xff\xfe", "malformed_json"),
        (b'{"embeddings": [[1], [2]], "losses": [1, 2], "labels": ["cat", 1]}', "validation_error"),
        (b'{"uri": 3}', "validation_error"),
    ],
)
def test_inline_bodies_are_checked_like_the_model(client: TestClient, body: bytes, code: str) -> None:
    r = client.post("/v1/datasets", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code, r.text


def test_class_names_are_kept_as_text_for_the_builder(tmp_path: Path) -> None:
    body = b'{"embeddings": [[1], [2], [3]], "losses": [1, 2, 3], "labels": ["cat", "dog", "cat"]}'
    src = parse_dataset_body(body, str(tmp_path))
    assert not isinstance(src, str) and hasattr(src, "arrays")
    assert np.load(src.arrays["labels"]).tolist() == ["cat", "dog", "cat"]


def test_a_reference_body_is_validated_by_its_model(tmp_path: Path) -> None:
    from service.schemas import DatasetReference

    ref = parse_dataset_body(b'{"uri": "file:///data/x.npz"}', str(tmp_path))
    assert isinstance(ref, DatasetReference) and ref.uri == "file:///data/x.npz"


def test_slices_cut_inside_rows_and_numbers_give_the_same_arrays(tmp_path: Path, monkeypatch) -> None:
    import service.ingest.inline_json as inline

    rng = np.random.default_rng(1)
    emb = rng.normal(size=(57, 5))
    losses = rng.random(57)
    labels = rng.integers(0, 3, 57)
    body = json.dumps(
        {
            "losses": losses.tolist(),
            "embeddings": emb.tolist(),
            "labels": labels.tolist(),
            "ids": [f"r{i}" for i in range(57)],
            "metadata": [{"i": i} for i in range(57)],
        },
        indent=1,
    ).encode()
    for size in (7, 13, 64, 1000, 10**6):
        monkeypatch.setattr(inline, "SLICE_CHARS", size)
        work = tmp_path / str(size)
        work.mkdir()
        src = parse_dataset_body(body, str(work))
        assert not isinstance(src, str)
        assert np.array_equal(np.load(src.arrays["embeddings"]), emb)
        assert np.array_equal(np.load(src.arrays["losses"]), losses)
        assert np.array_equal(np.load(src.arrays["labels"]), labels)
        assert src.ids == [f"r{i}" for i in range(57)]
        _, n, d = build_in(str(work), src, Settings(redis_url=None))
        assert (n, d) == (57, 5)


def test_job_bodies_are_capped_below_the_inline_limit(client: TestClient, settings: Settings) -> None:
    body = _short_numbers_body(60_000, 64)
    assert settings.max_job_body_bytes < len(body) < settings.max_inline_bytes
    r = client.post("/v1/jobs", content=b'{"dataset": ' + body + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["details"]["limit_bytes"] == settings.max_job_body_bytes
    r = client.post("/v1/datasets", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text
