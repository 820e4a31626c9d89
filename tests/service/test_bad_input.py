"""Each bad input gets its own 4xx code in the contract's error JSON, and nothing is stored."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.service.conftest import LiveApi, npy_bytes, npz_bytes, parquet_bytes, toy

N, D = 20, 3


def _npz(**over: Any) -> dict[str, Any]:
    data = {k: v for k, v in toy(N, D).items() if k in ("embeddings", "losses")}
    data.update(over)
    return {"files": {"file": ("d.npz", npz_bytes(**{k: v for k, v in data.items() if v is not None}))}}


def _fields(**arrays: Any) -> dict[str, Any]:
    return {"files": {k: (f"{k}.npy", v if isinstance(v, bytes) else npy_bytes(v)) for k, v in arrays.items()}}


def _object_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        header = npy_bytes(np.zeros(0))[:0]
        with zf.open("embeddings.npy", "w", force_zip64=True) as f:
            f.write(header)
            block = b"\0" * (1 << 20)
            for _ in range(64):  # 64 MiB of zeros -> ~64 KiB compressed
                f.write(block)
        zf.writestr("losses.npy", npy_bytes(np.ones(N)))
    return buf.getvalue()


def _truncated_npz() -> bytes:
    raw = npz_bytes(**{k: v for k, v in toy(N, D).items() if k in ("embeddings", "losses")})
    return raw[: len(raw) // 2]


def _corrupt_member() -> bytes:
    raw = bytearray(
        npz_bytes(compressed=True, **{k: v for k, v in toy(200, D).items() if k in ("embeddings", "losses")})
    )
    raw[200:260] = b"\xff" * 60  # inside the first member's deflate stream
    return bytes(raw)


_emb = toy(N, D)["embeddings"]
_loss = toy(N, D)["losses"]
_nan_emb = _emb.copy()
_nan_emb[5, 1] = np.nan
_inf_loss = _loss.copy()
_inf_loss[3] = np.inf

CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("nan embeddings", _npz(embeddings=_nan_emb), 400, "non_finite_values"),
    ("inf losses", _npz(losses=_inf_loss), 400, "non_finite_values"),
    ("float64 beyond float32", _npz(embeddings=_emb.astype(np.float64) * 1e300), 400, "non_finite_values"),
    (
        "nan in json",
        {"content": b'{"embeddings": [[1, NaN]], "losses": [1]}', "headers": {"content-type": "application/json"}},
        400,
        "non_finite_values",
    ),
    ("losses length", _npz(losses=_loss[:-1]), 400, "shape_mismatch"),
    ("labels length", _npz(labels=np.zeros(N + 1, dtype=int)), 400, "shape_mismatch"),
    ("predictions length", _npz(predictions=np.zeros(N - 2, dtype=int)), 400, "shape_mismatch"),
    ("ids length", {"json": {"embeddings": [[1.0], [2.0]], "losses": [1, 2], "ids": ["a"]}}, 400, "shape_mismatch"),
    (
        "metadata length",
        {"json": {"embeddings": [[1.0], [2.0]], "losses": [1, 2], "metadata": [{}]}},
        400,
        "shape_mismatch",
    ),
    ("2-d losses", _npz(losses=_loss.reshape(N, 1)), 400, "shape_mismatch"),
    ("ragged json", {"json": {"embeddings": [[1.0, 2.0], [3.0]], "losses": [1, 2]}}, 400, "shape_mismatch"),
    ("1-d embeddings", _npz(embeddings=_emb[:, 0]), 400, "validation_error"),
    ("3-d embeddings", _npz(embeddings=_emb.reshape(N, D, 1)), 400, "validation_error"),
    ("n = 0", _npz(embeddings=np.zeros((0, D)), losses=np.zeros(0)), 400, "validation_error"),
    ("d = 0", _npz(embeddings=np.zeros((N, 0))), 400, "validation_error"),
    ("json n = 0", {"json": {"embeddings": [], "losses": []}}, 400, "validation_error"),
    ("no losses", _npz(losses=None), 400, "validation_error"),
    ("logits without labels", _npz(losses=None, logits=np.zeros((N, 2))), 400, "validation_error"),
    (
        "labels outside logits",
        _npz(losses=None, logits=np.zeros((N, 2)), labels=np.full(N, 2)),
        400,
        "validation_error",
    ),
    ("fractional labels", _npz(labels=np.full(N, 0.5)), 400, "validation_error"),
    ("negative sample weights", _npz(sample_weights=-np.ones(N)), 400, "validation_error"),
    ("string embeddings", _npz(embeddings=np.array([["a"] * D] * N)), 400, "validation_error"),
    ("unknown npz key", _npz(loss=_loss), 400, "validation_error"),
    ("unknown field", _fields(embeddings=_emb, losses=_loss, extra=_loss), 400, "validation_error"),
    ("wrong json type", {"json": {"embeddings": "nope", "losses": [1]}}, 400, "validation_error"),
    (
        "metadata not objects",
        {"json": {"embeddings": [[1.0]], "losses": [1], "metadata": [3]}},
        400,
        "validation_error",
    ),
    ("object dtype npy", _fields(embeddings=_emb, losses=_object_npy()), 400, "bad_file"),
    ("truncated npy", _fields(embeddings=npy_bytes(_emb)[:-7], losses=_loss), 400, "bad_file"),
    ("not an npy", _fields(embeddings=b"hello world, not numpy", losses=_loss), 400, "bad_file"),
    ("truncated npz", {"files": {"file": ("d.npz", _truncated_npz())}}, 400, "bad_file"),
    ("corrupt npz member", {"files": {"file": ("d.npz", _corrupt_member())}}, 400, "bad_file"),
    (
        "truncated parquet",
        {
            "files": {
                "file": ("d.parquet", parquet_bytes(pa.table({"embeddings": _emb.tolist(), "losses": _loss}))[:-40])
            }
        },
        400,
        "bad_file",
    ),
    ("junk file", {"files": {"file": ("d.bin", b"\x00\x01junk" * 100)}}, 400, "bad_file"),
    ("empty file", {"files": {"file": ("d.npz", b"")}}, 400, "bad_file"),
    ("zip bomb", {"files": {"file": ("d.npz", _bomb())}}, 400, "bad_file"),
    (
        "unsupported media",
        {"content": b"embeddings=1", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    (
        "malformed json",
        {"content": b'{"embeddings": [[1,', "headers": {"content-type": "application/json"}},
        400,
        "malformed_json",
    ),
    ("reference outside roots", {"json": {"uri": "file:///etc/passwd"}}, 400, "reference_refused"),
    ("reference scheme", {"json": {"uri": "ftp://example.com/x.npz"}}, 400, "reference_refused"),
    ("reference missing", {"json": {"uri": "REFS/missing.npz"}}, 400, "reference_unreadable"),
    ("reference escape", {"json": {"uri": "REFS/../outside.npz"}}, 400, "reference_refused"),
]


def _resolve(kwargs: dict[str, Any], api: LiveApi) -> dict[str, Any]:
    if "json" in kwargs and isinstance(kwargs["json"], dict) and str(kwargs["json"].get("uri", "")).startswith("REFS"):
        rel = kwargs["json"]["uri"][len("REFS/") :]
        return {"json": {"uri": "file://" + str(api.refs_dir) + "/" + rel}}
    return kwargs


@pytest.mark.parametrize(("name", "kwargs", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_dataset_is_refused_and_nothing_is_stored(
    shared_api: LiveApi, name: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    api = shared_api
    (api.refs_dir.parent / "outside.npz").write_bytes(npz_bytes(embeddings=_emb, losses=_loss))
    with api.client() as c:
        r = c.post("/v1/datasets", **_resolve(kwargs, api))
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["code"] == code, err
        assert err["message"] and isinstance(err["details"], dict)
        assert c.get("/v1/datasets").json()["total"] == 0
        assert c.get("/healthz").status_code == 200
    assert api.stored_datasets() == []
    assert api.leftovers() == []


def test_symlink_out_of_the_roots_is_refused(api: LiveApi) -> None:
    outside = api.refs_dir.parent / "secret.npz"
    outside.write_bytes(npz_bytes(embeddings=_emb, losses=_loss))
    (api.refs_dir / "link.npz").symlink_to(outside)
    with api.client() as c:
        r = c.post("/v1/datasets", json={"uri": (api.refs_dir / "link.npz").as_uri()})
    assert r.status_code == 400 and r.json()["error"]["code"] == "reference_refused"


def test_too_many_elements_is_413(make_api) -> None:
    api = make_api(max_elements=N * D - 1)
    with api.client() as c:
        r = c.post("/v1/datasets", **_npz())
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_elements"
    assert api.stored_datasets() == [] and api.leftovers() == []


def test_upload_over_limit_is_cut_off_while_streaming(make_api) -> None:
    limit = 256 * 1024
    api = make_api(max_upload_bytes=limit)
    big = npy_bytes(np.zeros((limit // 8, 2)))

    def chunks():  # no Content-Length: the server can only count as bytes arrive
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    boundary = "b0undary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="embeddings"; filename="e.npy"\r\n\r\n').encode()

    def body():
        yield head
        yield from chunks()
        yield f"\r\n--{boundary}--\r\n".encode()

    with api.client() as c:
        r = c.post(
            "/v1/datasets", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "payload_too_large"
        # declared too large: refused before reading
        r = c.post("/v1/datasets", files={"embeddings": ("e.npy", big)})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert api.stored_datasets() == [] and api.leftovers() == []


def test_inline_json_over_limit_is_413(make_api) -> None:
    api = make_api(max_inline_bytes=1000)
    with api.client() as c:
        r = c.post("/v1/datasets", json={"embeddings": [[0.5] * 10] * 100, "losses": [1.0] * 100})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_npz_declaring_more_than_the_limit_is_413(make_api) -> None:
    api = make_api(max_upload_bytes=1 << 20)
    raw = npz_bytes(compressed=True, embeddings=np.zeros((200_000, 2)), losses=np.zeros(200_000))
    assert len(raw) < 1 << 20
    with api.client() as c:
        r = c.post("/v1/datasets", files={"file": ("d.npz", raw)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert api.stored_datasets() == [] and api.leftovers() == []


def test_metadata_json_lines_that_are_not_json(api: LiveApi) -> None:
    with api.client() as c:
        r = c.post(
            "/v1/datasets",
            files={
                "embeddings": ("e.npy", npy_bytes(_emb)),
                "losses": ("l.npy", npy_bytes(_loss)),
                "metadata": ("m.jsonl", b"\n".join([json.dumps({"i": i}).encode() for i in range(N - 1)] + [b"{oops"])),
            },
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_file"
    assert api.stored_datasets() == [] and api.leftovers() == []
