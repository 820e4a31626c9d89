"""Request body limits enforced while the body streams in, before it is stored anywhere.

A dataset upload may be as large as `max_upload_bytes` (plus the multipart framing); every other
body (JSON with inline arrays, job submissions) as large as `max_inline_bytes`. A declared
Content-Length above the limit is refused before a byte is read; a chunked body is cut off the
moment it passes the limit. Either way the caller gets 413 `payload_too_large`.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge

# Room for multipart boundaries and part headers on top of the upload limit.
MULTIPART_SLACK = 1024 * 1024


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, upload_limit: int, inline_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.inline_limit = inline_limit

    def limit_for(self, scope: Scope) -> int:
        headers = dict(scope.get("headers") or [])
        ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
        if scope.get("path", "").rstrip("/") == "/v1/datasets" and ctype.startswith("multipart/"):
            return self.upload_limit + MULTIPART_SLACK
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
