"""A controllable long job: a search that runs until the test lets it go.

Why: tests of timeouts, kills and cancels used to pick search parameters that "take a few seconds"
and raced them ("seen running -> kill" against a search that a faster CPU finished first). A held
search cannot finish early on any machine, so those tests wait on events instead of on timings:

- the worker announces that the job is running and held (`Gate.wait_held`, a blocking pop on a
  Redis list, which also returns the work-horse's pid for the kill tests);
- the test kills, cancels or lets the timeout fire while the job is provably still running;
- `Gate.open()` lets it go; the search then runs its normal course, quickly (small params).

How the hold works: the engine calls ``should_stop()`` before every optimiser step. A held job's
first ``should_stop()`` pushes the horse's pid onto ``<job>:held`` and then blocks on a Redis list
(``<job>:open``, popped and pushed back so that it stays open for a retry of the same job) until the
test opens it. While it waits it keeps asking the job's real reporter (worker/progress.py) whether
the caller canceled, so a cancel still takes the production path: the real, throttled read of the
cancel flag is what ends the hold, and the engine then stops on its next ``should_stop()``. RQ's
job timeout (SIGALRM in the horse) interrupts the blocking wait like any other code of the job.
A hold longer than `MAX_HOLD_S` fails the job, so a test that forgets to open a gate cannot hang.

Why it lives here and not in production code: the hook is installed only in processes the tests
start through this module (``python -m tests.runtime.gate worker ...`` is ``spotlight worker`` with
``worker.task.search`` wrapped), or in-process by `held_searches` (pytest's monkeypatch). The
shipped worker carries no switch, setting or environment variable that holds a job, so no API
caller (nor a misconfigured deployment) can stall a worker through it. The horse inherits the
wrapped function from its parent through fork, which is how RQ runs every job.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

GATE_PREFIX = "spotlight-test:gate"
MAX_HOLD_S = 300.0
POLL_S = 0.05  # how often a held job looks at the cancel flag (through the real, throttled reader)


def held_key(job_id: str) -> str:
    return f"{GATE_PREFIX}:{job_id}:held"


def open_key(job_id: str) -> str:
    return f"{GATE_PREFIX}:{job_id}:open"


class Gate:
    """The test's side of one job's gate."""

    def __init__(self, connection: redis.Redis, job_id: str) -> None:
        self.r = connection
        self.job_id = job_id

    def wait_held(self, timeout: float = 60) -> int:
        """Block until a run of the job is held (running, mid-search); returns that work-horse's pid."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            # in slices shorter than redis-py's default socket timeout (5 s), which a longer block would trip
            popped = self.r.blpop([held_key(self.job_id)], timeout=min(left, 2.0))
            if popped is not None:
                return int(popped[1])
        raise AssertionError(f"job {self.job_id} was not held within {timeout} s")

    def open(self) -> None:
        """Let every run of the job (this one and any retry) go on with its search."""
        self.r.rpush(open_key(self.job_id), "open")


def hold(connection: redis.Redis, job_id: str, canceled: Callable[[], bool]) -> None:
    """The worker's side: announce the hold, then wait until the gate opens or the job is canceled."""
    connection.rpush(held_key(job_id), os.getpid())
    deadline = time.monotonic() + MAX_HOLD_S
    while time.monotonic() < deadline:
        if connection.blmove(open_key(job_id), open_key(job_id), POLL_S, "LEFT", "RIGHT") is not None:
            return
        if canceled():
            return
    raise RuntimeError(f"test gate of {job_id} held for {MAX_HOLD_S} s without being opened")


class _HeldReporter:
    """The job's real reporter, whose first should_stop() holds the search at the gate."""

    def __init__(self, reporter: Any) -> None:
        self._reporter = reporter
        self._held = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reporter, name)

    def should_stop(self) -> bool:
        if not self._held:
            self._held = True
            job = self._reporter.job
            # A connection of its own: an RQ timeout firing inside a blocking call leaves it unusable.
            gate_conn = redis.Redis(
                connection_pool=redis.ConnectionPool(**job.connection.connection_pool.connection_kwargs)
            )
            try:
                hold(gate_conn, job.id, self._reporter.should_stop)
            finally:
                gate_conn.close()
        return bool(self._reporter.should_stop())


