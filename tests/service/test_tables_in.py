"""Data as people have it: everyday column names, text labels, DataFrames, Hugging Face exports.

Real pandas, pyarrow and `datasets` write real files; a live API (uvicorn thread, real Redis)
ingests them; the stored dataset is read back from the store.
"""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from spotlight.client import SpotlightClient, SpotlightError
from spotlight.contract import classes
from spotlight.server.dataset_files import DatasetFiles
from tests.service.conftest import LiveApi, npz_bytes, parquet_bytes

REPO_ROOT = Path(__file__).resolve().parents[2]


def _png(color: tuple[int, int, int], size: int = 300) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def _everyday(n: int = 30, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "embedding": rng.normal(size=(n, 4)).astype(np.float32),
        "loss": rng.random(n).astype(np.float32),
        "label": rng.choice(["cat", "dog", "eight"], size=n),
        "pred": rng.choice(["cat", "dog"], size=n),
        "id": [f"img-{i}" for i in range(n)],
    }


def _post_file(api: LiveApi, name: str, data: bytes, columns: dict | None = None):
    files = [("file", (name, data))]
    if columns is not None:
        files.append(("columns", (None, json.dumps(columns))))
    with api.client() as c:
        return c.post("/v1/datasets", files=files)


def test_parquet_with_everyday_names_and_text_labels(api: LiveApi) -> None:
    d = _everyday()
    table = pa.table(
        {
            "embedding": pa.array(d["embedding"].tolist(), type=pa.list_(pa.float32())),
            "loss": d["loss"],
            "label": d["label"],
            "pred": d["pred"],
            "id": d["id"],
            "site": ["north"] * 30,
        }
    )
    r = _post_file(api, "x.parquet", parquet_bytes(table))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["fields"] == ["embeddings", "losses", "labels", "predictions", "ids", "metadata"]
    files = DatasetFiles(api.store, body["sha256"])
    names = files.manifest()[classes.MANIFEST_KEY]
    assert names == ["cat", "dog", "eight"]  # one sorted vocabulary for labels and predictions
    assert [names[c] for c in files.labels()] == list(d["label"])
    assert [names[c] for c in files.predictions()] == list(d["pred"])
    assert files.ids() == d["id"]
    assert files.metadata([0]) == [{"site": "north"}]  # label/pred/id did not leak into metadata


def test_two_aliases_of_one_field_is_an_error_listing_the_columns(api: LiveApi) -> None:
    d = _everyday()
    emb = pa.array(d["embedding"].tolist(), type=pa.list_(pa.float32()))
    table = pa.table({"embedding": emb, "emb": emb, "loss": d["loss"]})
    r = _post_file(api, "x.parquet", parquet_bytes(table))
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    assert "'embedding'" in err["message"] and "'emb'" in err["message"] and "columns=" in err["message"]
    # and naming one of them settles it
    r = _post_file(api, "x.parquet", parquet_bytes(table), columns={"embeddings": "emb"})
    assert r.status_code == 201, r.text
    assert r.json()["fields"] == ["embeddings", "losses", "metadata"]  # the other one is metadata now


def test_missing_embeddings_and_missing_mapped_column_list_what_was_found(api: LiveApi) -> None:
    table = pa.table({"vec": pa.array([[1.0, 2.0]] * 3), "score": [0.1, 0.2, 0.3]})
    r = _post_file(api, "x.parquet", parquet_bytes(table))
    assert r.status_code == 400
    assert "found 'vec', 'score'" in r.json()["error"]["message"]
    r = _post_file(api, "x.parquet", parquet_bytes(table), columns={"embeddings": "vec", "losses": "los"})
    assert r.status_code == 400
    assert "'los'" in r.json()["error"]["message"] and "'score'" in r.json()["error"]["message"]
    r = _post_file(api, "x.parquet", parquet_bytes(table), columns={"embeddings": "vec", "losses": "score"})
    assert r.status_code == 201, r.text


def test_npz_aliases_and_mapping(api: LiveApi) -> None:
    rng = np.random.default_rng(1)
    x, loss = rng.normal(size=(10, 3)), rng.random(10)
    r = _post_file(api, "x.npz", npz_bytes(emb=x, loss=loss, preds=np.arange(10) % 2, label=np.arange(10) % 3))
    assert r.status_code == 201, r.text
    assert r.json()["fields"] == ["embeddings", "losses", "labels", "predictions"]
    r = _post_file(api, "x.npz", npz_bytes(emb=x, loss=loss, yhat=np.arange(10) % 2))
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "'yhat'" in msg and "found" in msg and "columns=" in msg
    r = _post_file(api, "x.npz", npz_bytes(emb=x, loss=loss, yhat=np.arange(10) % 2), columns={"predictions": "yhat"})
    assert r.status_code == 201, r.text
    assert "predictions" in r.json()["fields"]


