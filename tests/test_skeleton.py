"""The shared pieces both sides import behave as the contract says."""

import numpy as np
import pytest
import redis
from pydantic import ValidationError

from spotlight.contract.jobstate import JobStatus, status_from
from spotlight.contract.params import SearchParams
from spotlight.server.store import ArtifactStore


def test_params_defaults_and_unknown_fields_rejected() -> None:
    p = SearchParams()
    assert p.n_spotlights == 5 and p.spotlight_size == 0.02
    with pytest.raises(ValidationError):
        SearchParams(nonsense=1)
    with pytest.raises(ValidationError):
        SearchParams(spotlight_size=1.5)
    with pytest.raises(ValidationError):
        SearchParams(device="tpu")
    assert SearchParams(spotlight_size=30).size_count(1000) == 30
    assert SearchParams(spotlight_size=0.1).size_count(1000) == pytest.approx(100)


def test_store_roundtrip_is_atomic(store_dir) -> None:
    store = ArtifactStore(str(store_dir))
    store.save_npy("a/x.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert store.load_npy("a/x.npy").shape == (2, 3)
    with pytest.raises(RuntimeError):
        with store.open_write_atomic("a/y.bin") as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
    assert not store.exists("a/y.bin")
    assert store.list("a") == ["a/x.npy"]


def test_embedded_redis_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("k", "v")
    assert client.get("k") == b"v"


def test_worker_status_wins_over_rq_status() -> None:
    assert status_from("started", {}) == JobStatus.RUNNING == "running"
    assert status_from("started", {"spotlight_status": "canceled"}) == JobStatus.CANCELED
    assert status_from("finished", {"spotlight_status": "failed"}) == JobStatus.FAILED
    assert status_from("stopped", {}) == JobStatus.CANCELED
    assert status_from(None, None) == JobStatus.QUEUED
