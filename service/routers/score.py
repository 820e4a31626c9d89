"""POST /v1/jobs/{id}/score: apply a finished job's regions to another dataset (monitoring a known weak spot).

Each row's weight in each region is the engine's kernel from the region's centre and precision
(spotlight/kernel.py — the same function the client's `Region.weights(X)` runs). Membership follows
the member rule of spotlight/members.py carried over to other data: a row is a member when its
weight is above 0 and at least the region's `member_min_weight`, which the worker stored in
regions.json (flat kernel: 0, the support; gaussian: the smallest weight among the region's members
on the data it was found on).

A region found with label evidence (`evidence_weight` > 0; spotlight/evidence.py) weighs a row by
its label (and prediction) too: a stored dataset's own labels/predictions are used, bare embeddings
take them in `labels` / `predictions`, and rows without what a region needs get a 400 that says so.

A region found with `pca_components` (``precision_space: "pca"``) measures distance along the job's
principal axes, which the worker stores beside the regions (`protocol.BASIS_FILE`): the route loads
them once per request and `GET /v1/jobs/{id}/basis` hands them to a client that scores locally.
Results written before the worker stored the basis get a 409 `pca_basis_missing` that says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.deps import DatasetsDep, JobIdDep, JobsDep, SettingsDep, StoreDep, TenantDep, reference_slot
from service.errors import error_responses
from service.ingest import build_from_spec, workspace
from service.routers.results import _read_regions, finished_spec, npy_download
from service.schemas import DatasetSpec
from spotlight import classes, kernel
from spotlight.dataset_files import DatasetFiles, DatasetMissing
from spotlight.errors import Conflict, Gone, InvalidInput, NotFound, TooLarge
from spotlight.members import members_at_or_above
from spotlight.protocol import BASIS_FILE, ErrorCode, job_file
from spotlight.records import RegionRecord
from spotlight.store import ArtifactStore

router = APIRouter(prefix="/v1/jobs", tags=["results"], responses=error_responses(401, 404, 409, 503))

# weights travel as JSON here: past this many (rows x regions), use the job's own weights or score in parts
MAX_SCORE_VALUES = 2_000_000


class ScoreRequest(BaseModel):
    """The rows to score: bare embeddings (nothing is stored), or a dataset (its ids come back too)."""

    model_config = ConfigDict(extra="forbid")

    embeddings: list[list[float]] | None = Field(
        None, min_length=1, description="n x d embeddings to score as they are (no losses needed; nothing is stored)."
    )
    dataset: DatasetSpec | None = Field(
        None, description='Or a dataset: an id (ds_…), inline arrays, or {"uri": …} (stored first, like an upload).'
    )
    labels: list[int] | list[str] | None = Field(
        None,
        description="With bare embeddings: each row's label (class names, or integer codes as the job's dataset "
        "had them), needed by regions found with label evidence (evidence_weight > 0). A dataset brings its own.",
    )
    predictions: list[int] | list[str] | None = Field(
        None,
        description="With bare embeddings: each row's predicted class, needed by regions found with "
        "evidence 'labels_predictions' or 'mismatch'.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ScoreRequest:
        if (self.embeddings is None) == (self.dataset is None):
            raise ValueError("give either embeddings or dataset")
        if self.dataset is not None and (self.labels is not None or self.predictions is not None):
            raise ValueError("labels and predictions go with bare embeddings; a dataset brings its own")
        return self


class ScoreOut(BaseModel):
    job: str
    dataset: str | None = Field(None, description="The dataset scored (ds_…), or null for bare embeddings.")
    n: int
    member_min_weight: list[float | None] = Field(
        description="Per region, what a row needs to be a member: weight > 0 and >= this (the region's "
        "member_min_weight; null: no row is)."
    )
    weights: list[list[float]] = Field(description="n x k: each row's kernel weight in each region, in [0, 1].")
    members: list[list[int]] = Field(description="Per region, the rows that are members, highest weight first.")
    ids: list[str | int] | None = Field(None, description="The dataset's ids of its rows, when it has ids.")


@router.post(
    "/{job_id}/score",
    response_model=ScoreOut,
    responses=error_responses(400, 410, 413),
    summary="Weights and membership of another dataset's rows in this job's regions",
)
def score(
    job_id: JobIdDep,
    body: ScoreRequest,
    request: Request,
    tenant: TenantDep,
    settings: SettingsDep,
    store: StoreDep,
    datasets: DatasetsDep,
    jobs: JobsDep,
) -> Any:
    """Which rows of a dataset (same dimension as the job's) fall in each region found, and how deeply."""
    finished_spec(jobs, tenant, job_id)
    regions = _read_regions(store, job_id).regions
    basis = _basis(store, job_id, regions)  # before anything is stored: a job that cannot be scored says so first
    record = None
    if body.embeddings is not None:
        x = _inline_embeddings(body.embeddings)
    elif isinstance(body.dataset, str):
        record = datasets.get(tenant, body.dataset)
    else:
        with reference_slot(request, tenant, body.dataset), workspace(store) as work:
            builder, n, d = build_from_spec(body.dataset, work, settings)  # type: ignore[arg-type]
            record, _ = datasets.register(tenant, builder, n, d)
    n, dim_in = (record.n, record.dim) if record is not None else x.shape
    dim = len(regions[0].center) if regions else dim_in
    if dim_in != dim:
        raise InvalidInput(
            ErrorCode.SHAPE_MISMATCH,
            f"The rows have dimension {dim_in}; this job's regions have {dim}.",
            {"dim": dim_in, "expected": dim, **({"dataset": record.id} if record else {})},
        )
    if n * max(1, len(regions)) > MAX_SCORE_VALUES:
        raise TooLarge(
            ErrorCode.TOO_LARGE,
            f"{n} rows x {len(regions)} regions is over {MAX_SCORE_VALUES} weights in one answer; "
            "score the rows in parts, or compute them locally with the client's Region.weights(X)",
            {"n": n, "regions": len(regions), "limit": MAX_SCORE_VALUES},
        )
    ids = None
    labels: Any = body.labels
    predictions: Any = body.predictions
    try:
        if record is not None:
            files = DatasetFiles(store, record.sha256)
            x = files.embeddings()
            ids = files.ids()
            labels, predictions = files.labels(), files.predictions()
            names = files.manifest().get(classes.MANIFEST_KEY)
            if names:  # this dataset's own codes: compare by name with the job's (spotlight/evidence.py)
                labels, predictions = classes.names_of(labels, names), classes.names_of(predictions, names)
        columns = [
            kernel.region_weights(x, region, basis, labels=labels, predictions=predictions) for region in regions
        ]
    except kernel.RegionSpaceError as exc:
        raise InvalidInput(ErrorCode.VALIDATION, str(exc), {"job": job_id}) from None
    except ValueError as exc:  # labels/predictions of the wrong length
        raise InvalidInput(ErrorCode.SHAPE_MISMATCH, str(exc), {"job": job_id}) from None
    except DatasetMissing:
        raise Gone(
            ErrorCode.DATASET_GONE,
            "The dataset's files are no longer stored.",
            {"dataset": record.id if record else None},
        ) from None
    w = np.stack(columns, axis=1) if columns else np.zeros((n, 0))
    thresholds = [region.member_min_weight for region in regions]
    members = [members_at_or_above(w[:, k], thresholds[k]).tolist() for k in range(w.shape[1])]
    return ScoreOut(
        job=job_id,
        dataset=record.id if record else None,
        n=n,
        member_min_weight=thresholds,
        weights=w.tolist(),
        members=members,
        ids=ids,
    )


@router.get(
    "/{job_id}/basis",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-npy": {}},
            "description": "float64 d x k .npy: the principal axes (orthonormal columns) of a search with "
            "pca_components; a region's u is measured on (x - center) @ basis",
        }
    },
    summary="The PCA basis the regions' distance is measured along (.npy; jobs with pca_components)",
)
def get_basis(job_id: JobIdDep, tenant: TenantDep, jobs: JobsDep, store: StoreDep) -> StreamingResponse:
    """What scoring a PCA job's regions locally needs besides the regions (spotlight/kernel.py)."""
    finished_spec(jobs, tenant, job_id)
    regions = _read_regions(store, job_id).regions
    if not _needs_basis(regions):
        raise NotFound(
            ErrorCode.NOT_FOUND,
            "This job's regions were found without pca_components: their distance is measured in the "
            "embedding space itself, so there is no basis; centre and precision are all a region needs.",
            {"job": job_id},
        )
    path = job_file(job_id, BASIS_FILE)
    if not store.exists(path):
        raise _basis_missing(job_id)
    return npy_download(store, path, f"{job_id}_basis.npy")


