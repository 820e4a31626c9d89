"""/v1/jobs: submit a search (202), watch it, list them, cancel it (the rules: service/job_submission.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from service import job_submission
from service.deps import JobIdDep, JobsDep, SettingsDep, SourceDep, StoreDep, TenantDep, idempotency_header
from service.errors import error_responses
from service.schemas import MAX_OFFSET, JobCreate, JobList, JobOut
from spotlight.contract.jobstate import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 503))


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    summary="Submit a search",
    responses=error_responses(400, 404, 409, 413, 429),
)
def create_job(
    body: JobCreate,
    response: Response,
    tenant: TenantDep,
    settings: SettingsDep,
    source: SourceDep,
    jobs: JobsDep,
    idempotency_key: Annotated[
        str | None, idempotency_header("Same key + same body: the same job, not a second one.")
    ] = None,
) -> JobOut:
    """Queue a spotlight search on a stored dataset (`"ds_…"`) or on one given inline / by `uri`."""
    job, replayed = job_submission.submit_once(jobs, settings, tenant, body, idempotency_key, source)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return jobs.view(job)


@router.get("", response_model=JobList, summary="List your jobs, newest first", responses=error_responses(429))
def list_jobs(
    request: Request,
    tenant: TenantDep,
    jobs: JobsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
) -> JobList:
    """A page reads only its own jobs (by status: an index per status, service/job_registry.py); a
    few listings per tenant run at once (429 `too_many_requests` past that, with Retry-After)."""
    with request.app.state.list_slots.take(tenant):
        items, total = jobs.list(tenant, limit, offset, status)
    return JobList(jobs=items, total=total)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404), summary="A job's status and progress")
def get_job(job_id: JobIdDep, tenant: TenantDep, jobs: JobsDep) -> JobOut:
    return jobs.view(jobs.fetch(tenant, job_id))


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    responses={**error_responses(404, 409), 202: {"model": JobOut, "description": "Running: the worker will stop"}},
    summary="Cancel a queued or running job",
)
def cancel_job(job_id: JobIdDep, response: Response, tenant: TenantDep, jobs: JobsDep, store: StoreDep) -> Any:
    """A queued job is canceled at once (200, status `canceled`); a running one is asked to stop
    (202, `cancel_requested: true`) and turns `canceled` at the worker's next step."""
    job, done = job_submission.cancel_job(jobs, store, tenant, job_id)
    if not done:
        response.status_code = 202
    return jobs.view(job)
