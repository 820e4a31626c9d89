"""Per-route HTTP metrics: request counts and latency histograms by method, route and status class.

Like every series of /metrics (service/metrics.py), these are kept in Redis so that all API
processes behind one address add up and any of them answers a scrape alike. A request is counted
in process memory first (no Redis round trip on the request path) and the counts are added to
Redis about once a second by a background thread, and right before a scrape; a process that dies
loses at most its last second. The route label is the route's template (``/v1/jobs/{job_id}``),
never the raw path, so ids cannot explode the series count; a path no route matched is ``unmatched``.

Layout: ``spotlight:stats:<queue>:http`` is the set of series; each series is a hash
``spotlight:stats:<queue>:http:<method> <route> <class>`` with ``b<i>`` (requests in bucket i, not
cumulative), ``sum`` and ``count`` — the same shape spotlight/server/jobstats.py uses for job timings.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from redis import Redis
from starlette.types import Scope

from service.request_log import RequestObserver
from spotlight.server.keys import Keys

log = logging.getLogger("spotlight.api.http_metrics")

BOUNDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
FLUSH_INTERVAL_S = 1.0


class HttpStats:
    """Counts of one API process not yet added to Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, list[float]] = {}  # series -> [b0..bN, sum, count]
        self._thread: threading.Thread | None = None

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        series = f"{method} {route} {status // 100}xx"
        i = bisect.bisect_left(BOUNDS, seconds)
        with self._lock:
            row = self._pending.setdefault(series, [0.0] * (len(BOUNDS) + 3))
            row[i] += 1
            row[-2] += seconds
            row[-1] += 1

    def flush(self, conn: Redis | None, keys: Keys) -> None:
        """Add the pending counts to Redis; on failure keep them for the next flush."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending or conn is None:
            return
        try:
            pipe = conn.pipeline(transaction=False)
            for series, row in pending.items():
                key = keys.http_series(series)
                pipe.sadd(keys.http_index(), series)
                for i, n in enumerate(row[: len(BOUNDS) + 1]):
                    if n:
                        pipe.hincrby(key, f"b{i}", int(n))
                pipe.hincrbyfloat(key, "sum", row[-2])
                pipe.hincrby(key, "count", int(row[-1]))
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis down: keep the counts, try again later
            log.debug("could not record HTTP metrics: %s", exc)
            with self._lock:
                for series, row in pending.items():
                    mine = self._pending.setdefault(series, [0.0] * len(row))
                    for j, v in enumerate(row):
                        mine[j] += v

    def start_flusher(self, state: Any) -> None:
        """A daemon thread adding the counts to Redis every FLUSH_INTERVAL_S (started on first use)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None:
                return

            def loop() -> None:
                while True:
                    time.sleep(FLUSH_INTERVAL_S)
                    self.flush(getattr(state, "redis", None), Keys.of(state.settings))

            self._thread = threading.Thread(target=loop, name="http-metrics-flush", daemon=True)
            self._thread.start()


def http_observer(state: Any) -> RequestObserver:
    """Counts each HTTP request under its route template and status class (measured by the access log)."""

    def observe(scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        stats: HttpStats = state.http_stats
        stats.observe(str(scope.get("method", "")), route, status, seconds)
        stats.start_flusher(state)

    return observe


class HttpCollector:
    """Reads the HTTP series from Redis at scrape time."""

    def __init__(self, conn: Redis, keys: Keys) -> None:
        self.conn = conn
        self.keys = keys

    def collect(self) -> Iterator[Metric]:
        labels = ["method", "route", "status_class"]
        requests = CounterMetricFamily(
            "spotlight_http_requests", "HTTP requests answered, by route and status class.", labels=labels
        )
        latency = HistogramMetricFamily(
            "spotlight_http_request_duration_seconds",
            "Time to answer an HTTP request, by route and status class.",
            labels=labels,
        )
        members = sorted(m.decode() if isinstance(m, bytes) else m for m in self.conn.smembers(self.keys.http_index()))
        for series in members:
            raw = {
                (k.decode() if isinstance(k, bytes) else k): v
                for k, v in self.conn.hgetall(self.keys.http_series(series)).items()
            }
            parts = series.rsplit(" ", 1)
            method, route = parts[0].split(" ", 1)
            label_values = [method, route, parts[1]]
            running, buckets = 0, []
            for i, bound in enumerate((*BOUNDS, math.inf)):
                running += int(raw.get(f"b{i}", 0))
                buckets.append((floatToGoString(bound), float(running)))
            requests.add_metric(label_values, float(raw.get("count", 0)))
            latency.add_metric(label_values, buckets, sum_value=float(raw.get("sum", 0.0)))
        yield requests
        yield latency
