"""Errors the framework raises by itself still come in the contract's JSON; ops endpoints answer."""

from __future__ import annotations

import json
import logging

from service.request_log import JsonFormatter
from tests.service.conftest import LiveApi


def test_framework_errors_use_the_error_format(api: LiveApi) -> None:
    with api.client() as c:
        cases = [
            (c.get("/v1/nothing"), 404, "not_found"),
            (c.put("/v1/datasets"), 405, "method_not_allowed"),
            (c.post("/v1/jobs", content=b"{oops", headers={"content-type": "application/json"}), 400, "malformed_json"),
            (c.post("/v1/jobs", json=[1, 2]), 400, "validation_error"),
            (c.get("/v1/jobs/job_nope"), 404, "job_not_found"),
            (c.get("/v1/datasets/ds_nope"), 404, "dataset_not_found"),
            (c.get("/v1/datasets/whatever"), 404, "dataset_not_found"),
            (c.get("/v1/jobs", params={"limit": "x"}), 400, "validation_error"),
        ]
        for r, status, code in cases:
            assert r.status_code == status, r.text
            body = r.json()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
            assert body["error"]["code"] == code
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "store": "ok"}
        assert c.get("/healthz", headers={"X-Request-ID": "abc-1"}).headers["x-request-id"] == "abc-1"
        assert len(c.get("/healthz").headers["x-request-id"]) >= 8


def test_readyz_is_503_when_redis_is_unreachable(make_api) -> None:
    from spotlight.ops.redis_server import free_port

    api = make_api(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with api.client() as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
        assert r.json()["error"]["details"]["checks"]["redis"].startswith("error")
        r = c.get("/v1/jobs")
        assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
        assert c.get("/healthz").status_code == 200


def test_request_log_lines_are_json_with_the_request_fields(api: LiveApi) -> None:
    logger = logging.getLogger("spotlight.api.access")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with api.client() as c:
            c.get("/v1/jobs/job_x", headers={"X-Request-ID": "log-check"})
    finally:
        logger.removeHandler(handler)
    line = json.loads(JsonFormatter().format(records[-1]))
    assert line["request_id"] == "log-check" and line["level"] == "info"
    assert line["msg"] == "request" and line["method"] == "GET" and line["path"] == "/v1/jobs/job_x"
    assert line["status"] == 404 and line["duration_ms"] >= 0 and line["tenant"] == "default"
