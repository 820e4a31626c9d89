"""Structured access logs: one JSON line per request with its id, method, path, status and duration.

(The JSON format itself lives in spotlight/contract/logs.py, shared with the worker.)

The request id comes from the caller's `X-Request-ID` when it sends a sane one, else it is made
here; it is echoed in the response header so a caller can quote it, and every log line written
while the request runs carries it (a contextvar, so threads from the threadpool see it too).

This middleware is the one place that measures a request (status, duration): observers such as
the HTTP metrics (service/http_metrics.py) receive its measurement instead of timing it again.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spotlight.contract.logs import JsonFormatter, configure_logging, request_id_var

__all__ = ["JsonFormatter", "RequestLogMiddleware", "configure_logging", "request_id_var"]

_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("spotlight.api.access")


# Called once per HTTP request, after the answer: (the ASGI scope, the status sent, seconds taken).
RequestObserver = Callable[[Scope, int, float], None]


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, observers: Sequence[RequestObserver] = ()) -> None:
        self.app = app
        self.observers = tuple(observers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SANE_ID.fullmatch(given) else secrets.token_hex(8)
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            access_log.info(
                "request",
                extra={
                    "request_id": rid,
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "tenant": scope.get("state", {}).get("tenant"),
                },
            )
            request_id_var.reset(token)
            for observe in self.observers:
                observe(scope, status, seconds)
