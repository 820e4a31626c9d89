"""Every error the API sends, in one place: the contract's `{"error": {"code", "message", "details"}}`.

Routes, dependencies, registries, ingestion and reference checks all raise domain errors
(spotlight/contract/errors.py) that know nothing of HTTP; `HTTP_STATUS` here is the one mapping from their
`code` to a status (and `_HEADERS` the one place a code adds a header). The handlers turn each into the
contract's JSON, including the errors the
framework itself produces (unknown route, wrong method, request validation, malformed JSON, body
too large) and unexpected faults. Caller mistakes are 4xx; 5xx only for server faults. Request
validation is 400, like every other "your input is wrong" answer, so a caller has one status to
branch on.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from spotlight.contract.errors import DomainError, InvalidInput, Unavailable
from spotlight.contract.protocol import ErrorCode
from spotlight.server.store import StoreError

log = logging.getLogger("spotlight.api")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable snake_case error code to branch on.")
    message: str = Field(description="What went wrong and how to fix it.")
    details: dict[str, Any] = Field(default_factory=dict, description="Machine-readable context.")


class ErrorResponse(BaseModel):
    """The body of every non-2xx answer."""

    error: ErrorBody


# The HTTP status of each error code: one code, one status, wherever it is raised.
HTTP_STATUS: dict[str, int] = {
    ErrorCode.VALIDATION: 400,
    ErrorCode.MALFORMED_JSON: 400,
    ErrorCode.BAD_FILE: 400,
    ErrorCode.NON_FINITE: 400,
    ErrorCode.SHAPE_MISMATCH: 400,
    ErrorCode.REFERENCE_REFUSED: 400,
    ErrorCode.REFERENCE_UNREADABLE: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.DATASET_NOT_FOUND: 404,
    ErrorCode.JOB_NOT_FOUND: 404,
    ErrorCode.REGION_NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.JOB_NOT_FINISHED: 409,
    ErrorCode.JOB_NOT_CANCELABLE: 409,
    ErrorCode.BASIS_MISSING: 409,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.REPORT_NOT_READY: 409,
    ErrorCode.REPORT_FAILED: 409,
    ErrorCode.DATASET_GONE: 410,
    ErrorCode.HOST_NOT_ALLOWED: 421,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.TOO_MANY_ELEMENTS: 413,
    ErrorCode.QUOTA_EXCEEDED: 413,
    ErrorCode.UNSUPPORTED_MEDIA: 415,
    ErrorCode.TOO_MANY_JOBS: 429,
    ErrorCode.TOO_MANY_FETCHES: 429,
    ErrorCode.TOO_MANY_REQUESTS: 429,
    ErrorCode.TOO_MUCH_ACTIVE_COST: 429,
    ErrorCode.JOB_TOO_COSTLY: 400,
    ErrorCode.ROWS_DO_NOT_MATCH: 400,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.STORE_ERROR: 503,
}


def http_status(error: DomainError) -> int:
    """The status a domain error is answered with; a code missing from the table is a bug (500)."""
    return HTTP_STATUS.get(error.code, 500)


# Headers a code's answer carries besides Retry-After (which a domain error's retry_after_s sets).
_HEADERS: dict[str, dict[str, str]] = {ErrorCode.UNAUTHORIZED: {"WWW-Authenticate": "Bearer"}}


class PayloadTooLarge(StarletteHTTPException):
    """Raised from inside the request stream when a body passes its limit (see service/limits.py).

    It is an HTTPException so that FastAPI's own body reading re-raises it unchanged.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {limit} bytes")
        self.limit = limit


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details or {}))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


