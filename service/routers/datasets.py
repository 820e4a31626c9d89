"""/v1/datasets: upload once (multipart, inline JSON or a reference), then search many times."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from service import dataset_source
from service.dataset_deletion import delete_dataset as delete_dataset_and_results
from service.deps import DatasetIdDep, DatasetsDep, JobsDep, SettingsDep, StoreDep, TenantDep
from service.errors import error_responses
from service.schemas import MAX_OFFSET, DatasetList, DatasetOut
from spotlight.contract.protocol import DATASET_FIELDS, NAME_MAX, TAGS_MAX, DatasetRecord

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=error_responses(401, 503))

_MULTIPART_SCHEMA: dict[str, Any] = {
    "description": "One `file` (.npz or .parquet), or one .npy part per key (ids/metadata may also be JSON).",
    "oneOf": [
        {
            "type": "object",
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "columns": {
                    "type": "string",
                    "description": 'JSON object: which column/key holds which field, e.g. {"embeddings": "emb"}',
                },
            },
            "required": ["file"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {k: {"type": "string", "format": "binary"} for k in DATASET_FIELDS},
            "required": ["embeddings"],
            "additionalProperties": False,
        },
    ],
}
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/InlineDataset"},
                        {"$ref": "#/components/schemas/DatasetReference"},
                    ]
                }
            },
        },
    }
}


def to_out(record: DatasetRecord, deduplicated: bool = False) -> DatasetOut:
    return DatasetOut(
        id=record.id,
        n=record.n,
        dim=record.dim,
        fields=record.fields,
        sha256=record.sha256,
        created_at=record.created_at,
        deduplicated=deduplicated,
        name=record.name,
        tags=record.tags,
    )


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    summary="Upload a dataset",
    responses=error_responses(400, 413, 415, 429),
    openapi_extra=_UPLOAD_BODY,
)
async def create_dataset(
    request: Request,
    tenant: TenantDep,
    settings: SettingsDep,
    store: StoreDep,
    datasets: DatasetsDep,
    name: Annotated[str | None, Query(min_length=1, max_length=NAME_MAX, description="Your label for it.")] = None,
    tags: Annotated[
        list[str] | None, Query(max_length=TAGS_MAX, description="Your tags (repeat: tags=a&tags=b).")
    ] = None,
) -> Any:
    """Store a dataset: multipart `file` (.npz/.parquet) or .npy fields, inline JSON arrays, or `{"uri": …}`.

    The body streams to disk and is validated in chunks; identical content is stored once.
    """
    record, existed = await dataset_source.upload(
        request, request.app.state.reference_slots, tenant, datasets, store, settings, name, tags
    )
    return to_out(record, existed)


@router.get("", response_model=DatasetList, summary="List your datasets, newest first")
def list_datasets(
    tenant: TenantDep,
    datasets: DatasetsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> DatasetList:
    records, total = datasets.list(tenant, limit, offset)
    return DatasetList(datasets=[to_out(r) for r in records], total=total)


@router.get("/{dataset_id}", response_model=DatasetOut, responses=error_responses(404), summary="One dataset")
def get_dataset(dataset_id: DatasetIdDep, tenant: TenantDep, datasets: DatasetsDep) -> DatasetOut:
    return to_out(datasets.get(tenant, dataset_id))


@router.delete(
    "/{dataset_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(404),
    summary="Delete a dataset and every result derived from its rows (content goes with the last dataset sharing it)",
)
def delete_dataset(
    dataset_id: DatasetIdDep, tenant: TenantDep, datasets: DatasetsDep, jobs: JobsDep, store: StoreDep
) -> Response:
    """The dataset's rows leave every artefact derived from them: its record and (with the last
    dataset sharing it) its content, then each of its jobs' results (members, weights, report,
    regions); its queued or running jobs are canceled. The jobs' records stay, and their result
    routes answer 410 `dataset_gone`."""
    delete_dataset_and_results(datasets, jobs, store, tenant, dataset_id)
    return Response(status_code=204)
