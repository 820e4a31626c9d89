"""The RQ task: one spotlight search, from a stored dataset to stored results.

It reads like the job's life: load the dataset (memory-mapped from the store) → search (the
engine, reporting progress and honouring cancellation) → describe the regions → write the
results (each file atomically, ``regions.json`` last, so its presence means "done") → say how
it ended in the job's meta.

How a job ends is always written into its meta (``protocol.META_STATUS`` + ``META_ERROR``),
and the task *returns* on every outcome it understands — canceled, bad or missing data, an
engine error, a full store, a timeout — so RQ never retries those: another run would end the
same way, and the worker goes straight on to the next job. Only what the task cannot see (its
process killed, the machine gone) is left to RQ's retry and abandoned-job handling, configured
in spotlight/jobqueue.py.

The API process never imports this module: it names it by ``protocol.TASK_PATH``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from rq import get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from spotlight.dataset_files import DatasetFiles, DatasetMissing
from spotlight.params import SearchParams
from spotlight.protocol import (
    META_STATUS,
    REGIONS_FILE,
    WEIGHTS_FILE,
    ErrorCode,
    JobError,
    JobSpec,
    JobStatus,
    job_file,
    job_prefix,
    members_file,
)
from spotlight.settings import Settings, get_settings
from spotlight.store import ArtifactStore, StoreError, store_from_settings
from worker.engine.result import SearchCanceled, SearchResult
from worker.progress import JobReporter

log = logging.getLogger("spotlight.worker.task")


class JobFailed(Exception):
    """A step could not go on; carries the contract's error code for the job's meta."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error = JobError(code=code, message=message)


@dataclass
class Inputs:
    """The arrays of one dataset, memory-mapped when the store is local."""

    files: DatasetFiles
    embeddings: np.ndarray
    losses: np.ndarray
    labels: np.ndarray | None
    predictions: np.ndarray | None
    sample_weights: np.ndarray | None


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """RQ entry point (``protocol.TASK_PATH``): the spec is a JobSpec as JSON."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_job runs inside an RQ worker; call execute() directly elsewhere")
    return execute(JobSpec.model_validate(spec), job, get_settings())


def execute(spec: JobSpec, job: Job, settings: Settings, store: ArtifactStore | None = None) -> dict[str, Any]:
    """Run one search for `job` and record how it ended. Returns a small summary (RQ keeps it)."""
    if job.get_meta(refresh=True).get(META_STATUS) == "canceled":
        return _summary(spec, "canceled")  # canceled while it waited in the queue
    reporter = JobReporter(job, settings.progress_interval_s)
    reporter.started(spec.params.n_spotlights, spec.params.steps)
    status: JobStatus = "finished"
    error: JobError | None = None
    result: SearchResult | None = None
    try:
        if reporter.cancel_requested():
            raise SearchCanceled()
        store = store or _open_store(settings)
        inputs = load_inputs(store, spec.dataset_sha256)
        result = search(inputs, spec.params, reporter)
        reporter.device(result.device)
        regions = describe_regions(result, inputs, spec, settings.member_min_weight)
        # UX hook: report.html (worker/report.py) is written here, before regions.json.
        write_results(store, spec.job_id, result, regions, settings.member_min_weight)
    except SearchCanceled:
        status, error = "canceled", JobError(code=ErrorCode.CANCELED, message="The job was canceled by its owner.")
    except JobTimeoutException:
        status, error = "failed", JobError(
            code=ErrorCode.JOB_TIMEOUT,
            message=f"The job ran past its limit of {job.timeout} s; try fewer steps, restarts or spotlights.",
        )
    except JobFailed as exc:
        status, error = "failed", exc.error
    if error is not None:
        log.warning("job %s %s: %s: %s", spec.job_id, status, error.code, error.message)
        if store is not None:
            with contextlib.suppress(Exception):
                store.delete_prefix(job_prefix(spec.job_id))  # no half-written result stays behind
    reporter.ended(status, error)
    # UX hook: the callback (worker/webhook.py) is delivered here, once the meta says how it ended.
    return _summary(spec, status, error, result)


# ----- the steps -----
def _open_store(settings: Settings) -> ArtifactStore:
    try:
        return store_from_settings(settings)
    except (StoreError, OSError, ValueError) as exc:
        raise JobFailed(ErrorCode.STORE_ERROR, f"The artifact store cannot be opened: {exc}") from exc


def load_inputs(store: ArtifactStore, sha256: str) -> Inputs:
    """Memory-map the dataset's arrays; a missing dataset and an unreadable store are told apart."""
    files = DatasetFiles(store, sha256)
    try:
        return Inputs(
            files=files,
            embeddings=files.embeddings(),
            losses=files.losses(),
            labels=files.labels(),
            predictions=files.predictions(),
            sample_weights=files.sample_weights(),
        )
    except DatasetMissing as exc:
        raise JobFailed(
            ErrorCode.DATASET_GONE, f"The job's dataset is no longer stored ({exc}); upload it again."
        ) from exc
    except (StoreError, OSError, ValueError, KeyError) as exc:
        raise JobFailed(ErrorCode.STORE_ERROR, f"The dataset could not be read from the store: {exc}") from exc


