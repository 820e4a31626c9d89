"""Per-route HTTP metrics in /metrics: counts and latency by route template and status class, summed over API processes."""

from __future__ import annotations

from pathlib import Path

from spotlight.server.keys import Keys
from tests.ux.test_metrics import _app, scrape, value


def test_requests_are_counted_by_route_template_and_status_class_across_processes(
    redis_url: str, tmp_path: Path
) -> None:
    a, b = _app(redis_url, tmp_path / "a"), _app(redis_url, tmp_path / "b")
    for _ in range(3):
        assert a.get("/healthz").status_code == 200
    assert b.get("/healthz").status_code == 200
    assert a.get("/v1/jobs/job_nope").status_code == 404
    assert b.get("/v1/jobs/job_other").status_code == 404
    assert a.get("/no/such/path").status_code == 404
    # b's counts reach Redis within about a second; flush them now instead of waiting (a flushes on scrape)
    b.app.state.http_stats.flush(b.app.state.redis, Keys.of(b.app.state.settings))
    m = scrape(a)
    reqs = m["spotlight_http_requests"]
    assert value(reqs, "spotlight_http_requests_total", method="GET", route="/healthz", status_class="2xx") == 4
    # one series for every job id: the route template, never the raw path
    assert (
        value(reqs, "spotlight_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status_class="4xx") == 2
    )
    assert value(reqs, "spotlight_http_requests_total", method="GET", route="unmatched", status_class="4xx") == 1
    lat = m["spotlight_http_request_duration_seconds"]
    assert (
        value(lat, "spotlight_http_request_duration_seconds_count", method="GET", route="/healthz", status_class="2xx")
        == 4
    )
    assert (
        value(
            lat,
            "spotlight_http_request_duration_seconds_bucket",
            method="GET",
            route="/healthz",
            status_class="2xx",
            le="+Inf",
        )
        == 4
    )
    assert not [s for s in reqs if "job_nope" in str(s.labels)]
