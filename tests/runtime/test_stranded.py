"""A queued search that no lane holds (popped by a worker that vanished) is pushed back after the
grace, and nothing else is touched (spotlight/server/stranded.py)."""

from __future__ import annotations

import time

import redis
from rq.job import Job, JobStatus

from spotlight.server.jobqueue import job_queue
from spotlight.server.keys import Keys
from spotlight.server.settings import Settings
from spotlight.server.stranded import requeue_unheld, unheld_grace_s

from .helpers import enqueue, make_spec

GRACE_SETTINGS = {"worker_heartbeat_s": 1, "worker_lost_after_s": 1}


def _queued(redis_url: str, settings: Settings) -> tuple[redis.Redis, Job]:
    """A search enqueued as the API does it: on its lane and in its tenant's active set."""
    conn = redis.Redis.from_url(redis_url)
    spec = make_spec("0" * 64)
    job = enqueue(redis_url, spec, settings)
    conn.sadd(Keys.of(settings).tenant_active(spec.tenant), job.id)
    return conn, job


def test_a_job_popped_into_nowhere_goes_back_to_the_front_of_its_lane_after_the_grace(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, **GRACE_SETTINGS)
    conn, lost = _queued(redis_url, settings)
    _, behind = _queued(redis_url, settings)
    lane = job_queue(conn, settings)
    assert conn.lpop(lane.key).decode() == lost.id  # what a vanished worker's BLPOP does

    assert requeue_unheld(conn, settings) == []  # first seen unheld
    assert conn.exists(Keys.of(settings).unheld_since(lost.id))
    assert requeue_unheld(conn, settings) == []  # a live worker may be about to start it
    time.sleep(unheld_grace_s(settings) + 0.1)
    assert requeue_unheld(conn, settings) == [lost.id]
    assert lane.get_job_ids() == [lost.id, behind.id]
    assert not conn.exists(Keys.of(settings).unheld_since(lost.id))
    assert requeue_unheld(conn, settings) == []  # once back, it is held again


def test_a_listed_or_started_job_is_left_alone(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, **GRACE_SETTINGS)
    conn, listed = _queued(redis_url, settings)
    _, started = _queued(redis_url, settings)
    lane = job_queue(conn, settings)
    conn.lrem(lane.key, 1, started.id)
    started.set_status(JobStatus.STARTED)  # a worker took it and runs it

    for _ in range(2):
        assert requeue_unheld(conn, settings) == []
        time.sleep(unheld_grace_s(settings) + 0.1)
    assert lane.get_job_ids() == [listed.id]
    assert not conn.exists(Keys.of(settings).unheld_since(listed.id))
    assert not conn.exists(Keys.of(settings).unheld_since(started.id))


def test_a_report_job_popped_into_nowhere_goes_back_and_an_ended_one_leaves_the_sweep(redis_url: str) -> None:
    """A finished job's report job lost the same way would leave its report pending until its RQ record
    expired: the sweep pushes it back to the reports queue too, and forgets report jobs that ended."""
    from spotlight.server.jobqueue import enqueue_report, report_queue

    settings = Settings(redis_url=redis_url, **GRACE_SETTINGS)
    conn = redis.Redis.from_url(redis_url)
    lost = enqueue_report(conn, settings, make_spec("0" * 64).job_id, {})
    done = enqueue_report(conn, settings, make_spec("0" * 64).job_id, {})
    reports = report_queue(conn, settings)
    pending = Keys.of(settings).reports_pending
    assert {m.decode() for m in conn.smembers(pending)} == {lost.id, done.id}
    assert conn.lpop(reports.key).decode() == lost.id  # what a vanished worker's BLPOP does
    conn.lrem(reports.key, 1, done.id)
    done.set_status(JobStatus.FINISHED)  # a worker rendered it

    assert requeue_unheld(conn, settings) == []  # first seen unheld
    assert {m.decode() for m in conn.smembers(pending)} == {lost.id}  # the ended one left the sweep
    time.sleep(unheld_grace_s(settings) + 0.1)
    assert requeue_unheld(conn, settings) == [lost.id]
    assert reports.get_job_ids() == [lost.id]


def test_a_sighting_of_an_earlier_pop_does_not_count_once_the_job_has_run_and_is_queued_again(redis_url: str) -> None:
    """A sweep that saw a live worker's pop, and none after it, leaves its clock behind; when that worker
    has run the job and the job is queued and popped again (a yield), the old sighting must not count,
    or the job would be pushed back while a live worker starts it, and run twice."""
    settings = Settings(redis_url=redis_url, **GRACE_SETTINGS)
    conn, job = _queued(redis_url, settings)
    lane = job_queue(conn, settings)
    assert conn.lpop(lane.key).decode() == job.id  # a live worker's pop, seen by a sweep
    assert requeue_unheld(conn, settings) == []
    time.sleep(unheld_grace_s(settings) + 0.1)
    # Meanwhile the worker ran it (started_at), it yielded and RQ queued it again (enqueued_at), and a
    # worker has just popped it once more: no sweep saw any of that.
    conn.hset(Job.key_for(job.id), mapping={"started_at": "2026-12-07T12:00:01.000000Z"})
    conn.hset(Job.key_for(job.id), mapping={"enqueued_at": "2026-12-07T12:00:02.000000Z"})
    assert requeue_unheld(conn, settings) == []  # a new pop: its clock starts now
    assert lane.get_job_ids() == []
    time.sleep(unheld_grace_s(settings) + 0.1)
    assert requeue_unheld(conn, settings) == [job.id]  # this pop did stay unheld for the grace
    assert lane.get_job_ids() == [job.id]
