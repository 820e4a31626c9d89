"""Without API keys, answer only requests addressed to this machine by a name no one else controls.

A keyless API trusts whoever can reach it, which `spotlight up` limits to loopback. A web page can
still reach it through the browser: DNS rebinding points a name the attacker owns (`evil.example`)
at 127.0.0.1, and the page's requests then arrive with `Host: evil.example`. Rebinding needs a
public DNS name, so a keyless API refuses Host headers that are dotted names other than `localhost`
and `*.localhost`, unless the operator lists them in `SPOTLIGHT_TRUSTED_HOSTS`. IP literals and
single-label names (`127.0.0.1:8000`, `[::1]`, `myhost`) cannot be rebound by a stranger and pass.
With keys configured every request is authenticated and the Host header is not checked.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import error_response
from spotlight.contract.protocol import ErrorCode


def host_name(header: str) -> str:
    """The host of a Host header, without port and brackets, lowercased."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed(header: str, trusted: frozenset[str]) -> bool:
    host = host_name(header)
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return "." not in host.rstrip(".") or host in ("localhost",) or host.endswith(".localhost") or host in trusted


class HostGuard:
    def __init__(self, app: ASGIApp, trusted: list[str]) -> None:
        self.app = app
        self.trusted = frozenset(h.lower() for h in trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = next((v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"host"), "")
            if not allowed(header, self.trusted):
                response = error_response(
                    421,
                    ErrorCode.HOST_NOT_ALLOWED,
                    "This API has no keys, so it answers only requests addressed to localhost, an IP address, or a "
                    "host in SPOTLIGHT_TRUSTED_HOSTS (a guard against DNS rebinding); "
                    f"got Host {header[:100]!r}.",
                    {"host": header[:100]},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
