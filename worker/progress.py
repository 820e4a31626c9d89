"""A running job's voice: status and progress into its RQ meta, and the cancel flag out of Redis.

The engine calls `progress(...)` on every optimiser step and `should_stop()` between steps; both
are throttled to ``settings.progress_interval_s`` so that a fast search does not turn into a
stream of Redis round trips, while a caller polling the job still sees it move a few times a
second and a cancel takes effect within one interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from rq.job import Job

from spotlight.contract.jobstate import JobStatus, status_fields
from spotlight.contract.protocol import (
    META_DEVICE,
    META_PROGRESS,
    META_STARTED_AT,
    JobError,
    Progress,
)
from spotlight.server.keys import Keys


class JobReporter:
    """Writes one job's meta (status, progress, error, times) and reads its cancel flag.

    Parameters
    ----------
    job : rq.job.Job
        The job being run (``rq.get_current_job()`` inside a worker).
    keys : Keys
        The deployment's Redis keys (its cancel flag).
    interval_s : float
        Least time between two progress writes, and between two cancel-flag reads.
    clock : callable
        Monotonic clock, replaceable in tests.
    """

    def __init__(self, job: Job, keys: Keys, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.job = job
        self.keys = keys
        self.connection: Redis = job.connection
        self.interval_s = max(0.0, float(interval_s))
        self.clock = clock
        self._last_publish = float("-inf")
        self._last_cancel_check = float("-inf")
        self._cancel_seen = False
        self.progress_state = Progress()

    # ----- status -----
    def _save(self, **fields: Any) -> None:
        self.job.meta.update(fields)
        self.job.save_meta()

    def started(
        self, n_spotlights: int, steps: int, *, resumed: Progress | None = None, since: str | None = None
    ) -> None:
        """The job runs now; a run that resumes a yielded search starts from `resumed` and keeps the
        first run's start time `since`."""
        self.progress_state = resumed or Progress(n_spotlights=n_spotlights, steps=steps)
        fields = status_fields(JobStatus.RUNNING)
        if since:
            fields[META_STARTED_AT] = since
        self._save(**fields, **{META_PROGRESS: self.progress_state.model_dump()})
        self._last_publish = self.clock()

    def yielded(self, progress: Progress, **fields: Any) -> None:
        """The job gave its worker up and waits in its queue again (spotlight/server/jobqueue.py)."""
        self.progress_state = progress
        self._save(**status_fields(JobStatus.QUEUED), **{META_PROGRESS: progress.model_dump()}, **fields)

    def device(self, device: str) -> None:
        self._save(**{META_DEVICE: device})

    def ended(self, status: JobStatus, error: JobError | None = None, **extra: Any) -> None:
        """The job ended as `status`; `extra` meta fields are written in the same save (a finished job's
        report status, so nobody sees it finished without one)."""
        fields = {**status_fields(status, error), **extra}
        if status == JobStatus.FINISHED:
            p = self.progress_state
            fields[META_PROGRESS] = Progress(
                spotlight=p.n_spotlights, n_spotlights=p.n_spotlights, step=p.steps, steps=p.steps, fraction=1.0
            ).model_dump()
        self._save(**fields)

    # ----- the engine's callbacks -----
    def progress(self, spotlight: int, step: int, steps: int) -> None:
        """Engine callback (0-based spotlight, 0-based step). Published as 1-based 'i of k, t of T'."""
        k = max(1, self.progress_state.n_spotlights)
        steps = max(1, int(steps))
        step_done = min(int(step) + 1, steps)
        fraction = min(1.0, max(0.0, (int(spotlight) + step_done / steps) / k))
        self.progress_state = Progress(
            spotlight=min(int(spotlight) + 1, k), n_spotlights=k, step=step_done, steps=steps, fraction=fraction
        )
        now = self.clock()
        if now - self._last_publish >= self.interval_s:
            self._last_publish = now
            self._save(**{META_PROGRESS: self.progress_state.model_dump()})

    def should_stop(self) -> bool:
        """True once the caller asked to cancel (the flag is read at most once per interval)."""
        if self._cancel_seen:
            return True
        now = self.clock()
        if now - self._last_cancel_check >= self.interval_s:
            self._last_cancel_check = now
            self._cancel_seen = bool(self.connection.exists(self.keys.cancel(self.job.id)))
        return self._cancel_seen

    def cancel_requested(self) -> bool:
        """Read the cancel flag now, whatever the interval (before any work starts)."""
        self._cancel_seen = self._cancel_seen or bool(self.connection.exists(self.keys.cancel(self.job.id)))
        return self._cancel_seen
