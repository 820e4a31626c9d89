"""A finished job's stored results, as the result routes read them: domain errors only, no HTTP.

A job's results exist once it has finished (`Conflict` job_not_finished before), and go when they
expire (`NotFound` not_found after) or when the job's dataset is deleted (`Gone` dataset_gone: results
are rows of that dataset, and service/routers/datasets.py deletes their files too): every route that
reads them starts here.
"""

from __future__ import annotations

from typing import Any

from service.job_registry import JobRegistry
from spotlight.errors import Conflict, Gone, NotFound
from spotlight.jobstate import JobStatus, status_of
from spotlight.protocol import META_SPEC, REGIONS_FILE, ErrorCode, JobSpec, job_file
from spotlight.store import ArtifactStore


def finished_spec(jobs: JobRegistry, tenant: str, job_id: str) -> JobSpec:
    """The spec of the caller's job `job_id`, once it has finished and while its dataset exists."""
    job = jobs.fetch(tenant, job_id)
    status = status_of(job)
    if status != JobStatus.FINISHED:
        ended = {
            JobStatus.CANCELED: "it was canceled, so it has no results; submit it again to get them",
            JobStatus.FAILED: "it failed, so it has no results (GET /v1/jobs/{id} says why)",
        }
        raise Conflict(
            ErrorCode.JOB_NOT_FINISHED,
            f"The job is {status}; " + ended.get(status, "results exist once it has finished."),
            {"job": job_id, "status": status},
        )
    spec = JobSpec.model_validate(job.meta[META_SPEC])
    if not jobs.r.exists(jobs.keys.dataset(spec.dataset_id)):
        raise dataset_gone(job_id, spec)
    return spec


def dataset_gone(job_id: str, spec: JobSpec) -> Gone:
    return Gone(
        ErrorCode.DATASET_GONE,
        "The dataset this job searched has been deleted, and its results (rows, weights, report) with it.",
        {"job": job_id, "dataset": spec.dataset_id},
    )


def expired(job_id: str) -> NotFound:
    return NotFound(ErrorCode.NOT_FOUND, "The job's results are no longer stored (expired).", {"job": job_id})


def read_regions(store: ArtifactStore, job_id: str) -> dict[str, Any]:
    """The job's regions.json document ({"regions", "objective", "loss_reference"})."""
    try:
        return dict(store.read_json(job_file(job_id, REGIONS_FILE)))
    except FileNotFoundError:
        raise expired(job_id) from None
