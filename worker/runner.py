"""The worker process: an RQ worker on the search queue, the reports queue and/or the callbacks queue, configured from Settings.

Searches first
--------------
A worker serving searches and reports (or callbacks) takes a waiting search before any report or
delivery: its two search lanes take turns (RQ's round robin), and the reports and callbacks queues
take turns among themselves only when both lanes are empty (`SpotlightWorker.reorder_queues`). Why:
with RQ's plain round robin over all its queues, a worker that had just finished a search turned to
the reports queue next, so the next search waited for the previous job's report (0.9-2.6 s at
2 000 x 128, as long as the search itself; docs/engine.md, speed). A report already rendering is
still waited for; hence `spotlight up`, docker-compose and deploy/ run a report worker of their own
(``--reports-only``) and keep the search workers off the reports queue (``--no-reports``). On one
machine the report worker runs at a lower CPU priority (`REPORT_NICENESS`), so a report rendering
beside a search takes what the search leaves.

CUDA and fork
-------------
RQ's default Worker forks a work-horse per job. A CUDA context does not survive fork(): once the
parent has initialised CUDA, every child that touches it fails. So the parent never touches
CUDA. It does import torch (and the engine, the task's other steps and the report's matplotlib
modules) once at start-up, *without* initialising CUDA (`torch.cuda.is_initialized()` is checked to
stay False), so each horse inherits the imported modules through fork instead of paying several
seconds of `import torch` and matplotlib per job. The horse
then picks the device (``params.device``, "auto" = CUDA when present), initialises CUDA in its
own process, and exits when the job ends, which also hands all its GPU memory back.

Workers that die
----------------
RQ's own machinery handles abandoned jobs; this module only configures it (see
spotlight/server/jobqueue.py for what ends up in the job's meta):

- `job_monitoring_interval` = ``worker_heartbeat_s``: how often a busy worker renews its job's
  entry in the StartedJobRegistry.
- `get_heartbeat_ttl` adds ``worker_lost_after_s`` (RQ hard-codes 60 s) to that interval: the
  silence after which the job counts as abandoned.
- `maintenance_interval` = ``maintenance_interval_s`` and ``worker_ttl`` = that + 15 s, because
  RQ's idle dequeue blocks for ``worker_ttl - 15`` s between maintenance checks. Maintenance runs
  the StartedJobRegistry cleanup that retries (``Retry(max=job_retries)``) or fails abandoned jobs.
- `work_horse_killed_handler` records a horse that died under a living worker before RQ retries
  or fails the job.
- A job popped by a worker that vanished before starting it is in no lane while RQ still says
  ``queued``; each search worker's maintenance pushes such a job back (spotlight/server/stranded.py).
- The horse asks the kernel to SIGKILL it when its worker dies (Linux ``PR_SET_PDEATHSIG``): RQ
  puts the horse in its own process group, so without this a horse orphaned by a killed worker
  would run on unsupervised, with nobody renewing its heartbeat, while a retry runs elsewhere.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
import time

import redis
from rq import Worker
from rq.job import Job
from rq.queue import Queue
from rq.worker import DequeueStrategy

from spotlight.server import capabilities
from spotlight.server.jobqueue import (
    TimeLimitPenalty,
    abandoned_job_handler,
    callback_queue,
    record_worker_lost,
    report_queue,
    search_lanes,
)
from spotlight.server.process import die_with_parent
from spotlight.server.settings import Settings
from spotlight.server.stranded import requeue_unheld
from worker.devices import detect_cuda_devices

log = logging.getLogger("spotlight.worker")

# How much lower a report-only worker's CPU priority is than its search workers' (os.nice): under
# Linux's scheduler a niceness of 10 weighs about a tenth of 0, so a report renders with what the
# searches leave, and at full speed when none runs.
REPORT_NICENESS = 10


def _work_horse_killed(job: Job, retpid: int, ret_val: int, rusage: object) -> None:
    """Runs in the worker when its horse exited abnormally (SIGKILL, OOM killer, segfault)."""
    how = f"signal {os.WTERMSIG(ret_val)}" if ret_val and os.WIFSIGNALED(ret_val) else f"exit status {ret_val}"
    record_worker_lost(job, f"its work-horse process died ({how})")


class SpotlightWorker(Worker):
    """RQ's forking Worker with a configurable grace before a silent job counts as abandoned."""

    lost_after_s: int = 60
    # A search worker's settings: its maintenance also queues again the searches no lane holds.
    search_settings: Settings | None = None
    # The job timeout as a BaseException, which no phase's `except Exception` can swallow (spotlight/server/jobqueue.py).
    death_penalty_class = TimeLimitPenalty

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        interval = float(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - working_time, interval)
        return int(max(interval, 1)) + int(self.lost_after_s)

    # Queue names in the order of their tiers: a tier is served only when every earlier one is empty;
    # within a tier the queues take turns. Set by `build_worker`; empty = RQ's plain round robin.
    tiers: tuple[tuple[str, ...], ...] = ()

    def reorder_queues(self, reference_queue: Queue) -> None:
        """RQ's round robin, within the tier of the queue a job came from (see the module doc)."""
        if not self.tiers:
            super().reorder_queues(reference_queue)
            return
        by_name = {q.name: q for q in self._ordered_queues}
        current = [[by_name[n] for n in tier] for tier in self.tiers]
        for tier_queues in current:
            names = [q.name for q in tier_queues]
            if reference_queue.name in names:
                pos = names.index(reference_queue.name)
                tier_queues[:] = tier_queues[pos + 1 :] + tier_queues[: pos + 1]
        self.tiers = tuple(tuple(q.name for q in tier) for tier in current)
        self._ordered_queues = [q for tier in current for q in tier]

    def subscribe(self) -> None:
        """RQ's command channel (stop, kill-horse), read by a thread that wakes every second.

        Why not RQ's own: it reads with a 60 s timeout, and on exit RQ stops that thread with
        redis-py's `PubSubWorkerThread.stop()`, which (redis-py 8) waits for the read to end. So every
        worker exit (a burst worker done, `spotlight up` stopping, a pod's SIGTERM) took a minute more,
        past Kubernetes' default 30 s grace."""
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # RQ declares it None
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        if self.search_settings is not None:
            requeue_unheld(self.connection, self.search_settings)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        die_with_parent(signal.SIGKILL, self.pid or os.getppid())  # spotlight/server/process.py
        super().main_work_horse(job, queue)


