"""`SpotlightError`, what the client raises for every error a caller can act on.

Its own module (pure Python: no httpx, no numpy) so the shared column rules (spotlight/contract/columns.py)
can raise a subclass of it too: a caller's `except SpotlightError` catches a DataFrame whose columns
say nothing about where the embeddings are, as it catches the server's 400 for the same mistake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import httpx


class SpotlightError(Exception):
    """An error answer (or no answer) from the service.

    Attributes
    ----------
    code : str
        The server's ``error.code`` (``validation_error``, ``job_not_finished``, ...), or
        ``connection_error`` when the server could not be reached, or ``http_<status>`` when the
        answer was not the contract's error JSON (e.g. from a proxy in front of the service).
    message : str
        What went wrong and how to fix it, as the server wrote it.
    status_code : int | None
        HTTP status, None when no answer came.
    details : dict
        The server's ``error.details``.
    response : httpx.Response | None
        The raw answer, for anything else.
    """

    def __init__(
        self,
        code: str,
        message: str,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(f"[{code}] {message}" + (f" (HTTP {status_code})" if status_code else ""))
        self.code = code
        self.message = message
        self.status_code = status_code
        self.details = details or {}
        self.response = response

    @classmethod
    def from_response(cls, response: httpx.Response) -> SpotlightError:
        try:
            body = response.json()
            err = body["error"]
            return cls(
                str(err["code"]),
                str(err.get("message", "")),
                response.status_code,
                dict(err.get("details") or {}),
                response,
            )
        except (ValueError, KeyError, TypeError):
            text = response.text[:500] if response.content else response.reason_phrase
            return cls(f"http_{response.status_code}", text, response.status_code, {}, response)
