"""GET /metrics: Prometheus text, computed at scrape time from Redis so any API process answers alike.

Nothing here is counted in the API process's memory: with several API processes (or machines)
behind a load balancer, per-process counters would differ from scrape to scrape. Instead:

- ``spotlight_jobs{status}`` (gauge): jobs RQ holds for ``settings.queue_name`` right now, by the
  contract's status. queued = the queue + deferred + scheduled; running = the started registry (less jobs
  whose worker has already written their end);
  finished / failed / canceled = the finished, failed and canceled registries (canceled: those whose
  job hash still exists, as RQ never prunes that registry) — a job our task
  ended as failed or canceled sits in RQ's *finished* registry (the task returned normally), so
  those are split by the status the worker wrote in the job's meta (one pipelined read per scrape).
  Jobs leave the registries when their results expire (``result_ttl_s``), so this is "jobs on
  record", not an all-time count; ``spotlight_jobs_ended_total`` is the all-time counter.
- ``spotlight_job_duration_seconds{status}`` and ``spotlight_job_queue_wait_seconds`` (histograms):
  recorded by the worker into Redis when a job ends (spotlight/server/jobstats.py explains why Redis rather
  than prometheus_client's multiprocess mode), turned into buckets here.
- ``spotlight_queue_depth`` (gauge): jobs waiting in the queue.
- ``spotlight_workers{state}`` and ``spotlight_worker_info{worker, hostname, state, device}``: RQ's
  registered workers of the queue; the device is what the worker recorded
  (jobstats.record_worker_device), else the device of its current job, else "unknown".
- ``spotlight_redis_up``: 0 when Redis could not be read (the other series are then absent).
- ``spotlight_http_requests_total{method, route, status_class}`` and
  ``spotlight_http_request_duration_seconds{…}``: every API process's requests by route template
  (service/http_metrics.py: counted in memory, added to Redis about once a second).

Reads are side-effect free: registries are counted with ZCARD / ZCOUNT, never with RQ's
``count`` (which runs cleanup and could fail abandoned jobs from inside a scrape).

The route is not in the OpenAPI document (it is for Prometheus, not for API callers) and is open:
put it behind the network's own access rules when the operator wants it private.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString
from redis import Redis
from rq import Queue, Worker
from rq.job import Job
from rq.worker import BaseWorker

from service.http_metrics import HttpCollector
from spotlight.contract.jobstate import JobStatus, status_from
from spotlight.contract.protocol import META_DEVICE, redis_text
from spotlight.server import jobstats
from spotlight.server.keys import Keys

log = logging.getLogger("spotlight.api.metrics")

_META_CHUNK = 1000

metrics_router = APIRouter(tags=["operations"])


class SpotlightCollector:
    """A prometheus_client collector that reads everything from Redis on each scrape."""

    def __init__(self, conn: Redis | None, keys: Keys) -> None:
        self.conn = conn
        self.keys = keys
        self.queue_name = keys.rq_queue

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("spotlight_redis_up", "1 when /metrics could read Redis, else 0.")
        if self.conn is None:
            up.add_metric([], 0)
            yield up
            return
        try:
            metrics = list(self._collect(self.conn))
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when Redis is down
            log.warning("metrics: cannot read Redis: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _collect(self, conn: Redis) -> Iterator[Metric]:
        queue = Queue(self.queue_name, connection=conn)
        large = Queue(self.keys.large_queue, connection=conn)  # both lanes are this queue's jobs
        counts = job_counts(conn, queue)
        for status, n in job_counts(conn, large).items():
            counts[status] = counts.get(status, 0) + n
        jobs = GaugeMetricFamily(
            "spotlight_jobs", "Jobs on record by status (until their results expire).", labels=["status"]
        )
        for status in JobStatus:
            jobs.add_metric([status.value], counts[status])
        yield jobs

        depth = GaugeMetricFamily("spotlight_queue_depth", "Jobs waiting in the queue for a worker.")
        depth.add_metric([], conn.llen(queue.key) + conn.llen(large.key))
        yield depth

        ended = CounterMetricFamily(
            "spotlight_jobs_ended", "Jobs that ended, by status, since the stats began.", labels=["status"]
        )
        for label, n in sorted(jobstats.read_ended(conn, self.keys).items()):
            ended.add_metric([label], n)
        yield ended

        hists = jobstats.read_histograms(conn, self.keys)
        duration = HistogramMetricFamily(
            "spotlight_job_duration_seconds", "Time from a job's start to its end on a worker.", labels=["status"]
        )
        for label, h in sorted(hists["job_duration_seconds"].items()):
            duration.add_metric([label], _buckets(h), sum_value=h["sum"])
        yield duration
        wait = HistogramMetricFamily(
            "spotlight_job_queue_wait_seconds", "Time a job waited in the queue before a worker started it."
        )
        for h in hists["job_queue_wait_seconds"].values():
            wait.add_metric([], _buckets(h), sum_value=h["sum"])
        yield wait

        states = GaugeMetricFamily("spotlight_workers", "Workers listening on the queue, by state.", labels=["state"])
        info = GaugeMetricFamily(
            "spotlight_worker_info",
            "One series per worker: where it runs and on what device.",
            labels=["worker", "hostname", "state", "device"],
        )
        by_state: dict[str, int] = {}
        for worker in Worker.all(queue=queue):
            state = str(worker.get_state() or "unknown")
            by_state[state] = by_state.get(state, 0) + 1
            info.add_metric([worker.name, worker.hostname or "", state, _worker_device(conn, self.keys, worker)], 1)
        for state, n in sorted(by_state.items()):
            states.add_metric([state], n)
        yield states
        yield info
        yield from HttpCollector(conn, self.keys).collect()


def job_counts(conn: Redis, queue: Queue) -> dict[JobStatus, int]:
    """Jobs by the contract's status, read without side effects (see the module docstring)."""
    now = time.time()
    counts = dict.fromkeys(JobStatus, 0)
    counts[JobStatus.QUEUED] = (
        int(conn.llen(queue.key))
        + int(conn.zcard(queue.deferred_job_registry.key))
        + int(conn.zcard(queue.scheduled_job_registry.key))
    )
    # started entries are "job_id:execution_id": one job may briefly have two executions. A job whose
    # worker has already written how it ended (and is now delivering its callback) counts as that,
    # as the API's job view says.
    started = sorted({redis_text(m).split(":", 1)[0] for m in conn.zrange(queue.started_job_registry.key, 0, -1)})
    for status in _statuses(conn, queue, started, "started"):
        counts[status] += 1
    live = f"({now}"  # registry scores are expiry times; an entry past its expiry is on its way out
    counts[JobStatus.FAILED] += int(conn.zcount(queue.failed_job_registry.key, live, "+inf"))
    # RQ scores canceled entries with the cancel time and never cleans that registry: a canceled
    # job is on record while its job hash exists.
    canceled = [redis_text(m) for m in conn.zrange(queue.canceled_job_registry.key, 0, -1)]
    counts[JobStatus.CANCELED] += sum(1 for exists in _exists(conn, canceled) if exists)
    finished_ids = [redis_text(m) for m in conn.zrangebyscore(queue.finished_job_registry.key, live, "+inf")]
    for status in _statuses(conn, queue, finished_ids, "finished"):
        counts[status] += 1
    return counts