def search(inputs: Inputs, params: SearchParams, reporter: JobReporter) -> SearchResult:
    """Call the engine (imported here, in the work-horse, where choosing a CUDA device is safe)."""
    from worker.engine import search as engine_search

    try:
        return engine_search(
            inputs.embeddings,
            inputs.losses,
            params,
            labels=inputs.labels,
            predictions=inputs.predictions,
            sample_weights=inputs.sample_weights,
            progress=reporter.progress,
            should_stop=reporter.should_stop,
        )
    except (SearchCanceled, JobTimeoutException):
        raise
    except Exception as exc:  # the engine's errors become the job's, the worker lives on
        log.exception("search failed")
        raise JobFailed(ErrorCode.SEARCH_FAILED, f"The search failed: {type(exc).__name__}: {exc}") from exc


def member_indices(weights: np.ndarray, min_weight: float) -> np.ndarray:
    """Indices whose weight is at least `min_weight`, highest weight first (ties by index)."""
    idx = np.flatnonzero(weights >= min_weight)
    order = np.argsort(-weights[idx], kind="stable")
    return idx[order].astype(np.int64)


def describe_regions(
    result: SearchResult, inputs: Inputs, spec: JobSpec, min_weight: float
) -> list[dict[str, Any]]:
    """The regions as regions.json stores them.

    UX hook: worker/describe.py adds what a person reads about each region (labels, examples).
    """
    regions = []
    for k, region in enumerate(result.regions):
        entry = region.to_dict()
        entry["n_members"] = int(np.count_nonzero(result.weights[:, k] >= min_weight))
        regions.append(entry)
    return regions


def write_results(
    store: ArtifactStore, job_id: str, result: SearchResult, regions: list[dict[str, Any]], min_weight: float
) -> None:
    """weights.npy, members_<k>.npy, then regions.json last: its presence means the rest is whole."""
    weights = np.ascontiguousarray(result.weights, dtype=np.float32)
    try:
        store.save_npy(job_file(job_id, WEIGHTS_FILE), weights)
        for k in range(weights.shape[1]):
            store.save_npy(job_file(job_id, members_file(k)), member_indices(weights[:, k], min_weight))
        store.write_json(job_file(job_id, REGIONS_FILE), {"regions": regions})
    except (StoreError, OSError) as exc:
        raise JobFailed(ErrorCode.STORE_ERROR, f"The results could not be written to the store: {exc}") from exc


def _summary(
    spec: JobSpec, status: str, error: JobError | None = None, result: SearchResult | None = None
) -> dict[str, Any]:
    return {
        "job_id": spec.job_id,
        "status": status,
        "error": error.model_dump() if error else None,
        "regions": len(result.regions) if result else 0,
        "device": result.device if result else None,
        "elapsed_s": result.elapsed_s if result else None,
    }
