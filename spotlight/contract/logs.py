"""One log format for every process (API, worker, CLI): one JSON object per line on stderr.

Shared here, outside `service/` and `worker/`, so both write the same shape. Fields passed as
`extra={...}` become top-level keys; the current request id (a contextvar the API sets per
request) is added to every line written while that request runs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; `extra={...}` fields become top-level keys."""

    _STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        for key, value in vars(record).items():
            if key not in self._STD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it), not the one at setup."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: str = "INFO", as_json: bool = True, *, root: bool = False) -> None:
    """Set up logging for this process; idempotent, safe to call once per app or command.

    ``root=True`` (a process the `spotlight` command runs: API, worker, `up`, `submit`): one
    handler on the root logger, so RQ's and uvicorn's lines come out in the same format and RQ
    adds no handler of its own. ``root=False`` (an app built inside another program, e.g. a test):
    a handler on the `spotlight` logger tree only; when the root logger already has handlers,
    records reach them by propagation and no second handler is added, so no line is written twice.
    """
    formatter = JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger("spotlight")
    logger.setLevel(level.upper())
    if root:
        handler = _StderrHandler()
        handler.setFormatter(formatter)
        top = logging.getLogger()
        top.handlers[:] = [handler]
        top.setLevel(level.upper())
        logger.handlers[:] = [h for h in logger.handlers if not isinstance(h, _StderrHandler)]
        return
    if logging.getLogger().handlers and not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        return
    for h in logger.handlers:
        if isinstance(h, _StderrHandler):
            h.setFormatter(formatter)
            return
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    logger.addHandler(handler)


def log_setup_from_env() -> tuple[str, bool]:
    """(level, as_json) from SPOTLIGHT_LOG_LEVEL and SPOTLIGHT_LOG_JSON, read as the server's Settings
    reads them, for the client's commands, which must not depend on the server's Settings."""
    from pydantic import TypeAdapter, ValidationError

    level = os.environ.get("SPOTLIGHT_LOG_LEVEL", "INFO")
    try:
        as_json = TypeAdapter(bool).validate_python(os.environ.get("SPOTLIGHT_LOG_JSON", "true"))
    except ValidationError:
        raise SystemExit(
            f"SPOTLIGHT_LOG_JSON={os.environ['SPOTLIGHT_LOG_JSON']!r} is not a boolean (true/false, 1/0)"
        ) from None
    return level, as_json