def _exists(conn: Redis, job_ids: list[str]) -> Iterator[bool]:
    for start in range(0, len(job_ids), _META_CHUNK):
        pipe = conn.pipeline(transaction=False)
        for job_id in job_ids[start : start + _META_CHUNK]:
            pipe.exists(Job.key_for(job_id))
        yield from (bool(x) for x in pipe.execute())


def _statuses(conn: Redis, queue: Queue, job_ids: list[str], rq_status: str) -> Iterator[JobStatus]:
    """The contract's status of each job of one RQ registry (`rq_status`), by spotlight/contract/jobstate.py's rule."""
    for start in range(0, len(job_ids), _META_CHUNK):
        pipe = conn.pipeline(transaction=False)
        for job_id in job_ids[start : start + _META_CHUNK]:
            pipe.hget(Job.key_for(job_id), "meta")
        for raw in pipe.execute():
            meta = None
            if raw:
                try:
                    meta = queue.serializer.loads(raw)
                except Exception:  # noqa: BLE001 - a job we cannot read still counts, by RQ's status
                    meta = None
            yield status_from(rq_status, meta if isinstance(meta, dict) else None)


def _worker_device(conn: Redis, keys: Keys, worker: BaseWorker) -> str:
    device = jobstats.read_worker_device(conn, keys, worker.name)
    if device:
        return device
    try:
        job = worker.get_current_job()
        if job is not None and job.meta.get(META_DEVICE):
            return str(job.meta[META_DEVICE])
    except Exception:  # noqa: BLE001 - the job may have just expired
        pass
    return "unknown"


def _buckets(h: dict[str, Any]) -> list[tuple[str, float]]:
    """Cumulative buckets with `le` written as prometheus_client writes its own ("30.0", "+Inf")."""
    return [(floatToGoString(bound), float(c)) for bound, c in h["buckets"]]


def render_metrics(conn: Redis | None, keys: Keys) -> bytes:
    """The Prometheus text exposition of everything above (a fresh registry per call: no global state)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SpotlightCollector(conn, keys))
    return generate_latest(registry)


@metrics_router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    state = request.app.state
    if hasattr(state, "http_stats"):  # this process's last second of requests, so the scrape includes them
        state.http_stats.flush(state.redis, Keys.of(state.settings))
    return Response(render_metrics(state.redis, Keys.of(state.settings)), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """Called by service.app.create_app."""
    app.include_router(metrics_router)
