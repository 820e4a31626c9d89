"""POST /v1/jobs/{id}/score and GET /v1/jobs/{id}/basis: parse, call service/scoring.py, answer.

How rows are weighed and which are members (and why): service/scoring.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service import scoring
from service.deps import JobIdDep, JobsDep, SourceDep, StoreDep, TenantDep
from service.downloads import npy_download
from service.errors import error_responses
from service.ingest import workspace
from service.schemas import DatasetSpec

router = APIRouter(prefix="/v1/jobs", tags=["results"], responses=error_responses(401, 404, 409, 503))

# the answer's weights are written this many rows at a time, so an answer never exists whole as Python objects
ROWS_PER_CHUNK = 4096
StrictFloat = Annotated[float, Field(strict=True)]  # `true` is not 1.0
# a class code: a whole number the dataset's int64 codes can hold, never negative (`true` is not 1)
ClassCode = Annotated[int, Field(strict=True, ge=0, le=2**63 - 1)]


class ScoreRequest(BaseModel):
    """The rows to score: bare embeddings (nothing is stored), or a dataset (its ids come back too)."""

    model_config = ConfigDict(extra="forbid")

    embeddings: list[list[StrictFloat]] | None = Field(
        None, min_length=1, description="n x d embeddings to score as they are (no losses needed; nothing is stored)."
    )
    dataset: DatasetSpec | None = Field(
        None, description='Or a dataset: an id (ds_…), inline arrays, or {"uri": …} (stored first, like an upload).'
    )
    labels: list[ClassCode] | list[str] | None = Field(
        None,
        description="With bare embeddings: each row's label (class names, or integer codes as the job's dataset "
        "had them), needed by regions found with label evidence (evidence_weight > 0). A dataset brings its own.",
    )
    predictions: list[ClassCode] | list[str] | None = Field(
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


async def _raw_body(request: Request) -> bytes:
    """The body's bytes, read on the event loop (bounded by `max_score_body_bytes`, service/limits.py);
    parsing them is the route's work, in its thread and under a score slot, so a large body never
    stalls the loop that answers /healthz and everyone else."""
    return await request.body()


# Bodies the routes parse themselves (documented by reference in their `openapi_extra`).
REQUEST_MODELS: tuple[type[BaseModel], ...] = (ScoreRequest,)


def _parse(raw: bytes, work_dir: str) -> scoring.Rows:
    """A small body through its model (the same 400 as a body FastAPI parsed, service/errors.py); a
    larger one as bare rows read in slices (scoring.large_body_rows)."""
    if len(raw) > scoring.WHOLE_PARSE_BYTES:
        return scoring.large_body_rows(raw, work_dir)
    try:
        body = ScoreRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
    if body.embeddings is not None:
        return scoring.Rows(scoring.inline_embeddings(body.embeddings), body.labels, body.predictions)
    return scoring.Rows(dataset=body.dataset)


@router.post(
    "/{job_id}/score",
    response_model=ScoreOut,
    responses=error_responses(400, 410, 413, 429),
    summary="Weights and membership of another dataset's rows in this job's regions",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScoreRequest"}}},
        }
    },
)
def score(
    job_id: JobIdDep,
    raw: Annotated[bytes, Depends(_raw_body)],
    request: Request,
    tenant: TenantDep,
    store: StoreDep,
    source: SourceDep,
    jobs: JobsDep,
) -> Any:
    """Which rows of a dataset (same dimension as the job's) fall in each region found, and how deeply.

    At most a few score requests run at once (429/503 `too_many_requests`/`service_unavailable`
    past that, with Retry-After); the answer is written in chunks of rows."""
    with request.app.state.score_slots.take(tenant):
        with workspace(store) as work:
            rows = _parse(raw, work)
        dataset, scored = scoring.score_job(store, jobs, tenant, job_id, rows, source)
        return _answer(job_id, dataset, scored)


def _answer(job_id: str, dataset: str | None, scored: scoring.Scored) -> StreamingResponse:
    """`ScoreOut` as JSON, its n x k weights written a chunk of rows at a time."""
    head = {
        "job": job_id,
        "dataset": dataset,
        "n": scored.n,
        "member_min_weight": scored.member_min_weight,
        "members": scored.members,
        "ids": scored.ids,
    }
    return StreamingResponse(_chunks(head, scored.weights), media_type="application/json")


def _chunks(head: dict[str, Any], w: np.ndarray) -> Iterator[bytes]:
    yield json.dumps(head)[:-1].encode() + b', "weights": ['
    for start in range(0, w.shape[0], ROWS_PER_CHUNK):
        part = json.dumps(w[start : start + ROWS_PER_CHUNK].tolist())[1:-1]
        yield (b"," if start else b"") + part.encode()
    yield b"]}"


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
    """What scoring a PCA job's regions locally needs besides the regions (spotlight/contract/kernel.py)."""
    return npy_download(store, scoring.job_basis_path(store, jobs, tenant, job_id), f"{job_id}_basis.npy")
