"""Domain errors inside, HTTP at the edge: one table maps each error code to its status."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from service.errors import HTTP_STATUS, http_status
from spotlight.contract.errors import Conflict, DomainError, InvalidInput, LimitReached, NotFound, TooLarge
from spotlight.contract.protocol import ErrorCode
from spotlight.server.refs import ReferenceRefused, ReferenceTooLarge, ReferenceUnreadable

ROOT = Path(__file__).resolve().parents[2]
# Modules below the edge: they say what went wrong, never which HTTP status it is.
BELOW_THE_EDGE = [
    *sorted((ROOT / "spotlight").glob("*.py")),
    *sorted((ROOT / "service" / "ingest").glob("*.py")),
    ROOT / "service" / "job_registry.py",
    ROOT / "service" / "dataset_registry.py",
    ROOT / "service" / "job_results.py",
    ROOT / "service" / "scoring.py",
    ROOT / "service" / "comparing.py",
    ROOT / "service" / "idempotency.py",
    ROOT / "service" / "job_submission.py",
    ROOT / "service" / "dataset_source.py",
    ROOT / "service" / "dataset_deletion.py",
    ROOT / "service" / "readiness.py",
]


@pytest.mark.parametrize("path", BELOW_THE_EDGE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_http_status_below_the_edge(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("service.errors", "fastapi", "starlette.exceptions"):
            names = {a.name for a in node.names}
            assert not names & {"ApiError", "HTTPException"}, f"{path.name} imports {names}"
        if isinstance(node, (ast.Assign, ast.AnnAssign)):  # no `status_code = 404` on an exception class
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            assert not any(isinstance(t, ast.Name) and t.id == "status_code" for t in targets), path.name


def test_every_code_a_domain_error_can_carry_has_one_status() -> None:
    worker_only = {ErrorCode.WORKER_LOST, ErrorCode.JOB_TIMEOUT, ErrorCode.CANCELED, ErrorCode.SEARCH_FAILED}
    codes = {v for k, v in vars(ErrorCode).items() if k.isupper()}
    assert codes - worker_only == set(HTTP_STATUS)


@pytest.mark.parametrize(
    "error,status",
    [
        (InvalidInput(ErrorCode.SHAPE_MISMATCH, "x"), 400),
        (TooLarge(ErrorCode.TOO_MANY_ELEMENTS, "x"), 413),
        (NotFound(ErrorCode.JOB_NOT_FOUND, "x"), 404),
        (Conflict(ErrorCode.JOB_NOT_FINISHED, "x"), 409),
        (LimitReached(message="x", retry_after_s=10), 429),
        (ReferenceRefused("x", uri="file:///etc/passwd", reason="root"), 400),
        (ReferenceUnreadable("x", uri="s3://b/k", reason="not_found"), 400),
        (ReferenceTooLarge("x", uri="file:///d/big.npz", reason="size"), 413),
        (DomainError("no_such_code", "x"), 500),
    ],
)
def test_the_edge_answers_each_domain_error_with_its_codes_status(error: DomainError, status: int) -> None:
    assert http_status(error) == status
    assert error.to_error()["code"] == error.code


def test_the_edge_raises_domain_errors_too() -> None:
    """No route or dependency picks a status for an error code itself: HTTP_STATUS is the one table."""
    checked = 0
    for path in sorted((ROOT / "service").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                assert name not in {"ApiError", "HTTPException"}, (path.name, node.lineno)
                checked += 1
    assert checked > 100