def preload_engine(searches: bool = True) -> None:
    """Import torch and the engine in the parent without initialising CUDA (see module doc); a worker
    that renders reports only needs just the job's other steps."""
    if not searches:
        preload_job_steps()
        return
    try:
        import torch

        import worker.engine  # noqa: F401
    except ImportError as exc:
        log.warning("could not preload the engine (%s); each job will import it", exc)
        return
    if torch.cuda.is_initialized():  # pragma: no cover - a guard against an engine import side effect
        raise RuntimeError("CUDA was initialised in the worker's parent process; forked horses could not use it")
    preload_job_steps()


def preload_job_steps() -> None:
    """Import the job's other steps in the parent too: the task, the descriptions, the report and the
    parts of matplotlib it draws with. Why: a horse imported them per job, 1-4 s measured on the shared
    2-core machine (matplotlib's figure and Agg modules most of it), more than the search of a 2 000-row
    job (docs/engine.md, speed). matplotlib is a worker extra: without it, the report imports fail per job
    as before and say why in the report."""
    try:
        from matplotlib import figure, lines  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401

        import worker.describe  # noqa: F401
        import worker.report  # noqa: F401
        import worker.task  # noqa: F401
    except ImportError as exc:
        log.warning("could not preload the report's modules (%s); each job will import them", exc)


def worker_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


def build_worker(
    settings: Settings,
    connection: redis.Redis,
    name: str | None = None,
    *,
    searches: bool = True,
    reports: bool = True,
    callbacks: bool = True,
) -> SpotlightWorker:
    """An RQ worker with every lifetime taken from Settings, on the search queue's two lanes (normal,
    then large), the reports queue (a report draws with matplotlib, a worker extra) and/or the
    callbacks queue: the search lanes first, the others when no search waits (`SpotlightWorker.tiers`)."""
    first = search_lanes(connection, settings) if searches else []
    then = ([report_queue(connection, settings)] if reports else []) + (
        [callback_queue(connection, settings)] if callbacks else []
    )
    queues = first + then
    if not queues:
        raise ValueError("a worker needs at least one queue")
    worker = SpotlightWorker(
        queues,
        name=name or worker_name(),
        connection=connection,
        default_result_ttl=settings.result_ttl_s,
        job_monitoring_interval=settings.worker_heartbeat_s,
        maintenance_interval=settings.maintenance_interval_s,
        worker_ttl=settings.maintenance_interval_s + 15,
        exception_handlers=[abandoned_job_handler],
        work_horse_killed_handler=_work_horse_killed,
        log_job_description=False,
    )
    worker.lost_after_s = settings.worker_lost_after_s
    worker.search_settings = settings if searches else None
    worker.tiers = tuple(tuple(q.name for q in tier) for tier in (first, then) if tier)
    return worker


