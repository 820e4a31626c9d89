"""A search never waits behind a report: real Redis, real worker processes, real searches and reports.

- A worker that serves both (a plain `spotlight worker`, or `spotlight up --report-workers 0`) takes a
  waiting search before any queued report. RQ's plain round robin over its queues turned to the reports
  queue right after each search, so the next search waited for the previous job's plots (issue 23).
- With a report worker (``--reports-only``, what `spotlight up`, docker-compose and deploy/ run), search
  workers started ``--no-reports`` never take a report, and the report worker never takes a search.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job

from spotlight.contract.protocol import parse_time, report_job_id
from spotlight.server.jobqueue import job_queue, report_queue
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore
from tests.runtime.gate import HELD_TASK_PATH, Gate
from tests.runtime.helpers import (
    enqueue,
    make_spec,
    meta_status,
    run_burst_worker,
    spawn_logged,
    tail_log,
    wait_for,
    worker_env,
    write_dataset,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _worker(env: dict[str, str], log: Path, *flags: str) -> subprocess.CompletedProcess[bytes]:
    return run_burst_worker(env, log, *flags, timeout=200)


def _report_status(conn: redis.Redis, job_id: str) -> str | None:
    return (Job.fetch(job_id, connection=conn).get_meta(refresh=True).get("report") or {}).get("status")


def test_a_worker_serving_both_runs_every_waiting_search_before_the_reports(
    redis_url: str, store_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_url, store_url=str(store_dir))
    sha = write_dataset(ArtifactStore(str(store_dir)), n=300)
    jobs = [enqueue(redis_url, make_spec(sha), settings) for _ in range(3)]  # a pipeline's burst of jobs
    done = _worker(worker_env(redis_url, store_dir), tmp_path / "w.log", "--no-callbacks")
    assert done.returncode == 0, (tmp_path / "w.log").read_text()[-3000:]
    conn = redis.Redis.from_url(redis_url)
    assert [meta_status(j) for j in jobs] == ["finished"] * 3
    searches = [Job.fetch(j.id, connection=conn) for j in jobs]
    reports = [Job.fetch(report_job_id(j.id), connection=conn) for j in jobs]
    last_search_started = max(parse_time(s.started_at) for s in searches)  # type: ignore[type-var]
    first_report_started = min(parse_time(r.started_at) for r in reports)  # type: ignore[type-var]
    # The old round robin rendered job 1's report between searches 1 and 2.
    assert last_search_started < first_report_started, (
        [s.started_at for s in searches],
        [r.started_at for r in reports],
    )
    # ... and every report is still rendered, once no search waits.
    assert [_report_status(conn, j.id) for j in jobs] == ["ready"] * 3
    assert report_queue(conn, settings).count == 0


def test_search_workers_leave_reports_to_a_report_worker_which_takes_no_search(
    redis_url: str, store_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_url, store_url=str(store_dir))
    sha = write_dataset(ArtifactStore(str(store_dir)), n=300)
    jobs = [enqueue(redis_url, make_spec(sha), settings) for _ in range(2)]
    env = worker_env(redis_url, store_dir)
    conn = redis.Redis.from_url(redis_url)

    done = _worker(env, tmp_path / "search.log", "--no-callbacks", "--no-reports")
    assert done.returncode == 0, (tmp_path / "search.log").read_text()[-3000:]
    assert [meta_status(j) for j in jobs] == ["finished"] * 2
    reports = report_queue(conn, settings)
    assert sorted(reports.job_ids) == sorted(report_job_id(j.id) for j in jobs)  # both left queued
    assert [_report_status(conn, j.id) for j in jobs] == ["pending"] * 2

    waiting = enqueue(redis_url, make_spec(sha), settings)  # a search the report worker must not take
    done = _worker(env, tmp_path / "reports.log", "--reports-only")
    assert done.returncode == 0, (tmp_path / "reports.log").read_text()[-3000:]
    assert [_report_status(conn, j.id) for j in jobs] == ["ready"] * 2
    assert reports.count == 0
    assert meta_status(waiting) == "queued" and job_queue(conn, settings).job_ids == [waiting.id]
    assert Queue("spotlight-callbacks", connection=conn).count == 0  # no job here has a callback


def test_a_search_runs_to_its_end_while_the_report_worker_is_busy_rendering(
    redis_url: str, store_dir: Path, tmp_path: Path
) -> None:
    """The deployment of `spotlight up`: a report worker busy with a report (a job held at a test gate on
    the reports queue, for as long as the test likes) and a search worker beside it, started
    --no-reports. The search is taken and finished while the rendering still runs."""
    settings = Settings(redis_url=redis_url, store_url=str(store_dir))
    conn = redis.Redis.from_url(redis_url)
    env = worker_env(redis_url, store_dir)
    rendering = report_queue(conn, settings).enqueue(HELD_TASK_PATH, job_timeout=120)
    reports = spawn_logged(
        [sys.executable, "-m", "spotlight.client.cli", "worker", "--reports-only"], tmp_path / "reports.log", env
    )
    gate = Gate(conn, rendering.id)
    try:
        gate.wait_held(60)  # the report worker is rendering
        job = enqueue(redis_url, make_spec(write_dataset(ArtifactStore(str(store_dir)), n=300)), settings)
        done = _worker(env, tmp_path / "search.log", "--no-callbacks", "--no-reports")
        assert done.returncode == 0, (tmp_path / "search.log").read_text()[-3000:]
        assert meta_status(job) == "finished"
        assert rendering.get_status(refresh=True) == "started"  # still rendering when the search ended
        # and the job's own report waits for the report worker, which takes it once it is free
        assert _report_status(conn, job.id) == "pending"
        gate.open()
        wait_for(lambda: _report_status(conn, job.id) == "ready", 120, "the report", interval=0.2)
    finally:
        gate.open()
        if reports.poll() is None:
            os.killpg(reports.pid, signal.SIGTERM)
            try:
                reports.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(reports.pid, signal.SIGKILL)
                reports.wait(10)
    assert "Traceback" not in tail_log(tmp_path / "reports.log", 20000)


def test_worker_flags_that_contradict_each_other_are_refused(redis_url: str, store_dir: Path, tmp_path: Path) -> None:
    env = worker_env(redis_url, store_dir)
    for flags in (("--reports-only", "--no-reports"), ("--callbacks-only", "--no-reports")):
        done = _worker(env, tmp_path / "w.log", *flags)
        assert done.returncode != 0 and b"--no-reports" in (tmp_path / "w.log").read_bytes()
    done = _worker(env, tmp_path / "w.log", "--reports-only", "--callbacks-only")  # argparse's exclusive group
    assert done.returncode != 0