def test_text_labels_with_integer_predictions_are_refused(api: LiveApi) -> None:
    rng = np.random.default_rng(2)
    r = _post_file(
        api,
        "x.npz",
        npz_bytes(
            embeddings=rng.normal(size=(5, 2)),
            losses=rng.random(5),
            labels=np.array(["a", "b", "a", "b", "a"]),
            predictions=np.arange(5) % 2,
        ),
    )
    assert r.status_code == 400
    assert "class names" in r.json()["error"]["message"]


def test_reference_with_columns(api: LiveApi) -> None:
    d = _everyday(n=8)
    path = api.refs_dir / "everyday.parquet"
    table = pa.table({"vector": pa.array(d["embedding"].tolist()), "err": d["loss"]})
    path.write_bytes(parquet_bytes(table))
    with api.client() as c:
        r = c.post("/v1/datasets", json={"uri": path.as_uri(), "columns": {"embeddings": "vector", "losses": "err"}})
    assert r.status_code == 201, r.text
    assert r.json()["n"] == 8


def test_hugging_face_export_classlabel_names_and_image_thumbnails(api: LiveApi, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "embedding": datasets.Sequence(datasets.Value("float32")),
            "loss": datasets.Value("float32"),
            "label": datasets.ClassLabel(names=["zero", "one", "eight"]),
            "image": datasets.Image(),
        }
    )
    big = _png((200, 10, 10), size=400)
    rows = {
        "embedding": [[float(i), 1.0] for i in range(6)],
        "loss": [0.1 * i for i in range(6)],
        "label": [0, 1, 2, 2, 1, 0],
        "image": [{"bytes": big, "path": None}] * 6,
    }
    ds = datasets.Dataset.from_dict(rows, features=features)
    path = tmp_path / "hf.parquet"
    ds.to_parquet(str(path))
    r = _post_file(api, "hf.parquet", path.read_bytes())
    assert r.status_code == 201, r.text
    files = DatasetFiles(api.store, r.json()["sha256"])
    assert files.manifest()[classes.MANIFEST_KEY] == ["zero", "one", "eight"]
    assert files.labels().tolist() == [0, 1, 2, 2, 1, 0]
    image = files.metadata([0])[0]["image"]
    assert image.startswith("data:image/") and len(image) < len(big)  # a thumbnail, not the 400 px original


def test_binary_column_that_is_not_an_image_is_not_stored_as_text(api: LiveApi) -> None:
    table = pa.table(
        {
            "embeddings": pa.array([[1.0], [2.0]]),
            "losses": [0.1, 0.2],
            "blob": pa.array([b"\x00\xff\xfe", b"\x01"], type=pa.binary()),
        }
    )
    r = _post_file(api, "x.parquet", parquet_bytes(table))
    assert r.status_code == 201, r.text
    assert DatasetFiles(api.store, r.json()["sha256"]).metadata([0, 1]) == [{"blob": None}, {"blob": None}]


# ----- the client -----
def test_client_submits_a_dataframe_with_its_own_column_names(api: LiveApi) -> None:
    pd = pytest.importorskip("pandas")
    d = _everyday(n=12)
    df = pd.DataFrame(
        {
            "embedding": list(d["embedding"]),  # a column of numpy arrays
            "loss": d["loss"],
            "target": d["label"],
            "pred": d["pred"],
            "id": d["id"],
            "score": [np.nan] + [0.5] * 11,
            "seen": pd.date_range("2024-01-01", periods=12, freq="D", tz="UTC"),
        }
    )
    with SpotlightClient(api.url) as sc:
        ds = sc.upload(df, losses="loss", labels="target")
        assert ds["fields"] == ["embeddings", "losses", "labels", "predictions", "ids", "metadata"]
        files = DatasetFiles(api.store, ds["sha256"])
        names = files.manifest()[classes.MANIFEST_KEY]
        assert [names[c] for c in files.labels()] == list(d["label"])
        first = files.metadata([0])[0]
        assert first["score"] is None and first["seen"].startswith("2024-01-01")
        # the mapping is checked before anything is sent
        with pytest.raises(ValueError, match="'nope'.*found"):
            sc.upload(df, losses="nope")
        ambiguous = df.assign(label=d["label"])
        with pytest.raises(ValueError, match="could each be the labels"):
            sc.upload(ambiguous)


