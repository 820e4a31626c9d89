"""/v1/jobs/{id}/…: the results of a finished job, read from the store (409 before that)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, StreamingResponse

from service import job_results
from service.deps import JobIdDep, JobsDep, StoreDep, TenantDep
from service.downloads import npy_download
from service.errors import error_responses
from service.schemas import MAX_OFFSET, MemberOrder, MembersOut, RegionsOut
from service.security_headers import REPORT_CSP

router = APIRouter(prefix="/v1/jobs", tags=["results"], responses=error_responses(401, 404, 409, 503))


@router.get("/{job_id}/regions", response_model=RegionsOut, summary="The regions found")
def get_regions(job_id: JobIdDep, tenant: TenantDep, jobs: JobsDep, store: StoreDep) -> Any:
    return job_results.finished_regions(store, jobs, tenant, job_id)


@router.get(
    "/{job_id}/regions/{k}/members",
    response_model=MembersOut,
    responses=error_responses(410),
    summary="Members of region k (its member set), highest weight (or contribution) first",
)
def get_members(
    job_id: JobIdDep,
    k: Annotated[int, Path(ge=0, le=1000)],
    tenant: TenantDep,
    jobs: JobsDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    order: Annotated[
        MemberOrder,
        Query(
            description="'weight' (default): highest kernel value first. 'contribution': highest "
            "weight x (loss - the job's loss floor) first, the failing examples of the region."
        ),
    ] = "weight",
) -> MembersOut:
    return job_results.members_page(store, jobs, tenant, job_id, k, limit, offset, order)


@router.get(
    "/{job_id}/weights",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-npy": {}}, "description": "float32 n x k .npy"}},
    summary="Kernel weight of every example in every region (.npy)",
)
def get_weights(job_id: JobIdDep, tenant: TenantDep, jobs: JobsDep, store: StoreDep) -> StreamingResponse:
    return npy_download(store, job_results.weights_path(store, jobs, tenant, job_id), f"{job_id}_weights.npy")


@router.get(
    "/{job_id}/report",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "A self-contained HTML page"}},
    summary="The job's report, a page a person reads",
    description="The report is rendered after the job finished (its results do not wait for it): until "
    "it is there this answers 409 `report_not_ready` with Retry-After; a report that could not be made "
    "answers 409 `report_failed` with the reason. The Python client and `spotlight report` wait for it.",
)
def get_report(job_id: JobIdDep, tenant: TenantDep, jobs: JobsDep, store: StoreDep) -> HTMLResponse:
    html = job_results.report_html(store, jobs, tenant, job_id)
    # The report's own policy: inline styles and data: images, nothing loaded from anywhere else.
    return HTMLResponse(html, headers={"Content-Security-Policy": REPORT_CSP})