# Statuses the framework raises by itself, and the codes they carry.
_HTTP_CODES = {
    401: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA,
}


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = dict(_HEADERS.get(exc.code, {}))
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    return error_response(http_status(exc), exc.code, exc.message, exc.details, headers or None)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status, ErrorCode.VALIDATION if 400 <= status < 500 else ErrorCode.INTERNAL)
    if isinstance(exc, PayloadTooLarge):
        message = f"The request body is larger than the limit of {exc.limit} bytes; send less or ask the operator."
        details: dict[str, Any] = {"limit_bytes": exc.limit}
    elif status == 404:
        message, details = f"No route {request.url.path}; see /docs for the API.", {"path": request.url.path}
    elif status == 405:
        message, details = f"{request.method} is not allowed on {request.url.path}.", {"method": request.method}
    else:
        message, details = str(exc.detail), {}
    headers = dict(exc.headers) if exc.headers else None
    if status == 405:
        allowed = _allowed_methods(request)
        details["allowed"] = allowed
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return error_response(status, code, message, details, headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path, asked of the routes themselves per method
    (routers may be nested, and Starlette's own 405 names only one route's methods)."""
    allowed = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.routes):
            allowed.append(method)
    return allowed


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body",)) or "body"


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = errors[0].get("ctx") or {}
        return error_response(
            400,
            ErrorCode.MALFORMED_JSON,
            f"The body is not valid JSON ({ctx.get('error', 'decode error')}).",
            {"position": (tuple(errors[0].get("loc") or ()) + (None, None))[1]},  # ("body", position)
        )
    exc_ = validation_error(errors)
    return error_response(http_status(exc_), exc_.code, exc_.message, exc_.details)


def _extra_hint(loc: tuple[Any, ...]) -> str:
    """For a key no model takes: the name it was likely meant to be, as the CLI says it."""
    import difflib

    from spotlight.contract.params import SearchParams

    name, parent = str(loc[-1]), (str(loc[-2]) if len(loc) > 1 else "")
    params = sorted(SearchParams.model_fields)
    if parent != "params" and name in params:
        return f"; {name} is a search parameter: put it inside params"
    close = difflib.get_close_matches(name, params if parent == "params" else _BODY_KEYS + params, n=1, cutoff=0.6)
    if close and parent != "params" and close[0] in params:
        return f"; did you mean params.{close[0]}?"
    return f"; did you mean {close[0]}?" if close else ""


# Top-level keys of the request bodies (jobs, score, inline datasets), for `_extra_hint`.
_BODY_KEYS = [
    "dataset",
    "params",
    "callback_url",
    "name",
    "tags",
    "embeddings",
    "labels",
    "predictions",
    "losses",
    "logits",
    "sample_weights",
    "ids",
    "metadata",
    "uri",
]


def validation_error(errors: list[Any]) -> InvalidInput:
    """400 validation_error listing each field that failed (FastAPI's and hand-validated bodies alike)."""
    items = [
        {
            "field": _loc(tuple(e.get("loc", ()))),
            "problem": e.get("msg", "")
            + (_extra_hint(tuple(e.get("loc", ()))) if e.get("type") == "extra_forbidden" and e.get("loc") else ""),
            "type": e.get("type", ""),
        }
        for e in errors[:20]
    ]
    first = items[0] if items else {"field": "body", "problem": "invalid"}
    message = f"Invalid request: {first['field']}: {first['problem']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return InvalidInput(ErrorCode.VALIDATION, message, {"errors": items})


async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
    log.error("redis unavailable: %s", exc)
    return error_response(
        503, ErrorCode.UNAVAILABLE, "The queue (Redis) is unreachable; retry shortly.", headers={"Retry-After": "5"}
    )


async def _store_down(_: Request, exc: Exception) -> JSONResponse:
    log.error("store error: %s", exc)
    return error_response(
        503,
        ErrorCode.STORE_ERROR,
        "The artifact store could not be read or written; retry shortly.",
        headers={"Retry-After": "5"},
    )


# A full disk is the store's (or Redis's) condition, not a bug: 503 store_error, never a 500.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
# Redis refusing writes: its disk is full (MISCONF: the AOF/RDB cannot be written), it is a replica, or out of memory.
_REDIS_REFUSALS = ("MISCONF", "READONLY", "OOM", "NOREPLICAS")


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        log.error("store full or read-only: %s", exc)
        full = Unavailable(
            ErrorCode.STORE_ERROR,
            "The server's storage is full; nothing was stored. Retry later (an operator has to free space).",
            {"reason": "disk_full"},
            retry_after_s=60,
        )
        return await _domain_error(request, full)
    return await _unexpected(request, exc)


async def _redis_refused(request: Request, exc: Exception) -> JSONResponse:
    if str(exc).startswith(_REDIS_REFUSALS):
        log.error("redis refuses writes: %s", exc)
        refused = Unavailable(
            ErrorCode.UNAVAILABLE,
            "The queue (Redis) refuses writes right now (its disk may be full); nothing was changed. Retry later.",
            {"reason": "redis_refuses_writes"},
            retry_after_s=60,
        )
        return await _domain_error(request, refused)
    return await _unexpected(request, exc)


# A client that hung up before its body arrived: nobody is left to answer, and it is no failure of the
# server's (not an "unhandled error", not a 5xx in the access log and metrics). nginx's "client closed request".
CLIENT_CLOSED_REQUEST = 499


async def _client_gone(request: Request, exc: Exception) -> Response:
    log.info("client closed the connection before its %s %s body arrived", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        500,
        ErrorCode.INTERNAL,
        "The server failed; this is a bug, not your input. Quote the request id when reporting it.",
        {"request_id": request.headers.get("x-request-id") or getattr(request.state, "request_id", None)},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_down)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_down)
    app.add_exception_handler(StoreError, _store_down)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(redis.exceptions.ResponseError, _redis_refused)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)


# OpenAPI: the error responses each route may give, all with the one error schema.
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Invalid input (validation_error, malformed_json, bad_file, non_finite_values, shape_mismatch, ...)",
        401: "Missing or wrong API key (unauthorized)",
        404: "Unknown id, or not the caller's",
        409: "Conflict with the resource's state (job_not_finished; report_not_ready with Retry-After; "
        "report_failed, ...)",
        413: "Body or array too large (payload_too_large, too_many_elements)",
        415: "Unsupported content type",
        429: "Too many active jobs (too_many_active_jobs), reference reads (too_many_reference_fetches) or "
        "score requests (too_many_requests); see Retry-After",
        410: "The dataset behind these results was deleted (dataset_gone)",
        500: "Server fault (internal_error)",
        503: "Redis or the store unreachable, or the server reading its most references at once; see Retry-After",
    }
    return {s: {"model": ErrorResponse, "description": descriptions.get(s, "Error")} for s in statuses}
