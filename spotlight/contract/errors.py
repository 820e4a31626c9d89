"""Domain errors: what went wrong, in the service's own terms, with the contract's stable `code`.

Registries, ingestion and reference checks raise these; they know nothing of HTTP. The API's edge
(service/errors.py) maps each `code` to one HTTP status and writes the contract's error JSON, so a
code means the same status wherever it is raised. The classes say what kind of mistake it is, for
code that wants to catch one kind (an expired job is a `NotFound`); the `code` says which.

    raise NotFound(ErrorCode.JOB_NOT_FOUND, f"No job {job_id!r} for this caller.", {"job": job_id})
"""

from __future__ import annotations

from typing import Any

from spotlight.contract.protocol import ErrorCode


class DomainError(Exception):
    """An error a caller can act on: `code` (an `ErrorCode`), a message saying how, and details.

    `retry_after_s` is set when waiting is the remedy (a full queue, a store briefly away).
    """

    default_code: str = ErrorCode.INTERNAL

    def __init__(
        self,
        code: str | None = None,
        message: str = "",
        details: dict[str, Any] | None = None,
        *,
        retry_after_s: int | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.message = message or self.code
        self.details = dict(details or {})
        self.retry_after_s = retry_after_s
        super().__init__(self.message)

    def to_error(self) -> dict[str, Any]:
        """The contract's error object (without the outer ``{"error": ...}``)."""
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInput(DomainError):
    """The caller's data or request is wrong (bad file, shape, value, reference)."""

    default_code = ErrorCode.VALIDATION


class TooLarge(InvalidInput):
    """The input is larger than the operator allows."""

    default_code = ErrorCode.TOO_LARGE


class NotFound(DomainError):
    """No such thing for this caller (or it expired)."""

    default_code = ErrorCode.NOT_FOUND


class Conflict(DomainError):
    """The request contradicts the resource's state (a job not finished, a key reused)."""


class LimitReached(DomainError):
    """The caller has as much running as allowed; `retry_after_s` says when to try again."""

    default_code = ErrorCode.TOO_MANY_JOBS


class Gone(DomainError):
    """It existed, and was deleted for good."""

    default_code = ErrorCode.DATASET_GONE


class Unauthorized(DomainError):
    """No caller could be identified (a missing or unknown API key)."""

    default_code = ErrorCode.UNAUTHORIZED


class Unavailable(DomainError):
    """A dependency (Redis, the store) or a shared capacity is not available now; try again later."""

    default_code = ErrorCode.UNAVAILABLE
