"""The shared JSON log format: one object per line, extra fields and the request id on top level."""

from __future__ import annotations

import json
import logging

import pytest

from spotlight.contract.logs import JsonFormatter, log_setup_from_env, request_id_var


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


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, ("INFO", True)),
        ({"SPOTLIGHT_LOG_LEVEL": "WARNING", "SPOTLIGHT_LOG_JSON": "false"}, ("WARNING", False)),
        ({"SPOTLIGHT_LOG_JSON": "0"}, ("INFO", False)),
    ],
)
def test_the_client_commands_read_their_log_setup_as_settings_does(
    env: dict[str, str], expected: tuple[str, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's commands read no server Settings; the two variables they use mean the same there."""
    from spotlight.server.settings import Settings

    for name in ("SPOTLIGHT_LOG_LEVEL", "SPOTLIGHT_LOG_JSON"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert log_setup_from_env() == expected
    settings = Settings()
    assert (settings.log_level, settings.log_json) == expected


def test_a_log_json_that_is_no_boolean_stops_the_client_command_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOTLIGHT_LOG_JSON", "maybe")
    with pytest.raises(SystemExit, match="SPOTLIGHT_LOG_JSON='maybe'"):
        log_setup_from_env()
