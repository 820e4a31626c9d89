"""The shared dataset reader gives back exactly what was stored, and content addressing dedupes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spotlight.server.dataset_files import DatasetFiles, DatasetMissing, write_dataset
from spotlight.server.store import ArtifactStore


def test_roundtrip_with_every_field(store_dir: Path, tmp_path: Path) -> None:
    store = ArtifactStore(str(store_dir))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3))
    losses = rng.random(7)
    meta = [{"row": i, "tag": "é" * i} for i in range(7)]
    m = write_dataset(
        store,
        str(tmp_path / "w1"),
        x,
        losses,
        labels=np.arange(7) % 2,
        predictions=np.ones(7, dtype=np.int32),
        sample_weights=np.full(7, 2.0),
        ids=[f"a{i}" for i in range(7)],
        metadata=meta,
    )
    files = DatasetFiles(store, m["sha256"])
    assert files.n == 7 and files.dim == 3
    assert files.fields == ["embeddings", "losses", "labels", "predictions", "sample_weights", "ids", "metadata"]
    emb = files.embeddings()
    assert emb.dtype == np.float32 and np.allclose(emb, x.astype(np.float32))
    assert files.losses().dtype == np.float32
    assert files.labels().dtype == np.int64 and files.labels().tolist() == [0, 1, 0, 1, 0, 1, 0]
    assert files.predictions().tolist() == [1] * 7
    assert files.sample_weights().tolist() == [2.0] * 7
    assert files.ids([6, 0]) == ["a6", "a0"]
    assert files.metadata([5, 1, 5]) == [meta[5], meta[1], meta[5]]
    assert files.metadata([]) == []
    with pytest.raises(IndexError):
        files.metadata([7])


def test_optional_fields_are_none_and_same_content_same_hash(store_dir: Path, tmp_path: Path) -> None:
    store = ArtifactStore(str(store_dir))
    x = np.eye(4)
    a = write_dataset(store, str(tmp_path / "a"), x, np.arange(4.0))
    b = write_dataset(store, str(tmp_path / "b"), x.astype(np.float32), np.arange(4, dtype=np.int16))
    c = write_dataset(store, str(tmp_path / "c"), x, np.arange(4.0) + 1)
    assert a["sha256"] == b["sha256"] != c["sha256"]
    files = DatasetFiles(store, a["sha256"])
    assert files.labels() is None and files.predictions() is None and files.sample_weights() is None
    assert files.ids([0]) is None and files.metadata([0]) is None
    assert sorted(p.rsplit("/", 1)[1] for p in store.list("datasets")) == sorted({a["sha256"], c["sha256"]})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_dataset_raises(store_dir: Path) -> None:
    with pytest.raises(DatasetMissing):
        DatasetFiles(ArtifactStore(str(store_dir)), "0" * 64).manifest()
