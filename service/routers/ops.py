"""/healthz and /readyz: is the process up; can it reach Redis and write the store.

(/metrics, Prometheus text, is added by the metrics module, not here.)
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.errors import error_responses
from service.readiness import check_ready
from service.schemas import Health, Ready

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    """Answered on the event loop, never queued behind the thread pool that costly requests hold."""
    return Health()


@router.get(
    "/readyz", response_model=Ready, responses=error_responses(503), summary="Redis and the store are reachable"
)
def readyz(request: Request) -> Ready:
    state = request.app.state
    return Ready(checks=check_ready(state.redis, state.store, state.settings))
