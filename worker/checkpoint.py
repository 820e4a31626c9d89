"""A yielded search's checkpoint: the regions found so far and their kernel values, in the artifact store.

Why the store: the n x j kernel values are a big array, and big arrays never travel through Redis
(the job's meta only says how many regions are done). Why under the job's prefix
(``jobs/<id>/checkpoint/``): whatever removes a job's files — a failed or canceled run, the
owner's cancel while it waits, expiry — removes its checkpoint with them.

Layout, written in this order so that `state.json` names only a complete weights file:

- ``checkpoint/weights_<j>.npy``: float32, n x j, the partial result's kernel values;
- ``checkpoint/state.json``: the j regions (`Region.to_dict`, exact float64 round trip), the
  weights file's name, and what the checkpoint belongs to (dataset sha256, rows, parameters); for a
  search that yielded during its permutation test (all its regions found), also ``permutations``:
  the null scores so far and the shuffles' generator state (`describe.NullSoFar`); for a search that
  yielded while its regions were being described (all its regions found), ``described``: the
  descriptions done so far, in region order (a failed one is null, with its reason in
  ``description_errors``).

A checkpoint that cannot be read, or belongs to other inputs, is ignored: the search starts over,
which costs time but never gives a wrong result.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spotlight.contract.protocol import JobSpec, job_file
from spotlight.server.store import ArtifactStore, StoreError
from worker.describe import NullSoFar
from worker.engine.result import Region, SearchResult, SearchResume

log = logging.getLogger("spotlight.worker.checkpoint")

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = f"{CHECKPOINT_DIR}/state.json"


def _weights_file(done: int) -> str:
    return f"{CHECKPOINT_DIR}/weights_{done}.npy"


def _identity(spec: JobSpec, n: int) -> dict[str, object]:
    return {"dataset_sha256": spec.dataset_sha256, "n": n, "params": spec.params.model_dump(mode="json")}


def save(
    store: ArtifactStore,
    spec: JobSpec,
    partial: SearchResult,
    null: NullSoFar | None = None,
    described: Described | None = None,
) -> None:
    """Store the partial result, with `null` the permutation test so far and with `described` the
    regions' descriptions so far (raises StoreError or OSError when the store refuses it)."""
    done = len(partial.regions)
    n = int(partial.weights.shape[0])
    previous = _stored_weights_file(store, spec.job_id)
    store.save_npy(job_file(spec.job_id, _weights_file(done)), partial.weights)
    state: dict[str, object] = {
        **_identity(spec, n),
        "regions": [r.to_dict() for r in partial.regions],
        "weights": _weights_file(done),
    }
    if null is not None:
        state["permutations"] = null.to_dict()
    if described is not None:
        state["described"] = described.to_dict()
    store.write_json(job_file(spec.job_id, STATE_FILE), state)
    if previous and previous != _weights_file(done):
        with contextlib.suppress(Exception):  # an older, smaller weights file: only space
            store.fs.rm(store.full(job_file(spec.job_id, previous)))


def load(store: ArtifactStore, spec: JobSpec, n: int) -> SearchResume | None:
    """The stored checkpoint of this job, None when there is none or it does not fit its inputs."""
    try:
        state = _state_of(store, spec, n)
        if state is None:
            log.warning("job %s: its checkpoint belongs to other inputs; starting over", spec.job_id)
            return None
        if not state:
            return None
        regions = [Region.from_dict(r) for r in state["regions"]]
        weights = store.load_npy(job_file(spec.job_id, str(state["weights"])), mmap=False)
    except (StoreError, OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("job %s: its checkpoint cannot be read (%s); starting over", spec.job_id, exc)
        return None
    if weights.shape != (n, len(regions)) or len(regions) > spec.params.n_spotlights:
        log.warning("job %s: its checkpoint has weights of shape %s; starting over", spec.job_id, weights.shape)
        return None
    return SearchResume(regions=regions, weights=weights)


def load_null(store: ArtifactStore, spec: JobSpec, n: int) -> NullSoFar | None:
    """The permutation test so far of this job's checkpoint; None when there is none (the search
    yielded between regions, or never), it does not fit its inputs, or it cannot be read."""
    try:
        state = _state_of(store, spec, n)
        if not state:
            return None
        raw = state.get("permutations")
        if raw is None or len(state["regions"]) != spec.params.n_spotlights:
            return None
        null = NullSoFar.from_dict(raw)
        np.random.default_rng(spec.params.seed).bit_generator.state = null.rng_state  # one the generator takes
    except (StoreError, OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("job %s: its permutation test so far cannot be read (%s); it starts over", spec.job_id, exc)
        return None
    if len(null.scores) > spec.params.n_permutations:
        log.warning("job %s: its checkpoint has %d null scores; the test starts over", spec.job_id, len(null.scores))
        return None
    return null


@dataclass
class Described:
    """The descriptions of regions 0..j-1 (None where describing failed, with the reason in `errors`)."""

    descriptions: list[dict[str, Any] | None] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"descriptions": self.descriptions, "errors": {str(k): v for k, v in self.errors.items()}}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Described:
        return cls(
            descriptions=list(raw["descriptions"]), errors={int(k): str(v) for k, v in raw.get("errors", {}).items()}
        )


def load_described(store: ArtifactStore, spec: JobSpec, n: int) -> Described | None:
    """The descriptions done so far of this job's checkpoint; None when there are none or they cannot be read."""
    try:
        state = _state_of(store, spec, n)
        if not state or "described" not in state or len(state["regions"]) != spec.params.n_spotlights:
            return None
        described = Described.from_dict(state["described"])
    except (StoreError, OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("job %s: its descriptions so far cannot be read (%s); describing starts over", spec.job_id, exc)
        return None
    return described if len(described.descriptions) <= spec.params.n_spotlights else None


def _state_of(store: ArtifactStore, spec: JobSpec, n: int) -> dict[str, Any] | None:
    """The job's stored checkpoint state: {} when there is none, None when it belongs to other inputs
    (another dataset, row count or parameters). Store and JSON errors propagate to the caller."""
    path = job_file(spec.job_id, STATE_FILE)
    if not store.exists(path):
        return {}
    state = store.read_json(path)
    if {k: state.get(k) for k in ("dataset_sha256", "n", "params")} != _identity(spec, n):
        return None
    return dict(state)


def clear(store: ArtifactStore, job_id: str) -> None:
    """Remove the job's checkpoint (its results, when finished, stay)."""
    with contextlib.suppress(Exception):  # a leftover checkpoint is only space; expiry removes it with the job
        store.delete_prefix(job_file(job_id, CHECKPOINT_DIR))


def _stored_weights_file(store: ArtifactStore, job_id: str) -> str | None:
    with contextlib.suppress(Exception):
        path = job_file(job_id, STATE_FILE)
        if store.exists(path):
            return str(store.read_json(path).get("weights"))
    return None