def run_worker(
    settings: Settings,
    *,
    burst: bool = False,
    name: str | None = None,
    preload: bool = True,
    searches: bool = True,
    reports: bool = True,
    callbacks: bool = True,
) -> bool:
    """Serve jobs until stopped (SIGTERM/SIGINT: finish the current job; twice: stop now).

    A callbacks-only worker (``searches=False, reports=False``) never imports torch: it runs in the API's
    image. A reports-only worker needs the worker extra (matplotlib; torch through the task module) but
    never a GPU.
    Returns whether any job was processed (RQ's answer; useful with ``burst``).
    """
    if not settings.redis_url:
        raise SystemExit("spotlight worker: REDIS_URL is not set (start Redis, or use `spotlight up`)")
    if reports and not searches:
        # A report worker beside search workers on one machine (`spotlight up`) yields the CPU to them:
        # the plots are wanted after the results, the next search is wanted now (2 shared cores, side by
        # side: a small job 1.64 s against 2.10 s at niceness 0; docs/engine.md, speed, "Searches never
        # wait for a report"). Its horses inherit it.
        os.nice(REPORT_NICENESS)
    if preload and (searches or reports):
        preload_engine(searches)
    connection = redis.Redis.from_url(settings.redis_url)
    for attempt in itertools.count():
        # A fresh RQ worker after each outage: the old one's registration may still sit in Redis (AOF).
        worker = build_worker(
            settings,
            connection,
            _attempt_name(name, attempt),
            searches=searches,
            reports=reports,
            callbacks=callbacks,
        )
        log.info(
            "worker %s on %s (heartbeat %ss, lost after %ss more, maintenance every %ss)",
            worker.name,
            ", ".join(worker.queue_names()),
            settings.worker_heartbeat_s,
            settings.worker_lost_after_s,
            settings.maintenance_interval_s,
        )
        try:
            if searches:  # the API refuses device "cuda" jobs that no live worker could run
                capabilities.publish(connection, settings, worker.name, detect_cuda_devices())
            # Round robin over the lanes: a long job never has every short one wait behind a queue of longs;
            # and a running search gives the worker up between regions when another tenant's job
            # waits (worker/task.py, spotlight/server/jobqueue.py), so it is not held to the long job's end.
            # With callbacks, RQ's scheduler too: it queues a delivery's next attempt once its backoff is over.
            return worker.work(
                burst=burst,
                logging_level=settings.log_level.upper(),
                dequeue_strategy=DequeueStrategy.ROUND_ROBIN,
                with_scheduler=callbacks,
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # RQ retries its blocking wait for work, but an outage anywhere else in its loop (finishing
            # a job, maintenance, a heartbeat) ends work(). Serve again once Redis answers; a job that
            # was running is RQ's abandoned-job case (retried or failed `worker_lost`).
            log.warning("worker %s lost Redis (%s); serving again once it answers", worker.name, exc)
            _stop_on_signals()
            _wait_for_redis(connection)
        finally:
            if searches:
                with contextlib.suppress(redis.RedisError):
                    capabilities.withdraw(connection, settings, worker.name)
    raise AssertionError("unreachable")


def _attempt_name(name: str | None, attempt: int) -> str | None:
    if attempt == 0:
        return name
    return f"{name or worker_name()}-{attempt}"


def _stop_on_signals() -> None:
    """Outside RQ's loop its signal handlers would raise into our wait: SIGTERM/SIGINT just stop."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))


def _wait_for_redis(connection: redis.Redis, max_pause_s: float = 5.0) -> None:
    """Block until Redis answers PING, pausing 0.1 s, doubling up to `max_pause_s`."""
    pause = 0.1
    while True:
        try:
            connection.ping()
            return
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(pause)
            pause = min(pause * 2, max_pause_s)
