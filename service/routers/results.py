"""/v1/jobs/{id}/…: the results of a finished job, read from the store (409 before that)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, StreamingResponse

from service.deps import JobIdDep, JobsDep, StoreDep, TenantDep
from service.errors import error_responses
from service.job_results import dataset_gone, expired, finished_spec, read_regions, report_missing
from service.schemas import MAX_OFFSET, Member, MemberOrder, MembersOut, RegionsOut
from service.security_headers import REPORT_CSP
from spotlight import classes
from spotlight.contribution import contributions
from spotlight.dataset_files import DatasetFiles, DatasetMissing
from spotlight.errors import NotFound
from spotlight.protocol import (
    REPORT_FILE,
    WEIGHTS_FILE,
    ErrorCode,
    job_file,
    member_weights_file,
    members_by_contribution_file,
    members_file,
)
from spotlight.store import ArtifactStore

router = APIRouter(prefix="/v1/jobs", tags=["results"], responses=error_responses(401, 404, 409, 503))
STREAM_CHUNK = 1024 * 1024


@router.get("/{job_id}/regions", response_model=RegionsOut, summary="The regions found")
def get_regions(job_id: JobIdDep, tenant: TenantDep, jobs: JobsDep, store: StoreDep) -> Any:
    finished_spec(jobs, tenant, job_id)
    return read_regions(store, job_id)


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
    spec = finished_spec(jobs, tenant, job_id)
    stored = read_regions(store, job_id)
    n_regions = len(stored.regions)
    if k >= n_regions:
        raise NotFound(
            ErrorCode.REGION_NOT_FOUND,
            f"Region {k} does not exist; this job has {n_regions}.",
            {"job": job_id, "k": k, "regions": n_regions},
        )
    files = DatasetFiles(store, spec.dataset_sha256)
    # The worker stored the member set in both orders and the loss floor: this route only pages them.
    ordered = members_file(k) if order == "weight" else members_by_contribution_file(k)
    try:
        members = store.load_npy(job_file(job_id, ordered))
        idx = np.asarray(members[offset : offset + limit], dtype=np.int64)
        w = _page_weights(store, job_id, ordered, k, idx, offset)
    except FileNotFoundError:
        raise expired(job_id) from None
    reference = stored.loss_reference
    total = int(members.shape[0])
    try:
        losses = np.asarray(files.losses()[idx], dtype=np.float64)
        contrib = contributions(np.clip(w, 0.0, 1.0), losses, spec.params.objective, reference)
        labels = files.labels()
        preds = files.predictions()
        names = files.manifest().get(classes.MANIFEST_KEY)
        ids = files.ids(idx)
        meta = files.metadata(idx)
        texts = files.texts(idx)
    except DatasetMissing:
        raise dataset_gone(job_id, spec) from None
    rows = [
        Member(
            index=int(i),
            id=ids[j] if ids is not None else None,
            weight=float(min(max(w[j], 0.0), 1.0)),
            loss=float(losses[j]),
            contribution=float(contrib[j]),
            label=classes.name_of(int(labels[i]), names) if labels is not None else None,
            prediction=classes.name_of(int(preds[i]), names) if preds is not None else None,
            text=texts[j] if texts is not None else None,
            metadata=meta[j] if meta is not None else None,
        )
        for j, i in enumerate(idx.tolist())
    ]
    return MembersOut(total=total, limit=limit, offset=offset, members=rows)


def _page_weights(store: ArtifactStore, job_id: str, ordered: str, k: int, idx: np.ndarray, offset: int) -> np.ndarray:
    """The page's kernel weights from the member file's own weights; results stored without them
    (written by an older worker) give their column of weights.npy instead."""
    try:
        weights = store.load_npy(job_file(job_id, member_weights_file(ordered)))
        return np.asarray(weights[offset : offset + idx.size], dtype=np.float64)
    except FileNotFoundError:
        if not idx.size:
            return np.empty(0)
        return np.asarray(store.load_npy(job_file(job_id, WEIGHTS_FILE))[idx, k], dtype=np.float64)


def _stream(store: ArtifactStore, path: str) -> Iterator[bytes]:
    with store.open_read(path) as f:
        while block := f.read(STREAM_CHUNK):
            yield block


@router.get(
    "/{job_id}/weights",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-npy": {}}, "description": "float32 n x k .npy"}},
    summary="Kernel weight of every example in every region (.npy)",
)
def get_weights(job_id: JobIdDep, tenant: TenantDep, jobs: JobsDep, store: StoreDep) -> StreamingResponse:
    finished_spec(jobs, tenant, job_id)
    path = job_file(job_id, WEIGHTS_FILE)
    if not store.exists(path):
        raise NotFound(ErrorCode.NOT_FOUND, "The job's weights are no longer stored (expired).", {"job": job_id})
    return npy_download(store, path, f"{job_id}_weights.npy")


def npy_download(store: ArtifactStore, path: str, filename: str) -> StreamingResponse:
    """A stored .npy streamed as an attachment (never read whole into the API's memory)."""
    return StreamingResponse(
        _stream(store, path),
        media_type="application/x-npy",
        headers={"Content-Length": str(store.size(path)), "Content-Disposition": f'attachment; filename="{filename}"'},
    )


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
    finished_spec(jobs, tenant, job_id)
    path = job_file(job_id, REPORT_FILE)
    if not store.exists(path):
        raise report_missing(jobs, tenant, job_id)
    # The report's own policy: inline styles and data: images, nothing loaded from anywhere else.
    return HTMLResponse(store.read_bytes(path), headers={"Content-Security-Policy": REPORT_CSP})
