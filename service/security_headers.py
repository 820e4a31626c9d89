"""Security headers on every response the API sends, errors and 500s included.

The API answers JSON, `.npy` downloads, the job report (HTML made from callers' metadata) and the
API docs. None of them should be sniffed into another type, framed by another site, or allowed to
load anything from elsewhere, so every response carries:

- ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``,
  ``Cross-Origin-Resource-Policy: same-origin``;
- a ``Content-Security-Policy``: the strictest (``default-src 'none'``) unless the route set its own
  (the report allows inline styles and ``data:`` images only; the docs pages load the app's own
  scripts). Every policy forbids framing, ``<base>`` and form submissions.

The wrapper sits outside Starlette's whole middleware stack (see `install`), so even the 500
answers of its outermost error middleware carry the headers.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ALWAYS = "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
API_CSP = f"default-src 'none'; {_ALWAYS}"
# The report: inline <style> and plots as data: URIs; no scripts, no fonts, no remote images.
REPORT_CSP = f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; {_ALWAYS}"
# Swagger UI and ReDoc from the app's own /docs/assets; they style inline, ReDoc runs a blob: worker,
# and "try it out" calls the API itself.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    f"font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; {_ALWAYS}"
)

HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


class SecurityHeaders:
    """ASGI wrapper adding `HEADERS` (unless set) and a default CSP (unless the route set one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                headers.extend((k, v) for k, v in HEADERS if k not in present)
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", API_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: Any) -> None:
    """Wrap the app's whole middleware stack (built lazily by Starlette on the first request)."""
    build = app.build_middleware_stack

    def build_wrapped() -> ASGIApp:
        return SecurityHeaders(build())

    app.build_middleware_stack = build_wrapped