def hold_searches(search: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap worker.task.search so every search is held at its first step."""

    def held_search(inputs: Any, params: Any, reporter: Any, **kwargs: Any) -> Any:
        return search(inputs, params, _HeldReporter(reporter), **kwargs)

    held_search.__wrapped__ = search  # type: ignore[attr-defined]
    return held_search


def install() -> None:
    """Hold every search this process (and every work-horse forked from it) runs."""
    import worker.task

    if not hasattr(worker.task.search, "__wrapped__"):
        worker.task.search = hold_searches(worker.task.search)


@contextmanager
def held_searches() -> Iterator[None]:
    """In-process: hold the searches `worker.task.execute` runs inside the block."""
    import worker.task

    original = worker.task.search
    worker.task.search = hold_searches(original)
    try:
        yield
    finally:
        worker.task.search = original


def held_task() -> None:
    """An RQ task that runs until the test opens its gate (`Gate(conn, job.id)`): a busy worker on
    demand, for tests that need a job in RQ's started registry while they look at something else."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise RuntimeError("held_task runs inside an RQ worker")
    hold(job.connection, job.id, lambda: False)


HELD_TASK_PATH = "tests.runtime.gate.held_task"

# A worker started with this variable in its environment (through this module only) holds each job
# at its first region's *description* instead of at its search: for tests of what happens after the
# search (a cancel or a timeout while the regions are described).
HOLD_DESCRIBE_ENV = "TEST_GATE_HOLD_DESCRIBE"


def describing_key(job_id: str) -> str:
    return f"{GATE_PREFIX}:{job_id}:describing"


def described_key(job_id: str) -> str:
    """One entry per region description the job's work-horse began (held or not)."""
    return f"{GATE_PREFIX}:{job_id}:described"


def hold_descriptions(describe_region: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap worker.describe.describe_region: the first call in a work-horse announces itself on
    `describing_key` and waits until the test opens the job's gate or the job is canceled (its
    cancel flag, as the API sets it)."""
    state = {"held": False}

    def held_describe_region(*args: Any, **kwargs: Any) -> Any:
        from rq import get_current_job

        from spotlight.server.keys import Keys
        from spotlight.server.settings import get_settings

        cancel_key = Keys.of(get_settings()).cancel

        job = get_current_job()
        if job is not None:
            job.connection.rpush(described_key(job.id), os.getpid())
        if job is not None and not state["held"]:
            state["held"] = True  # per horse: each job runs in a fresh fork of the worker
            conn = redis.Redis(connection_pool=redis.ConnectionPool(**job.connection.connection_pool.connection_kwargs))
            try:
                conn.rpush(describing_key(job.id), os.getpid())
                deadline = time.monotonic() + MAX_HOLD_S
                while time.monotonic() < deadline:
                    if conn.blmove(open_key(job.id), open_key(job.id), POLL_S, "LEFT", "RIGHT") is not None:
                        break
                    if conn.exists(cancel_key(job.id)):
                        break
            finally:
                conn.close()
        return describe_region(*args, **kwargs)

    return held_describe_region


def install_describe_hold() -> None:
    import worker.describe

    worker.describe.describe_region = hold_descriptions(worker.describe.describe_region)


def worker_argv(name: str, *flags: str) -> list[str]:
    """argv of a held worker: `spotlight worker` through this module."""
    return [sys.executable, "-m", "tests.runtime.gate", "worker", "--name", name, *flags]


if __name__ == "__main__":
    if os.environ.get(HOLD_DESCRIBE_ENV):
        install_describe_hold()
    else:
        install()
    from spotlight.client.cli import main

    raise SystemExit(main(sys.argv[1:]))
