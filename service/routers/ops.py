"""/healthz and /readyz: is the process up; can it reach Redis and write the store.

(/metrics, Prometheus text, is added by the metrics module, not here.)
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.errors import error_responses
from service.schemas import Health, Ready
from spotlight.errors import Unavailable
from spotlight.keys import Keys
from spotlight.protocol import ErrorCode
from spotlight.store import StoreError

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    """Answered on the event loop, never queued behind the thread pool that costly requests hold."""
    return Health()


@router.get(
    "/readyz", response_model=Ready, responses=error_responses(503), summary="Redis and the store are reachable"
)
def readyz(request: Request) -> Ready:
    checks: dict[str, str] = {}
    r = request.app.state.redis
    probe = Keys.of(request.app.state.settings).ready_probe()
    try:
        # a write, not only PING: a Redis whose disk is full answers PING and refuses writes (MISCONF)
        checks["redis"] = "ok" if r is not None and r.set(probe, "1", ex=60) else "not configured"
    except Exception as exc:  # noqa: BLE001 - any failure to reach Redis means not ready
        checks["redis"] = f"error: {type(exc).__name__}"
    try:
        request.app.state.store.check_writable()
        checks["store"] = "ok"
    except (StoreError, OSError) as exc:
        checks["store"] = f"error: {type(exc).__name__}"
    if any(v != "ok" for v in checks.values()):
        raise Unavailable(
            ErrorCode.UNAVAILABLE,
            "Not ready: " + ", ".join(f"{k} {v}" for k, v in checks.items()),
            {"checks": checks},
        )
    return Ready(checks=checks)