def _needs_basis(regions: list[RegionRecord]) -> bool:
    return any(region.precision_space == "pca" for region in regions)


def _basis(store: ArtifactStore, job_id: str, regions: list[RegionRecord]) -> np.ndarray | None:
    """The job's PCA basis when a region needs it (read once for all regions), else None."""
    if not _needs_basis(regions):
        return None
    try:
        return np.asarray(store.load_npy(job_file(job_id, BASIS_FILE), mmap=False), dtype=np.float64)
    except FileNotFoundError:
        raise _basis_missing(job_id) from None


def _basis_missing(job_id: str) -> Conflict:
    return Conflict(
        ErrorCode.BASIS_MISSING,
        "This job's regions were found with pca_components, and its results were stored without the PCA "
        "basis their distance is measured along (a worker older than the one that stores it), so other "
        "rows cannot be scored against them. Its own rows' weights are in GET /v1/jobs/{id}/weights; "
        "submit the search again to score new rows.",
        {"job": job_id, "file": BASIS_FILE},
    )


def _inline_embeddings(rows: list[list[float]]) -> np.ndarray:
    """Bare embeddings from JSON: equal-length rows of finite numbers (400 otherwise)."""
    try:
        x = np.asarray(rows, dtype=np.float64)
    except ValueError:
        raise InvalidInput(
            ErrorCode.SHAPE_MISMATCH, "embeddings: rows differ in length", {"field": "embeddings"}
        ) from None
    if x.ndim != 2 or x.shape[1] == 0:
        raise InvalidInput(ErrorCode.VALIDATION, "embeddings must be n x d with d >= 1", {"field": "embeddings"})
    if not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise InvalidInput(
            ErrorCode.NON_FINITE,
            f"embeddings has NaN or infinite values (first at row {row})",
            {"field": "embeddings", "row": row},
        )
    return x
