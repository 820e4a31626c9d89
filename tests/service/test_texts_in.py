"""The rows' texts (a `texts` field) arrive in the stored dataset from every input format: a Parquet
column named like text, an .npz key mapped with `columns`, separate .npy parts, inline JSON; the worker
reads them back by row (DatasetFiles.texts). Bad texts get a 400."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from spotlight.client import SpotlightClient
from spotlight.contract.records import RegionDescription, RegionRecord
from spotlight.server.dataset_files import DatasetFiles
from tests.records import region_record
from tests.service.conftest import LiveApi, npy_bytes, npz_bytes, parquet_bytes
from worker.describe import describe_job

TEXTS = ["a penguin colony", "", "rain on the hills", "naïve café ☕", "line\nbreak"]


def test_texts_arrive_from_parquet_npz_npy_and_json(api: LiveApi) -> None:
    rng = np.random.default_rng(0)
    emb, loss = rng.normal(size=(5, 3)).astype(np.float32), rng.random(5).astype(np.float32)
    table = pa.table(
        {
            "embedding": pa.array(emb.tolist(), type=pa.list_(pa.float32())),
            "loss": loss,
            "text": TEXTS,
            "site": ["x"] * 5,
        }
    )
    with api.client() as c:
        answers = [
            c.post("/v1/datasets", files=[("file", ("x.parquet", parquet_bytes(table)))]),
            c.post(
                "/v1/datasets",
                files=[
                    ("file", ("x.npz", npz_bytes(embeddings=emb, losses=loss, caption=np.array(TEXTS)))),
                    ("columns", (None, json.dumps({"texts": "caption"}))),
                ],
            ),
            c.post(
                "/v1/datasets",
                files={
                    "embeddings": ("e.npy", npy_bytes(emb)),
                    "losses": ("l.npy", npy_bytes(loss)),
                    "texts": ("t.json", json.dumps(TEXTS).encode()),
                },
            ),
            c.post("/v1/datasets", json={"embeddings": emb.tolist(), "losses": loss.tolist(), "texts": TEXTS}),
        ]
    for r in answers:
        assert r.status_code == 201, r.text
        assert "texts" in r.json()["fields"]
        files = DatasetFiles(api.store, r.json()["sha256"])
        assert files.texts([4, 0, 3]) == [TEXTS[4], TEXTS[0], TEXTS[3]]
    # the text column is the texts field, not metadata
    assert DatasetFiles(api.store, answers[0].json()["sha256"]).metadata([0]) == [{"site": "x"}]
    # the same content stored once, whatever the format (texts are part of the content hash)
    assert len({r.json()["sha256"] for r in answers[1:]}) == 1


def test_the_client_sends_texts_from_arrays_and_from_a_dataframe(api: LiveApi) -> None:
    import pandas as pd

    rng = np.random.default_rng(1)
    emb, loss = rng.normal(size=(5, 3)), rng.random(5)
    df = pd.DataFrame({"embedding": list(emb), "loss": loss, "review": TEXTS, "site": ["x"] * 5})
    with SpotlightClient(api.url) as sc:
        from_arrays = sc.upload(emb, loss, texts=TEXTS)
        from_table = sc.upload(df, texts="review")
    for ds in (from_arrays, from_table):
        assert DatasetFiles(api.store, ds["sha256"]).texts(range(5)) == TEXTS
    assert DatasetFiles(api.store, from_table["sha256"]).metadata([0]) == [{"site": "x"}]


def test_bad_texts_are_a_400(api: LiveApi) -> None:
    emb, loss = np.zeros((3, 2)).tolist(), [0.1, 0.2, 0.3]
    with api.client() as c:
        short = c.post("/v1/datasets", json={"embeddings": emb, "losses": loss, "texts": ["a", "b"]})
        numbers = c.post(
            "/v1/datasets",
            files={"file": ("x.npz", npz_bytes(embeddings=np.zeros((3, 2)), losses=np.ones(3), texts=np.arange(3)))},
        )
        table = pa.table({"embedding": pa.array(emb, type=pa.list_(pa.float64())), "loss": loss, "text": [1, 2, 3]})
        wrong_count = c.post(
            "/v1/datasets",
            files={"file": ("x.npz", npz_bytes(embeddings=np.zeros((3, 2)), losses=np.ones(3), texts=np.array(["a"])))},
        )
        in_parquet = c.post("/v1/datasets", files=[("file", ("x.parquet", parquet_bytes(table)))])
    assert short.status_code == 400 and "texts" in short.json()["error"]["message"]
    assert in_parquet.status_code == 400 and "texts[0] must be a string" in in_parquet.json()["error"]["message"]
    assert numbers.status_code == 400 and "texts" in numbers.json()["error"]["message"]
    assert wrong_count.status_code == 400 and wrong_count.json()["error"]["code"] == "shape_mismatch"
    assert api.stored_datasets() == []


def _region(description: dict) -> RegionRecord:
    return region_record(
        kernel="flat",
        size_requested=2.0,
        total_weight=2.0,
        n_members=2,
        effective_size=2.0,
        member_min_weight=0.0,
        description=RegionDescription.from_describe(description),
    )


def test_a_members_page_carries_each_rows_text(api: LiveApi) -> None:
    from spotlight.client.tables import member_rows
    from spotlight.contract.protocol import job_file, members_by_contribution_file, members_file

    rng = np.random.default_rng(2)
    emb, loss = rng.normal(size=(5, 3)), rng.random(5)
    with api.client() as c:
        ds = c.post("/v1/datasets", json={"embeddings": emb.tolist(), "losses": loss.tolist(), "texts": TEXTS}).json()
        job_id = c.post("/v1/jobs", json={"dataset": ds["id"], "params": {"n_spotlights": 1}}).json()["id"]
        members = np.array([3, 0], dtype=np.int64)
        for name in (members_file(0), members_by_contribution_file(0)):
            api.store.save_npy(job_file(job_id, name), members)
        api.store.save_npy(job_file(job_id, "weights.npy"), np.ones((5, 1), dtype=np.float32))
        description = describe_job([members], loss, read_texts=lambda i: [TEXTS[int(j)] for j in i], n_bootstrap=0)[0]
        description["text_terms"] = [  # as the worker writes one (this tiny set has no term shared by 3 members)
            {"term": "penguin", "score": 0.5, "precision": 1.0, "recall": 0.5, "lift": None, "lift_rows": 0}
        ]
        api.finish_with(job_id, [_region(description)])
        page = c.get(f"/v1/jobs/{job_id}/regions/0/members")
        regions = c.get(f"/v1/jobs/{job_id}/regions")
    assert regions.status_code == 200, regions.text
    got = regions.json()["regions"][0]["description"]
    assert got["in_sample_mean_loss"] == description["mean_loss"]
    assert got["text_terms"] == description["text_terms"] and got["text_terms_lift_on"] == "non_members"
    assert got["text_examples"] == [TEXTS[3], TEXTS[0]]
    assert page.status_code == 200, page.text
    assert [m["text"] for m in page.json()["members"]] == [TEXTS[3], TEXTS[0]]
    assert [r["text"] for r in member_rows(page.json()["members"])] == [TEXTS[3], TEXTS[0]]


def test_the_cli_sends_texts_beside_npy_files(api: LiveApi, tmp_path) -> None:
    from spotlight.client.cli import main
    from spotlight.client.commands import read_texts_file

    rng = np.random.default_rng(3)
    np.save(tmp_path / "e.npy", rng.normal(size=(5, 3)))
    np.save(tmp_path / "l.npy", rng.random(5))
    one_per_line = [t.replace("\n", " ") for t in TEXTS]
    (tmp_path / "t.txt").write_text("\n".join(one_per_line) + "\n", encoding="utf-8")
    (tmp_path / "t.json").write_text(json.dumps(TEXTS), encoding="utf-8")
    np.save(tmp_path / "t.npy", np.array(TEXTS))
    assert read_texts_file(tmp_path / "t.txt") == one_per_line
    assert read_texts_file(tmp_path / "t.json") == read_texts_file(tmp_path / "t.npy") == TEXTS
    args = ["submit", str(tmp_path / "e.npy"), str(tmp_path / "l.npy"), "--server", api.url]
    assert main([*args, "--texts", str(tmp_path / "t.txt")]) == 0
    (sha,) = api.stored_datasets()
    assert DatasetFiles(api.store, sha).texts(range(5)) == one_per_line
