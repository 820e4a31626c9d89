"""POST /v1/jobs/{id}/score and GET /v1/jobs/{id}/basis: parse, call service/scoring.py, answer.

How rows are weighed and which are members (and why): service/scoring.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
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

# the answer is written this many numbers (weights, member indices, ids) at a time: it never exists
# whole as Python objects or text, and one piece's json.dumps holds the interpreter lock a few ms
ITEMS_PER_CHUNK = 16384
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


async def _score_slot(request: Request, tenant: TenantDep) -> AsyncIterator[None]:
    """One of the tenant's score slots (service/limits.py), taken before a byte of the body is read
    and given back once the answer has been sent (FastAPI ends a yield dependency after the
    response): what a score request holds in memory — its body, then its n x k weights while a
    client reads them — exists only inside a slot, however many connections send or read slowly."""
    with request.app.state.score_slots.take(tenant):
        yield


async def _raw_body(request: Request, _slot: Annotated[None, Depends(_score_slot)]) -> bytes:
    """The body's bytes, read on the event loop (bounded by `max_score_body_bytes`, service/limits.py)
    inside the request's score slot; parsing them is the route's work, in its thread, so a large body
    never stalls the loop that answers /healthz and everyone else."""
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
    tenant: TenantDep,
    store: StoreDep,
    source: SourceDep,
    jobs: JobsDep,
) -> Any:
    """Which rows of a dataset (same dimension as the job's) fall in each region found, and how deeply.

    At most a few score requests run at once, from their body's first byte to their answer's last
    (429/503 `too_many_requests`/`service_unavailable` past that, with Retry-After); the answer is
    written in chunks of rows."""
    with workspace(store) as work:
        rows = _parse(raw, work)
    dataset, scored = scoring.score_job(store, jobs, tenant, job_id, rows, source)
    return _answer(job_id, dataset, scored)


def _answer(job_id: str, dataset: str | None, scored: scoring.Scored) -> StreamingResponse:
    """`ScoreOut` as JSON, written a chunk at a time: its n x k weights, its member lists and ids too."""
    head = {"job": job_id, "dataset": dataset, "n": scored.n, "member_min_weight": scored.member_min_weight}
    return StreamingResponse(_chunks(head, scored), media_type="application/json")


def _chunks(head: dict[str, Any], scored: scoring.Scored) -> Iterator[bytes]:
    """The answer's JSON in pieces of at most ITEMS_PER_CHUNK numbers (rows of weights: as many as hold that):
    one `json.dumps` of a whole list of n holds the interpreter lock, and with it the event loop that
    answers /healthz, for as long as it takes (every row of a body can be a member of every region)."""
    yield json.dumps(head)[:-1].encode() + b', "members": ['
    for k, members in enumerate(scored.members):
        yield b"," if k else b""
        yield from _json_list(members, ITEMS_PER_CHUNK)
    yield b'], "ids": '
    if scored.ids is None:
        yield b"null"
    else:
        yield from _json_list(scored.ids, ITEMS_PER_CHUNK)
    yield b', "weights": '
    yield from _json_list(scored.weights, max(1, ITEMS_PER_CHUNK // max(1, scored.weights.shape[1])))
    yield b"}"


def _json_list(items: Sequence[Any] | np.ndarray, per: int) -> Iterator[bytes]:
    yield b"["
    for start in range(0, len(items), per):
        part = items[start : start + per]
        text = json.dumps(part.tolist() if isinstance(part, np.ndarray) else list(part))[1:-1]
        yield (b"," if start else b"") + text.encode()
    yield b"]"


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
