"""The HTTP API: `create_app(settings)` builds one FastAPI app; uvicorn runs it with `--factory`.

    uvicorn service.app:create_app --factory --host 127.0.0.1 --port 8000

Everything the routes share (settings, Redis client, store, key ring) is built here once and kept
on `app.state`; routes receive it through service/deps.py. The app never imports the worker.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from service import docs, metrics, security_headers
from service.auth import KeyRing
from service.errors import ErrorResponse, install_error_handlers
from service.expiry import ExpirySweeper, sweep_stale_work
from service.host_check import HostGuard
from service.http_metrics import HttpStats, http_observer
from service.limits import BodyLimitMiddleware, list_slots, reference_slots, score_slots
from service.query_check import reject_unknown_query
from service.request_log import RequestLogMiddleware
from service.routers import compare, datasets, jobs, ops, results, score
from spotlight.contract.logs import configure_logging
from spotlight.server.settings import Settings, get_settings
from spotlight.server.store import store_from_settings

log = logging.getLogger("spotlight.api")
API_VERSION = "1.0.0"
DESCRIPTION = (
    "Finds the regions of a model's embedding space where its loss is high (the spotlight, "
    "d'Eon et al., FAccT 2022). Upload a dataset, submit a job, read regions and members. "
    'Every error is `{"error": {"code", "message", "details"}}`.'
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        removed = sweep_stale_work(app.state.store)
        if removed:
            log.info("removed upload work folders left by a previous process", extra={"count": len(removed)})
        sweeper = ExpirySweeper(settings)  # results past their TTL leave the store and Redis together
        sweeper.start()
        yield
        sweeper.stop()
        if app.state.redis is not None:
            app.state.redis.close()

    # /docs and /redoc come from service/docs.py (local assets, no CDN), not FastAPI's defaults.
    app = FastAPI(
        title="Spotlight service",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.keyring = KeyRing.from_settings(settings)
    app.state.store = store_from_settings(settings)
    app.state.reference_slots = reference_slots(
        settings.max_reference_fetches, settings.max_reference_fetches_per_tenant
    )
    app.state.score_slots = score_slots()
    app.state.list_slots = list_slots()
    app.state.redis = (
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30)
        if settings.redis_url
        else None
    )
    install_error_handlers(app)
    for module in (datasets, jobs, results, score, compare, ops, docs):
        app.include_router(module.router)
    metrics.install(app)
    app.add_middleware(
        BodyLimitMiddleware,
        upload_limit=settings.max_upload_bytes,
        inline_limit=settings.max_inline_bytes,
        job_limit=settings.max_job_body_bytes,
        score_limit=settings.max_score_body_bytes,
    )
    # outside the body limit, so its 413s are logged and counted too
    app.state.http_stats = HttpStats()
    app.add_middleware(RequestLogMiddleware, observers=[http_observer(app.state)])
    if app.state.keyring.open:  # keyless: only this machine's names (service/host_check.py)
        app.add_middleware(HostGuard, trusted=settings.trusted_hosts)
    security_headers.install(app)  # wraps even the outermost middleware: every answer (500s included) has the headers
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


# Statuses any operation can answer: a body or query it cannot parse, an oversized body, a fault.
_EVERYWHERE = {
    "400": "Invalid input",
    "413": "Body too large (payload_too_large)",
    "500": "Server fault (internal_error)",
    "503": "Redis or the store unreachable (service_unavailable, store_error)",
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's spec, with request-validation errors documented as what they are here: 400 + ErrorResponse."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path_item in spec.get("paths", {}).values():
        for op in path_item.values():
            responses = op.get("responses", {})
            if "422" in responses:
                del responses["422"]
                responses.setdefault("400", {"description": "Invalid input"})
            for status, text in _EVERYWHERE.items():
                responses.setdefault(status, {"description": text})
            for status, response in responses.items():
                if status.startswith(("4", "5")):  # errors are JSON even where success is HTML or .npy
                    response["content"] = {"application/json": {"schema": error_ref}}
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in score.REQUEST_MODELS:  # bodies a route parses itself, off the event loop
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in model_schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas.setdefault(model.__name__, model_schema)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if "ErrorResponse" not in schemas:  # pragma: no cover - routes reference it
        schemas.update(ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}").get("$defs", {}))
    app.openapi_schema = spec
    return spec
