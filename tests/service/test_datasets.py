"""Every accepted upload format stores the same canonical dataset; same content is stored once."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from spotlight.server.dataset_files import DatasetFiles
from tests.service.conftest import LiveApi, npy_bytes, npz_bytes, parquet_bytes, toy


def _files(api: LiveApi, body: dict) -> DatasetFiles:
    return DatasetFiles(api.store, body["sha256"])


def test_npz_upload_stores_canonical_arrays(api: LiveApi) -> None:
    data = toy()
    with api.client() as c:
        r = c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**data))})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("ds_") and body["n"] == 20 and body["dim"] == 3
    assert body["fields"] == ["embeddings", "losses", "labels", "predictions"]
    assert set(body) >= {"id", "n", "dim", "fields", "sha256", "created_at"}
    files = _files(api, body)
    assert np.array_equal(files.embeddings(), data["embeddings"])
    assert np.array_equal(files.labels(), data["labels"]) and files.labels().dtype == np.int64
    assert api.leftovers() == []


def test_all_formats_give_one_sha_and_one_copy(api: LiveApi) -> None:
    data = toy(n=12, d=4)
    emb = data["embeddings"]
    ids = [f"row{i}" for i in range(12)]
    meta = [{"i": i, "group": "ab"[i % 2]} for i in range(12)]
    table_list = pa.table(
        {
            "embeddings": pa.array(emb.tolist(), type=pa.list_(pa.float32(), 4)),
            "losses": data["losses"],
            "labels": data["labels"],
            "ids": ids,
            "i": [m["i"] for m in meta],
            "group": [m["group"] for m in meta],
        }
    )
    table_cols = pa.table(
        {
            **{f"emb_{j}": emb[:, j] for j in range(4)},
            "losses": data["losses"],
            "labels": data["labels"],
            "ids": ids,
            "i": [m["i"] for m in meta],
            "group": [m["group"] for m in meta],
        }
    )
    table_varlist = table_list.set_column(0, "embeddings", pa.array(emb.tolist(), type=pa.list_(pa.float32())))
    with api.client() as c:
        answers = [
            c.post("/v1/datasets", files={"file": ("a.parquet", parquet_bytes(table_list))}),
            c.post("/v1/datasets", files={"file": ("b.parquet", parquet_bytes(table_cols))}),
            c.post("/v1/datasets", files={"file": ("c.parquet", parquet_bytes(table_varlist))}),
            c.post(
                "/v1/datasets",
                files={
                    "embeddings": ("e.npy", npy_bytes(emb)),
                    "losses": ("l.npy", npy_bytes(data["losses"].astype(np.float64))),
                    "labels": ("y.npy", npy_bytes(data["labels"].astype(np.int32))),
                    "ids": ("ids.npy", npy_bytes(np.array(ids))),
                    "metadata": ("m.jsonl", "\n".join(json.dumps(m) for m in meta).encode()),
                },
            ),
            c.post(
                "/v1/datasets",
                json={
                    "embeddings": emb.tolist(),
                    "losses": data["losses"].tolist(),
                    "labels": data["labels"].tolist(),
                    "ids": ids,
                    "metadata": meta,
                },
            ),
            c.post(
                "/v1/datasets",
                files={
                    "file": (
                        "z.npz",
                        npz_bytes(
                            compressed=True,
                            embeddings=emb,
                            losses=data["losses"],
                            labels=data["labels"],
                            ids=np.array(ids),
                            metadata=np.array([json.dumps(m) for m in meta]),
                        ),
                    )
                },
            ),
        ]
    for r in answers:
        assert r.status_code == 201, r.text
    shas = {r.json()["sha256"] for r in answers}
    assert len(shas) == 1
    assert [r.json()["deduplicated"] for r in answers] == [False] + [True] * 5
    assert len({r.json()["id"] for r in answers}) == 6
    assert api.stored_datasets() == list(shas)
    files = _files(api, answers[0].json())
    assert files.fields == ["embeddings", "losses", "labels", "ids", "metadata"]
    assert files.ids([3, 0]) == ["row3", "row0"]
    assert files.metadata([5]) == [{"i": 5, "group": "b"}]


def test_reference_upload_reads_allowed_file(api: LiveApi) -> None:
    data = toy()
    path = api.refs_dir / "d.npz"
    path.write_bytes(npz_bytes(**data))
    with api.client() as c:
        r = c.post("/v1/datasets", json={"uri": path.as_uri()})
    assert r.status_code == 201, r.text
    assert np.allclose(_files(api, r.json()).losses(), data["losses"])


def test_logits_and_labels_give_cross_entropy(api: LiveApi) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(30, 4)) * 50  # large logits: a naive softmax would overflow
    labels = rng.integers(0, 4, size=30)
    with api.client() as c:
        r = c.post(
            "/v1/datasets",
            files={"file": ("d.npz", npz_bytes(embeddings=rng.normal(size=(30, 2)), logits=logits, labels=labels))},
        )
    assert r.status_code == 201, r.text
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = -(shifted[np.arange(30), labels] - np.log(np.exp(shifted).sum(axis=1)))
    losses = _files(api, r.json()).losses()
    assert np.all(np.isfinite(losses))
    assert np.allclose(losses, expected, rtol=1e-5, atol=1e-4)
    assert "losses" in r.json()["fields"] and "logits" not in r.json()["fields"]


def test_get_list_delete_and_refcounted_blob(api: LiveApi) -> None:
    data = toy()
    with api.client() as c:
        a = c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**data))}).json()
        b = c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**data))}).json()
        assert c.get(f"/v1/datasets/{a['id']}").json() == {**a, "deduplicated": False}
        listing = c.get("/v1/datasets", params={"limit": 1}).json()
        assert listing["total"] == 2 and [d["id"] for d in listing["datasets"]] == [b["id"]]
        assert c.get("/v1/datasets", params={"limit": 1, "offset": 1}).json()["datasets"][0]["id"] == a["id"]
        assert c.delete(f"/v1/datasets/{a['id']}").status_code == 204
        assert c.get(f"/v1/datasets/{a['id']}").json()["error"]["code"] == "dataset_not_found"
        assert api.stored_datasets() == [a["sha256"]]  # b still points at it
        assert c.delete(f"/v1/datasets/{b['id']}").status_code == 204
        assert api.stored_datasets() == []
        assert c.delete(f"/v1/datasets/{b['id']}").status_code == 404


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int32])
def test_embedding_dtypes_are_cast_to_float32(api: LiveApi, dtype: type) -> None:
    emb = (np.arange(12).reshape(6, 2)).astype(dtype)
    with api.client() as c:
        r = c.post(
            "/v1/datasets", files={"embeddings": ("e.npy", npy_bytes(emb)), "losses": ("l.npy", npy_bytes(np.ones(6)))}
        )
    assert r.status_code == 201, r.text
    stored = _files(api, r.json()).embeddings()
    assert stored.dtype == np.float32 and np.array_equal(stored, emb.astype(np.float32))


def test_fortran_order_npy_is_read_by_rows(api: LiveApi) -> None:
    emb = np.asfortranarray(np.random.default_rng(2).normal(size=(50, 5)))
    with api.client() as c:
        r = c.post(
            "/v1/datasets", files={"embeddings": ("e.npy", npy_bytes(emb)), "losses": ("l.npy", npy_bytes(np.ones(50)))}
        )
    assert r.status_code == 201, r.text
    assert np.allclose(_files(api, r.json()).embeddings(), emb.astype(np.float32))


def test_parquet_rows_of_unequal_length_and_metadata_nans(api: LiveApi) -> None:
    ragged = pa.table({"embeddings": pa.array([[1.0, 2.0], [3.0]]), "losses": [1.0, 2.0]})
    with_nan = pa.table(
        {
            "embeddings": pa.array([[1.0, 2.0], [3.0, 4.0]]),
            "losses": [1.0, 2.0],
            "score": [0.5, float("nan")],
            "when": pa.array([1, None]),
        }
    )
    with api.client() as c:
        r = c.post("/v1/datasets", files={"file": ("r.parquet", parquet_bytes(ragged))})
        assert r.status_code == 400 and r.json()["error"]["code"] == "shape_mismatch"
        r = c.post("/v1/datasets", files={"file": ("m.parquet", parquet_bytes(with_nan))})
    assert r.status_code == 201, r.text
    assert _files(api, r.json()).metadata([0, 1]) == [{"score": 0.5, "when": 1}, {"score": None, "when": None}]


def test_startup_sweeps_upload_folders_a_dead_process_left(make_api, tmp_path) -> None:
    import os
    import time

    ingest = tmp_path / "store" / ".ingest"
    (ingest / "old").mkdir(parents=True)
    (ingest / "old" / "part-0").write_bytes(b"half an upload")
    (ingest / "fresh").mkdir()
    past = time.time() - 7 * 3600  # nothing written in it for longer than the sweeper's idle limit
    os.utime(ingest / "old" / "part-0", (past, past))
    os.utime(ingest / "old", (past, past))
    make_api()
    assert sorted(p.name for p in ingest.iterdir()) == ["fresh"]


def test_deleting_a_dataset_frees_its_blob_while_other_contents_stay(api: LiveApi) -> None:
    """Each stored content counts its own references: another content's datasets do not keep it."""
    with api.client() as c:
        x = c.post("/v1/datasets", files={"file": ("x.npz", npz_bytes(**toy(seed=1)))}).json()
        y = c.post("/v1/datasets", files={"file": ("y.npz", npz_bytes(**toy(seed=2)))}).json()
        assert x["sha256"] != y["sha256"]
        assert sorted(api.stored_datasets()) == sorted([x["sha256"], y["sha256"]])
        assert c.delete(f"/v1/datasets/{x['id']}").status_code == 204
        assert api.stored_datasets() == [y["sha256"]]  # x's bytes are gone although y is still stored
        assert c.get(f"/v1/datasets/{y['id']}").status_code == 200
