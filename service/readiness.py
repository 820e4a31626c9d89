"""Is this API process ready to serve: can it write to Redis and to the store.

A write each, not a ping: a Redis whose disk is full answers PING and refuses writes (MISCONF), and a
read-only store mount lists its files fine. `Unavailable` (503 at the edge) names what failed.
"""

from __future__ import annotations

import redis

from spotlight.contract.errors import Unavailable
from spotlight.contract.protocol import ErrorCode
from spotlight.server.keys import Keys
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore, StoreError


def check_ready(r: redis.Redis | None, store: ArtifactStore, settings: Settings) -> dict[str, str]:
    """Each dependency's state, "ok" for all; else Unavailable with the same checks in its details."""
    checks: dict[str, str] = {}
    try:
        checks["redis"] = (
            "ok" if r is not None and r.set(Keys.of(settings).ready_probe(), "1", ex=60) else "not configured"
        )
    except Exception as exc:  # noqa: BLE001 - any failure to reach Redis means not ready
        checks["redis"] = f"error: {type(exc).__name__}"
    try:
        store.check_writable()
        checks["store"] = "ok"
    except (StoreError, OSError) as exc:
        checks["store"] = f"error: {type(exc).__name__}"
    if any(v != "ok" for v in checks.values()):
        raise Unavailable(
            ErrorCode.UNAVAILABLE,
            "Not ready: " + ", ".join(f"{k} {v}" for k, v in checks.items()),
            {"checks": checks},
        )
    return checks
