"""POST /v1/jobs/{id}/score and GET /v1/jobs/{id}/basis: parse, call service/scoring.py, answer.

How rows are weighed and which are members (and why): service/scoring.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service import scoring
from service.deps import DatasetsDep, JobIdDep, JobsDep, SettingsDep, StoreDep, TenantDep, reference_slot
from service.errors import error_responses
from service.ingest import build_from_spec, workspace
from service.job_results import finished_spec, read_regions
from service.routers.results import npy_download
from service.schemas import DatasetSpec

router = APIRouter(prefix="/v1/jobs", tags=["results"], responses=error_responses(401, 404, 409, 503))


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
    regions = read_regions(store, job_id).get("regions", [])
    basis = scoring.load_basis(
        store, job_id, regions
    )  # before anything is stored: a job that cannot be scored says so first
    if body.embeddings is not None:
        x = scoring.inline_embeddings(body.embeddings)
        scored = scoring.score_rows(
            store, job_id, regions, basis, x=x, labels=body.labels, predictions=body.predictions
        )
        return _out(job_id, None, scored)
    if isinstance(body.dataset, str):
        record = datasets.get(tenant, body.dataset)
    else:
        with reference_slot(request, tenant, body.dataset), workspace(store) as work:
            builder, n, d = build_from_spec(body.dataset, work, settings)  # type: ignore[arg-type]
            record, _ = datasets.register(tenant, builder, n, d)
    return _out(job_id, record.id, scoring.score_rows(store, job_id, regions, basis, record=record))


def _out(job_id: str, dataset: str | None, scored: scoring.Scored) -> ScoreOut:
    return ScoreOut(
        job=job_id,
        dataset=dataset,
        n=scored.n,
        member_min_weight=scored.member_min_weight,
        weights=scored.weights.tolist(),
        members=scored.members,
        ids=scored.ids,
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
    regions = read_regions(store, job_id).get("regions", [])
    return npy_download(store, scoring.basis_path(store, job_id, regions), f"{job_id}_basis.npy")
