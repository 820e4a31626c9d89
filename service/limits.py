"""Limits on what one request may hold: its body (while it streams in) and reference reads.

A dataset upload may be as large as `max_upload_bytes` (plus the multipart framing); a job
submission as large as `max_job_body_bytes`; a score request as large as `max_score_body_bytes`;
every other body (JSON with inline arrays) as large as `max_inline_bytes`. A declared
Content-Length above the limit is refused before a byte is read; a chunked body is cut off the
moment it passes the limit. Either way the caller gets 413 `payload_too_large`.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge
from spotlight.contract.errors import LimitReached, Unavailable
from spotlight.contract.protocol import ErrorCode

# Room for multipart boundaries and part headers on top of the upload limit.
MULTIPART_SLACK = 1024 * 1024
RETRY_AFTER_S = 10
_SCORE_PATH = re.compile(r"/v1/jobs/[^/]+/score")


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        upload_limit: int,
        inline_limit: int,
        job_limit: int | None = None,
        score_limit: int | None = None,
    ) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.inline_limit = inline_limit
        self.job_limit = inline_limit if job_limit is None else min(job_limit, inline_limit)
        self.score_limit = inline_limit if score_limit is None else min(score_limit, inline_limit)

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
        if _SCORE_PATH.fullmatch(path):
            # Bare embeddings to score are parsed whole too (service/routers/score.py), off the event loop.
            return self.score_limit
        return self.inline_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared: int | None = None
        chunked = False
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        seen = 0
        body_read = not chunked and not declared

        async def limited_receive() -> Message:
            nonlocal seen, body_read
            if declared is not None and declared > limit:
                raise PayloadTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(limit)
                body_read = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            # An answer given before its request's body was read (a 413, 429, 401, ...) ends the
            # connection: the server would otherwise read the rest of a body it refused, up to its
            # Content-Length, on the event loop, as often as a client cares to send it again.
            if message["type"] == "http.response.start" and not body_read:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, limited_receive, closing_send)


class Slots:
    """How many requests of one costly kind the API is serving at once: in total, and per tenant.

    Such a request holds one of the server's worker threads (and its memory) for as long as it
    takes. Without a bound, a few of them from one tenant would hold every thread and the API would
    stop answering everyone. A slot is taken without waiting: when none is free the caller gets 429
    (its own share is used) or 503 (the server's is; `service_unavailable` with details.reason),
    with Retry-After, and the API's other endpoints keep their threads.
    """

    def __init__(
        self, total: int, per_tenant: int, what: str, reason: str, settings: tuple[str, str], code: str
    ) -> None:
        self.code = code  # of the 429
        self.total = total
        self.per_tenant = per_tenant
        self.what = what  # "references being read"
        self.reason = reason
        self.settings = settings  # the operator's knobs for (total, per tenant), named in the messages
        self._lock = threading.Lock()
        self._in_use = 0
        self._by_tenant: dict[str, int] = {}

    @contextlib.contextmanager
    def take(self, tenant: str) -> Iterator[None]:
        with self._lock:
            mine = self._by_tenant.get(tenant, 0)
            if mine >= self.per_tenant:
                raise LimitReached(
                    self.code,  # a 429 code (service/errors.py HTTP_STATUS), chosen by the kind of slot
                    f"You already have {mine} {self.what} (the limit per tenant is {self.per_tenant}, "
                    f"{self.settings[1]}); retry when one has finished.",
                    {"in_progress": mine, "limit": self.per_tenant, "reason": self.reason},
                    retry_after_s=RETRY_AFTER_S,
                )
            if self._in_use >= self.total:
                raise Unavailable(
                    ErrorCode.UNAVAILABLE,
                    f"The server has {self._in_use} {self.what} already ({self.settings[0]}); retry shortly.",
                    {"in_progress": self._in_use, "limit": self.total, "reason": self.reason},
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


def reference_slots(total: int, per_tenant: int) -> Slots:
    """Reads of references (a remote end may take up to `reference_timeout_s`)."""
    return Slots(
        total,
        per_tenant,
        "references being read",
        "reference_fetches",
        ("SPOTLIGHT_MAX_REFERENCE_FETCHES", "SPOTLIGHT_MAX_REFERENCE_FETCHES_PER_TENANT"),
        ErrorCode.TOO_MANY_FETCHES,
    )


# Scoring parses a body of up to `max_score_body_bytes` and answers up to MAX_SCORE_VALUES weights:
# ~100-200 MB at its peak, so a few at a time keep the API's memory bounded.
SCORE_SLOTS_TOTAL = 4
SCORE_SLOTS_PER_TENANT = 2


def score_slots() -> Slots:
    return Slots(
        SCORE_SLOTS_TOTAL,
        SCORE_SLOTS_PER_TENANT,
        "score requests in progress",
        "score_requests",
        (f"at most {SCORE_SLOTS_TOTAL} at once", f"at most {SCORE_SLOTS_PER_TENANT} at once"),
        ErrorCode.TOO_MANY_REQUESTS,
    )


# A listing reads up to 1 000 jobs: a few per tenant at once, and never every thread of the server.
LIST_SLOTS_TOTAL = 16
LIST_SLOTS_PER_TENANT = 4


def list_slots() -> Slots:
    return Slots(
        LIST_SLOTS_TOTAL,
        LIST_SLOTS_PER_TENANT,
        "job listings in progress",
        "job_listings",
        (f"at most {LIST_SLOTS_TOTAL} at once", f"at most {LIST_SLOTS_PER_TENANT} at once"),
        ErrorCode.TOO_MANY_REQUESTS,
    )
