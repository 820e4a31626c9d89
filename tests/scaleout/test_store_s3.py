"""The artifact store on a real S3 endpoint (SeaweedFS): whole-or-nothing writes without renames,
and the worker's bounded local cache of dataset arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spotlight.server.dataset_files import DatasetFiles, DatasetMissing, write_dataset
from spotlight.server.store import ArtifactStore, LocalCache
from tests.scaleout.seaweed import SeaweedS3


@pytest.fixture
def bucket(s3: SeaweedS3, s3_env: dict[str, str]) -> str:
    return s3.make_bucket()


def objects(s3: SeaweedS3, bucket: str) -> list[str]:
    return sorted(p[len(bucket) + 1 :] for p in s3.filesystem().find(bucket))


def test_writes_put_whole_objects_under_their_final_names(s3: SeaweedS3, bucket: str) -> None:
    store = ArtifactStore(f"s3://{bucket}/svc")
    store.write_json("jobs/j1/regions.json", {"regions": []})
    store.save_npy("jobs/j1/weights.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    assert objects(s3, bucket) == ["svc/jobs/j1/regions.json", "svc/jobs/j1/weights.npy"]  # no temporary names
    assert store.read_json("jobs/j1/regions.json") == {"regions": []}
    np.testing.assert_array_equal(store.load_npy("jobs/j1/weights.npy"), np.arange(6).reshape(3, 2))


def test_a_write_that_fails_midway_leaves_nothing_and_keeps_the_old_object(s3: SeaweedS3, bucket: str) -> None:
    store = ArtifactStore(f"s3://{bucket}/svc")
    store.write_bytes("jobs/j1/report.html", b"old")
    with pytest.raises(RuntimeError), store.open_write_atomic("jobs/j1/report.html") as f:
        f.write(b"new and half")
        raise RuntimeError("the writer died")
    with pytest.raises(RuntimeError), store.open_write_atomic("jobs/j1/other.npy") as f:
        f.write(b"x" * 1000)
        raise RuntimeError("the writer died")
    assert store.read_bytes("jobs/j1/report.html") == b"old"
    assert objects(s3, bucket) == ["svc/jobs/j1/report.html"]


def test_deleting_a_prefix_removes_every_object_under_it(s3: SeaweedS3, bucket: str) -> None:
    store = ArtifactStore(f"s3://{bucket}/svc")
    for name in ("a.json", "b.json", "sub/c.json"):
        store.write_json(f"jobs/j1/{name}", {})
    store.write_json("jobs/j2/a.json", {})
    store.delete_prefix("jobs/j1")
    assert objects(s3, bucket) == ["svc/jobs/j2/a.json"]
    assert not store.exists("jobs/j1/a.json")


def test_dataset_arrays_are_mapped_from_the_local_cache(s3: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache", max_bytes=10_000_000)
    store = ArtifactStore(f"s3://{bucket}/svc", cache=cache)
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    sha = write_dataset(store, str(tmp_path / "work"), x, np.ones(300, dtype=np.float32))["sha256"]
    emb = DatasetFiles(store, sha).embeddings()
    assert isinstance(emb, np.memmap)
    np.testing.assert_array_equal(emb, x)
    assert cache.size() > x.nbytes
    # The copy serves later jobs: the object itself is no longer read.
    s3.filesystem().rm(f"{bucket}/svc/datasets/{sha}/embeddings.npy")
    np.testing.assert_array_equal(DatasetFiles(store, sha).embeddings(), x)
    # Job results are not content-addressed and never come from the cache.
    store.save_npy("jobs/j1/weights.npy", x)
    assert not isinstance(store.load_npy("jobs/j1/weights.npy"), np.memmap)


def test_the_cache_stays_within_its_bound_evicting_the_least_recently_used(
    s3: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    one = np.zeros(250, dtype=np.float32)  # 1128 bytes as .npy
    cache = LocalCache(tmp_path / "cache", max_bytes=2 * 1128 + 500)
    store = ArtifactStore(f"s3://{bucket}/svc", cache=cache)
    for name in ("a", "b", "c"):
        store.save_npy(f"datasets/x/{name}.npy", one + ord(name))
    store.load_npy("datasets/x/a.npy", immutable=True)
    store.load_npy("datasets/x/b.npy", immutable=True)
    store.load_npy("datasets/x/a.npy", immutable=True)  # a is now the most recently used
    store.load_npy("datasets/x/c.npy", immutable=True)
    kept = sorted(p.name for _, _, p in cache.files())
    assert kept == ["a.npy", "c.npy"]
    assert cache.size() <= cache.max_bytes


def test_an_array_larger_than_the_cache_is_streamed(s3: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache", max_bytes=1000)
    store = ArtifactStore(f"s3://{bucket}/svc", cache=cache)
    big = np.arange(5000, dtype=np.float32)
    store.save_npy("datasets/x/big.npy", big)
    got = store.load_npy("datasets/x/big.npy", immutable=True)
    np.testing.assert_array_equal(got, big)
    assert not isinstance(got, np.memmap) and cache.files() == []


def test_a_missing_dataset_is_told_apart_from_a_store_fault(s3: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    store = ArtifactStore(f"s3://{bucket}/svc", cache=LocalCache(tmp_path / "cache", 10_000))
    with pytest.raises(DatasetMissing):
        DatasetFiles(store, "0" * 64).embeddings()
    store.write_json(f"datasets/{'1' * 64}/manifest.json", {"n": 1, "dim": 1, "fields": ["embeddings"]})
    with pytest.raises(DatasetMissing):
        DatasetFiles(store, "1" * 64).embeddings()
