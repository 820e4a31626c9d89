"""Shared dependencies: settings, Redis, store, the caller's tenant, and the two registries.

Everything is built once in `create_app` and kept on `app.state`; these functions hand it to
routes as `Annotated[..., Depends(...)]` aliases, so tests can build an app per settings object.
"""

from __future__ import annotations

import contextlib
import re
from typing import Annotated

import redis
from fastapi import Depends, Header, Path, Request

from service.auth import OPEN_TENANT, KeyRing, bearer_token
from service.dataset_registry import DatasetRegistry
from service.ingest import build_from_spec, workspace
from service.job_registry import JobRegistry
from service.schemas import DatasetReference, InlineDataset
from spotlight.errors import NotFound, Unauthorized, Unavailable
from spotlight.keys import Keys
from spotlight.protocol import DatasetRecord, ErrorCode
from spotlight.settings import Settings
from spotlight.store import ArtifactStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store


def get_redis(request: Request) -> redis.Redis:
    r = request.app.state.redis
    if r is None:
        raise Unavailable(ErrorCode.UNAVAILABLE, "No Redis is configured (SPOTLIGHT_REDIS_URL / REDIS_URL).")
    return r


def get_tenant(
    request: Request,
    authorization: Annotated[str | None, Header(description="`Bearer <key>` when the server has keys.")] = None,
) -> str:
    """The caller's tenant; 401 when keys are configured and the key is missing or wrong."""
    keyring: KeyRing = request.app.state.keyring
    if keyring.open:
        tenant = OPEN_TENANT
    else:
        token = bearer_token(authorization)
        found = keyring.tenant_for(token) if token else None
        if found is None:
            raise Unauthorized(
                ErrorCode.UNAUTHORIZED,
                "Missing or wrong API key; send `Authorization: Bearer <key>`."
                if token is None
                else "Unknown API key.",
            )
        tenant = found
    request.scope.setdefault("state", {})["tenant"] = tenant
    return tenant


# Ids as this service mints them (`job_` / `ds_` + hex; letters, digits, '_' and '-' allowed, as
# RQ allows in a job id). Anything else cannot name a job or dataset, so it is 404 at the edge,
# before it reaches RQ (which raises on ids it would not have made) or a store path.
_JOB_ID = re.compile(r"job_[A-Za-z0-9_-]{1,64}")
_DATASET_ID = re.compile(r"ds_[A-Za-z0-9_-]{1,64}")


def job_id_path(job_id: Annotated[str, Path(description="The job's id, `job_…`.")]) -> str:
    if not _JOB_ID.fullmatch(job_id):
        raise NotFound(
            ErrorCode.JOB_NOT_FOUND,
            "No job with this id for this caller (ids look like job_…).",
            {"job": job_id[:100]},
        )
    return job_id


def dataset_id_path(dataset_id: Annotated[str, Path(description="The dataset's id, `ds_…`.")]) -> str:
    if not _DATASET_ID.fullmatch(dataset_id):
        raise NotFound(
            ErrorCode.DATASET_NOT_FOUND,
            "No dataset with this id for this caller (ids look like ds_…).",
            {"dataset": dataset_id[:100]},
        )
    return dataset_id


JobIdDep = Annotated[str, Depends(job_id_path)]
DatasetIdDep = Annotated[str, Depends(dataset_id_path)]


def reference_slot(request: Request, tenant: str, dataset: object) -> contextlib.AbstractContextManager[None]:
    """A slot of the app's `ReferenceSlots` when `dataset` is a reference (reading it holds a
    thread for up to `reference_timeout_s`); nothing to take for inline arrays or an id."""
    if isinstance(dataset, DatasetReference):
        return request.app.state.reference_slots.take(tenant)
    return contextlib.nullcontext()


def dataset_record(
    request: Request,
    tenant: str,
    dataset: str | InlineDataset | DatasetReference,
    datasets: DatasetRegistry,
    store: ArtifactStore,
    settings: Settings,
) -> DatasetRecord:
    """The stored dataset a request body names: its id looked up, or its inline arrays or reference
    ingested and registered (a reference in one of the tenant's reference slots), for jobs and scoring alike."""
    if isinstance(dataset, str):
        return datasets.get(tenant, dataset)
    with reference_slot(request, tenant, dataset), workspace(store) as work:
        builder, n, d = build_from_spec(dataset, work, settings)
        record, _ = datasets.register(tenant, builder, n, d)
    return record


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
TenantDep = Annotated[str, Depends(get_tenant)]


def get_datasets(r: RedisDep, store: StoreDep, settings: SettingsDep) -> DatasetRegistry:
    return DatasetRegistry(r, store, Keys.of(settings), settings)


def get_jobs(r: RedisDep, settings: SettingsDep) -> JobRegistry:
    return JobRegistry(r, settings)


DatasetsDep = Annotated[DatasetRegistry, Depends(get_datasets)]
JobsDep = Annotated[JobRegistry, Depends(get_jobs)]
