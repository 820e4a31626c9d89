"""Limits on what one request may hold: its body (while it streams in) and reference reads.

A dataset upload may be as large as `max_upload_bytes` (plus the multipart framing); a job
submission as large as `max_job_body_bytes`; every other body (JSON with inline arrays) as large
as `max_inline_bytes`. A declared
Content-Length above the limit is refused before a byte is read; a chunked body is cut off the
moment it passes the limit. Either way the caller gets 413 `payload_too_large`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge
from spotlight.errors import LimitReached, Unavailable
from spotlight.protocol import ErrorCode

# Room for multipart boundaries and part headers on top of the upload limit.
MULTIPART_SLACK = 1024 * 1024
RETRY_AFTER_S = 10


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, upload_limit: int, inline_limit: int, job_limit: int | None = None) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.inline_limit = inline_limit
        self.job_limit = inline_limit if job_limit is None else min(job_limit, inline_limit)

    def limit_for(self, scope: Scope) -> int:
        headers = dict(scope.get("headers") or [])
        ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
        path = scope.get("path", "").rstrip("/")
        if path == "/v1/datasets" and ctype.startswith("multipart/"):
            return self.upload_limit + MULTIPART_SLACK
        if path == "/v1/jobs":
            # A job body is parsed whole by the framework (one Python object per number, ~30x its
            # size for short numbers), so it gets a smaller limit than /v1/datasets, which walks
            # inline JSON in slices (service/ingest/inline_json.py).
            return self.job_limit
        return self.inline_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared: int | None = None
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            if declared is not None and declared > limit:
                raise PayloadTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class ReferenceSlots:
    """How many references the API is reading at once: in total, and per tenant.

    Reading a reference holds one of the server's worker threads for as long as the remote end
    takes (up to `reference_timeout_s`). Without a bound, a few slow references from one tenant
    would hold every thread and the API would stop answering everyone. A slot is taken without
    waiting: when none is free the caller gets 429 (its own share is used) or 503 (the server's
    is; `service_unavailable` with details.reason `reference_fetches`), with Retry-After, and the
    API's other endpoints keep their threads.
    """

    def __init__(self, total: int, per_tenant: int) -> None:
        self.total = total
        self.per_tenant = per_tenant
        self._lock = threading.Lock()
        self._in_use = 0
        self._by_tenant: dict[str, int] = {}

    @contextlib.contextmanager
    def take(self, tenant: str) -> Iterator[None]:
        with self._lock:
            mine = self._by_tenant.get(tenant, 0)
            if mine >= self.per_tenant:
                raise LimitReached(
                    ErrorCode.TOO_MANY_FETCHES,
                    f"You already have {mine} references being read (the limit per tenant is {self.per_tenant}, "
                    "SPOTLIGHT_MAX_REFERENCE_FETCHES_PER_TENANT); retry when one has finished.",
                    {"in_progress": mine, "limit": self.per_tenant},
                    retry_after_s=RETRY_AFTER_S,
                )
            if self._in_use >= self.total:
                raise Unavailable(
                    ErrorCode.UNAVAILABLE,
                    f"The server is reading {self._in_use} references already (SPOTLIGHT_MAX_REFERENCE_FETCHES); "
                    "retry shortly.",
                    {"in_progress": self._in_use, "limit": self.total, "reason": "reference_fetches"},
                    retry_after_s=RETRY_AFTER_S,
                )
            self._in_use += 1
            self._by_tenant[tenant] = mine + 1
        try:
            yield
        finally:
            with self._lock:
                self._in_use -= 1
                left = self._by_tenant[tenant] - 1
                if left:
                    self._by_tenant[tenant] = left
                else:
                    del self._by_tenant[tenant]
