"""Shared dependencies: settings, Redis, store, the caller's tenant, and the two registries.

Everything is built once in `create_app` and kept on `app.state`; these functions hand it to
routes as `Annotated[..., Depends(...)]` aliases, so tests can build an app per settings object.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import redis
from fastapi import Depends, Header, Path, Request

from service.auth import OPEN_TENANT, KeyRing, bearer_token
from service.dataset_registry import DatasetRegistry
from service.dataset_source import DatasetSource
from service.job_registry import JobRegistry
from spotlight.contract.errors import NotFound, Unauthorized, Unavailable
from spotlight.contract.protocol import ErrorCode
from spotlight.server.keys import Keys
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore


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


def idempotency_header(description: str) -> Any:
    """The `Idempotency-Key` header of a route that creates something (service/idempotency.py):
    one bound on the key for every such route, each route saying what a retry gets."""
    return Header(alias="Idempotency-Key", min_length=1, max_length=255, description=description)


JobIdDep = Annotated[str, Depends(job_id_path)]
DatasetIdDep = Annotated[str, Depends(dataset_id_path)]


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


def get_source(request: Request, datasets: DatasetsDep, store: StoreDep, settings: SettingsDep) -> DatasetSource:
    return DatasetSource(datasets, store, settings, request.app.state.reference_slots)


SourceDep = Annotated[DatasetSource, Depends(get_source)]
