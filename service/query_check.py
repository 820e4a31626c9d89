"""Unknown query parameters are a caller's mistake: 400, naming the ones this endpoint accepts.

FastAPI ignores query parameters a route does not declare, so ``GET /v1/jobs?stauts=failed`` would
silently list every job. This app-wide dependency compares the request's query names with the
route's declared ones (its own and its dependencies'). A parameter given twice is refused too,
unless it is a list (`tags=a&tags=b`): `status=a&status=b` would otherwise take the last silently.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from fastapi import Request

from spotlight.contract.errors import InvalidInput
from spotlight.contract.protocol import ErrorCode


def _declared(dependant: Any) -> set[str]:
    names = {p.alias or p.name for p in getattr(dependant, "query_params", [])}
    for sub in getattr(dependant, "dependencies", []):
        names |= _declared(sub)
    return names


def _lists(dependant: Any) -> set[str]:
    """The declared query parameters that take several values (annotated as a list)."""
    names = {p.alias or p.name for p in getattr(dependant, "query_params", []) if _is_list(p)}
    for sub in getattr(dependant, "dependencies", []):
        names |= _lists(sub)
    return names


def _is_list(param: Any) -> bool:
    annotation = getattr(getattr(param, "field_info", None), "annotation", None)
    kinds = [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = list(typing.get_args(annotation))
    return any(typing.get_origin(k) in (list, tuple, set) or k in (list, tuple, set) for k in kinds)


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
    keys = [k for k, _ in request.query_params.multi_items()]
    repeated = sorted({k for k in keys if keys.count(k) > 1} - _lists(dependant))
    if repeated:
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f"Query parameter {repeated[0]!r} is given more than once; it takes one value.",
            {"repeated": repeated},
        )
