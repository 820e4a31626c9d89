"""Unknown query parameters are a caller's mistake: 400, naming the ones this endpoint accepts.

FastAPI ignores query parameters a route does not declare, so ``GET /v1/jobs?stauts=failed`` would
silently list every job. This app-wide dependency compares the request's query names with the
route's declared ones (its own and its dependencies').
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from spotlight.errors import InvalidInput
from spotlight.protocol import ErrorCode


def _declared(dependant: Any) -> set[str]:
    names = {p.alias or p.name for p in getattr(dependant, "query_params", [])}
    for sub in getattr(dependant, "dependencies", []):
        names |= _declared(sub)
    return names


async def reject_unknown_query(request: Request) -> None:
    if not request.query_params:
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = _declared(dependant)
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f"Unknown query parameter(s) {unknown}; this endpoint accepts: {accepted}.",
            {"unknown": unknown, "allowed": sorted(allowed)},
        )
