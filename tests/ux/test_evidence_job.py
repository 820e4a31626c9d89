"""A job with text labels (the RQ task in-process, a real Redis and a temporary store): its regions
carry label evidence with the dataset's class names, and their weights are recomputed from the
stored region with the rows' labels given by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from spotlight.contract import kernel
from spotlight.contract.protocol import REGIONS_FILE, WEIGHTS_FILE, dataset_file, job_file
from spotlight.contract.records import RegionsDocument
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore
from tests.runtime.helpers import enqueue, make_spec
from worker.task import execute

NAMES = ["ant", "bee", "cat", "dog"]


@pytest.fixture
def settings(store_dir: Path, redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, store_url=str(store_dir), progress_interval_s=0.05)


def test_a_failing_class_scattered_in_embedding_space_is_one_region_named_by_class(
    settings: Settings, store_dir: Path
) -> None:
    store = ArtifactStore(str(store_dir))
    rng = np.random.default_rng(0)
    n = 1200
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    codes = rng.integers(0, len(NAMES), size=n)
    bad = codes == NAMES.index("cat")  # every cat fails, wherever it sits in embedding space
    losses = (rng.exponential(0.3, size=n) + 2.0 * bad).astype(np.float32)
    sha = hashlib.sha256(emb.tobytes() + losses.tobytes()).hexdigest()
    store.save_npy(dataset_file(sha, "embeddings.npy"), emb)
    store.save_npy(dataset_file(sha, "losses.npy"), losses)
    store.save_npy(dataset_file(sha, "labels.npy"), codes.astype(np.int64))
    store.write_json(
        dataset_file(sha, "manifest.json"),
        {"n": n, "dim": 6, "fields": ["embeddings", "losses", "labels"], "sha256": sha, "class_names": NAMES},
    )
    spec = make_spec(sha, {"device": "cpu", "steps": 300, "n_spotlights": 2, "spotlight_size": 0.05})
    summary = execute(spec, enqueue(settings.redis_url or "", spec, settings), settings, store)
    assert summary["status"] == "finished"
    doc = RegionsDocument.model_validate(store.read_json(job_file(spec.job_id, REGIONS_FILE)))
    weights = store.load_npy(job_file(spec.job_id, WEIGHTS_FILE))
    first = doc.regions[0]
    assert first.evidence is not None and first.evidence.kind == "labels" and first.evidence.class_names == NAMES
    assert average_precision_score(bad, weights[:, 0]) > 0.95  # the region is the failing class
    assert int(np.argmax(first.evidence.center)) == NAMES.index("cat")
    assert first.significant and doc.weak_spot_found  # tested on held-out cats
    text = np.asarray(NAMES, dtype=object)[codes]
    again = kernel.region_weights(emb, first, labels=text)  # by name, as other data would give them
    assert np.max(np.abs(again - weights[:, 0])) < 2e-4
    with pytest.raises(kernel.RegionSpaceError, match="labels"):
        kernel.region_weights(emb, first)