def test_client_numpy_path_with_text_labels_and_messy_metadata(api: LiveApi) -> None:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    meta = [{"score": float("nan"), "when": pd.Timestamp("2024-05-01"), "n": np.int64(3)}] * 6
    with SpotlightClient(api.url) as sc:
        ds = sc.upload(rng.normal(size=(6, 2)), rng.random(6), labels=["a", "b", "a", "c", "a", "b"], metadata=meta)
    files = DatasetFiles(api.store, ds["sha256"])
    assert files.manifest()[classes.MANIFEST_KEY] == ["a", "b", "c"]
    assert files.metadata([0]) == [{"n": 3, "score": None, "when": "2024-05-01T00:00:00"}]


def test_client_submits_a_hugging_face_dataset_and_an_arrow_table(api: LiveApi) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "emb": datasets.Sequence(datasets.Value("float32")),
            "loss": datasets.Value("float32"),
            "label": datasets.ClassLabel(names=["no", "yes"]),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"emb": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], "loss": [0.1, 0.9, 0.5], "label": [1, 0, 1]}, features=features
    )
    with SpotlightClient(api.url) as sc:
        out = sc.upload(ds.select([0, 2]))  # an indices mapping, as after shuffle/filter
        files = DatasetFiles(api.store, out["sha256"])
        assert out["n"] == 2 and files.manifest()[classes.MANIFEST_KEY] == ["no", "yes"]
        assert files.losses().tolist() == pytest.approx([0.1, 0.5])
        out = sc.upload(pa.table({"embeddings": pa.array([[0.0], [1.0]]), "losses": [0.2, 0.3]}))
        assert out["n"] == 2
        with pytest.raises(TypeError, match="one split"):
            sc.upload(datasets.DatasetDict({"test": ds}))


def test_client_error_from_server_for_a_bad_table_names_the_columns(api: LiveApi) -> None:
    table = pa.table({"embeddings": pa.array([[0.0], [1.0]]), "losses": ["a", "b"]})
    with SpotlightClient(api.url) as sc, pytest.raises(SpotlightError) as info:
        sc.upload(table)
    assert info.value.code == "validation_error" and "'losses'" in info.value.message


def _imported_after(statement: str) -> list[str]:
    code = (
        f"import sys; {statement}\n"
        "heavy = {'pandas', 'pyarrow', 'datasets', 'fastapi', 'torch', 'rq', 'redis', 'starlette', 'uvicorn', "
        "'pydantic'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip())


def test_client_imports_with_numpy_httpx_and_pydantic_only() -> None:
    # pydantic: the client parses regions into the contract's typed record (spotlight/contract/records.py)
    assert _imported_after("import spotlight.client, spotlight.client.commands") == ["pydantic"]
    # the whole CLI (pydantic: SearchParams) reads no server Settings and loads no server, queue or dataframe library
    assert _imported_after("import spotlight.client.cli") == ["pydantic"]


def test_an_image_declaring_a_huge_canvas_is_skipped_unread() -> None:
    import struct
    import zlib

    from service.ingest.images import MAX_PIXELS, image_value

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    side = int(MAX_PIXELS**0.5) + 1  # a header promising more pixels than the limit, with almost no data
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    assert image_value({"bytes": bomb, "path": None}) is None
    assert image_value(_png((0, 0, 255), size=40)).startswith("data:image/")


def test_separate_npy_fields_may_use_everyday_names(api: LiveApi) -> None:
    from tests.service.conftest import npy_bytes

    rng = np.random.default_rng(4)
    with api.client() as c:
        r = c.post(
            "/v1/datasets",
            files={
                "embedding": ("e.npy", npy_bytes(rng.normal(size=(6, 2)))),
                "loss": ("l.npy", npy_bytes(rng.random(6))),
                "target": ("t.npy", npy_bytes(np.array(["a", "b"] * 3))),
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["fields"] == ["embeddings", "losses", "labels"]
        r = c.post(
            "/v1/datasets",
            files={
                "embedding": ("e.npy", npy_bytes(rng.normal(size=(6, 2)))),
                "emb": ("f.npy", npy_bytes(rng.normal(size=(6, 2)))),
                "loss": ("l.npy", npy_bytes(rng.random(6))),
            },
        )
        assert r.status_code == 400 and "could each be the embeddings" in r.json()["error"]["message"]
