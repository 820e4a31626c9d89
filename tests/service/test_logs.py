"""The shared JSON log format: one object per line, extra fields and the request id on top level."""

from __future__ import annotations

import json
import logging

from spotlight.contract.logs import JsonFormatter, request_id_var


def test_json_line_carries_extra_fields_and_request_id() -> None:
    record = logging.LogRecord("spotlight.api", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.status = 201
    token = request_id_var.set("rid-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    out = json.loads(line)
    assert "\n" not in line
    assert out["msg"] == "hello you" and out["status"] == 201 and out["request_id"] == "rid-1"
    assert out["level"] == "info" and out["logger"] == "spotlight.api" and out["ts"].endswith("+00:00")
