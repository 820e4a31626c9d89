"""Job timings and worker devices, kept in Redis so every API process exports the same numbers.

Why Redis and not prometheus_client's multiprocess mode: multiprocess mode merges the metric files
of processes that share one directory on one host, but here the observations are made by workers
(often on other machines, with GPUs) and scraped from any of several API processes. Redis already
joins them all, so the worker records each finished job here and `/metrics` (service/metrics.py)
turns the records into Prometheus histograms at scrape time.

Layout (all under ``spotlight:stats:<queue>:``), each write one MULTI/EXEC so a scrape never sees
a half-recorded job:

- ``hist:<metric>:<label>`` hash: ``b<i>`` = jobs whose value fell in bucket i (not cumulative;
  bucket i is ``(BOUNDS[i-1], BOUNDS[i]]``, the last is +Inf), ``sum`` and ``count``;
- ``ended`` hash: status -> number of jobs that ended so (a counter);
- ``worker:<name>`` hash: the worker's device and host, expiring a day after its last report.

Needs redis only (the worker and the API both import it; never torch, never FastAPI).
"""

from __future__ import annotations

import bisect
import math
import socket
import time
from typing import Any

from redis import Redis

from spotlight.contract.protocol import redis_text
from spotlight.server.keys import Keys

# Bucket upper bounds in seconds. Searches run from seconds (small data) to hours (big data, CPU).
DURATION_BOUNDS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
WAIT_BOUNDS: tuple[float, ...] = (0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
HISTOGRAMS: dict[str, tuple[float, ...]] = {
    "job_duration_seconds": DURATION_BOUNDS,
    "job_queue_wait_seconds": WAIT_BOUNDS,
}
WORKER_TTL_S = 24 * 3600


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    return bisect.bisect_left(bounds, value)  # first bound >= value; len(bounds) means +Inf


def record_job_end(
    conn: Redis,
    keys: Keys,
    status: str,
    duration_s: float | None,
    queue_wait_s: float | None,
) -> None:
    """Record one ended job: its status, how long it ran, how long it waited in the queue.

    Call once per job from the worker when it ends (finished, failed or canceled). A duration or
    wait that is unknown (None) or not finite is left out of its histogram; negative ones (clock
    skew between machines) count as 0.
    """
    pipe = conn.pipeline(transaction=True)
    pipe.hincrby(keys.stats_ended(), status, 1)
    for metric, label, value in (
        ("job_duration_seconds", status, duration_s),
        ("job_queue_wait_seconds", "all", queue_wait_s),
    ):
        if value is None or not math.isfinite(float(value)):
            continue
        v = max(0.0, float(value))
        key = keys.stats_hist(metric, label)
        pipe.hincrby(key, f"b{_bucket(HISTOGRAMS[metric], v)}", 1)
        pipe.hincrbyfloat(key, "sum", v)
        pipe.hincrby(key, "count", 1)
    pipe.execute()


def record_worker_device(conn: Redis, keys: Keys, worker_name: str, device: str) -> None:
    """Remember which device a worker computes on (e.g. ``cuda:0``, ``cpu``), for /metrics."""
    key = keys.stats_worker(worker_name)
    pipe = conn.pipeline(transaction=True)
    pipe.hset(key, mapping={"device": device, "host": socket.gethostname(), "at": f"{time.time():.3f}"})
    pipe.expire(key, WORKER_TTL_S)
    pipe.execute()


def read_histograms(conn: Redis, keys: Keys) -> dict[str, dict[str, dict[str, Any]]]:
    """{metric: {label: {"buckets": [(upper_bound, cumulative_count), ..., (inf, count)], "sum", "count"}}}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for metric, bounds in HISTOGRAMS.items():
        pattern = keys.stats_hist(metric, "*")
        found = sorted(redis_text(k) for k in conn.scan_iter(match=pattern, count=100))
        out[metric] = {}
        for key in found:
            raw = {redis_text(k): v for k, v in conn.hgetall(key).items()}
            counts = [int(raw.get(f"b{i}", 0)) for i in range(len(bounds) + 1)]
            cumulative, running = [], 0
            for bound, c in zip((*bounds, math.inf), counts, strict=True):
                running += c
                cumulative.append((bound, running))
            out[metric][keys.metric_and_label_of_stats_hist(key)[1]] = {
                "buckets": cumulative,
                "sum": float(raw.get("sum", 0.0)),
                "count": int(raw.get("count", 0)),
            }
    return out


def read_ended(conn: Redis, keys: Keys) -> dict[str, int]:
    return {redis_text(k): int(v) for k, v in conn.hgetall(keys.stats_ended()).items()}


def read_worker_device(conn: Redis, keys: Keys, worker_name: str) -> str | None:
    value = conn.hget(keys.stats_worker(worker_name), "device")
    return None if value is None else redis_text(value)
