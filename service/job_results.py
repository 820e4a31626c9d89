"""A finished job's stored results, as the result routes read them: domain errors only, no HTTP.

A job's results exist once it has finished (`Conflict` job_not_finished before), and go when they
expire (`NotFound` not_found after): every route that reads them starts here.
"""

from __future__ import annotations

from typing import Any

from service.job_registry import JobRegistry
from spotlight.errors import Conflict, NotFound
from spotlight.jobstate import JobStatus, status_of
from spotlight.protocol import META_SPEC, REGIONS_FILE, ErrorCode, JobSpec, job_file
from spotlight.store import ArtifactStore


def finished_spec(jobs: JobRegistry, tenant: str, job_id: str) -> JobSpec:
    """The spec of the caller's job `job_id`, once it has finished."""
    job = jobs.fetch(tenant, job_id)
    status = status_of(job)
    if status != JobStatus.FINISHED:
        raise Conflict(
            ErrorCode.JOB_NOT_FINISHED,
            f"The job is {status}; results exist once it has finished.",
            {"job": job_id, "status": status},
        )
    return JobSpec.model_validate(job.meta[META_SPEC])


def expired(job_id: str) -> NotFound:
    return NotFound(ErrorCode.NOT_FOUND, "The job's results are no longer stored (expired).", {"job": job_id})


def read_regions(store: ArtifactStore, job_id: str) -> dict[str, Any]:
    """The job's regions.json document ({"regions", "objective", "loss_reference"})."""
    try:
        return dict(store.read_json(job_file(job_id, REGIONS_FILE)))
    except FileNotFoundError:
        raise expired(job_id) from None
