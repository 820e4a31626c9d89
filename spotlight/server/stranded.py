"""Queued searches and reports that no lane holds any more: found by each idle worker's maintenance, queued again.

How a job gets there: a search worker waits for work with one ``BLPOP`` over its lanes (RQ uses
``BLMOVE`` with its own recovery only for a worker of one queue). Redis hands the first job pushed
to the first waiting connection and forgets it. When that connection belongs to a worker that is
gone but whose socket is still open (a SIGKILLed worker whose RQ scheduler child has not exited
yet, a node lost without closing its connections, a process frozen by the OOM killer), the job
is popped into nowhere: RQ still says ``queued``, so does our meta, and no worker will ever take
it. It was seen as a job queued before a Redis restart that never ran (tests/security/test_faults.py).

The rule: a search job whose RQ status is ``queued``, which is in none of its lane's lists, stays
so for `unheld_grace_s` (long enough for a live worker to move a job it popped to ``started``,
which takes milliseconds), is pushed back to the front of its lane, where it was when it was
taken. Candidates are the tenants' active sets (`Keys.tenant_active`): every queued or running
search is in one; and the report jobs queued after their search finished (`Keys.reports_pending`),
whose loss would leave a report pending until its RQ record expired. The check and the push are one
Lua script, so two workers sweeping at once, or a worker starting the job meanwhile, never run it twice.
"""

from __future__ import annotations

import logging

from redis import Redis
from rq.job import Job
from rq.queue import Queue

from spotlight.server.keys import Keys
from spotlight.server.settings import Settings

log = logging.getLogger("spotlight.server.stranded")

# KEYS: the job's hash, its lane's list, its unheld-since key. ARGV: job id, grace in ms.
# Returns 1 when the job was pushed back, else 0. The unheld-since key holds "<ms> <enqueued_at>|<started_at>":
# the clock runs only while the job is the same pop of the same enqueue. A sweep that saw a live worker's
# pop (the milliseconds, or under load seconds, before it marks the job started), and none after it,
# leaves the key behind; when that worker has since run the job and it is queued again (a yield), RQ has
# changed started_at and enqueued_at, so the clock restarts instead of counting from the old sighting.
_REQUEUE_IF_UNHELD = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' or redis.call('LPOS', KEYS[2], ARGV[1]) then
  redis.call('DEL', KEYS[3])
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local grace = tonumber(ARGV[2])
local times = redis.call('HMGET', KEYS[1], 'enqueued_at', 'started_at')
local sig = tostring(times[1] or '') .. '|' .. tostring(times[2] or '')
local seen = redis.call('GET', KEYS[3])
local since = nil
if seen then
  local space = string.find(seen, ' ', 1, true)
  if space and string.sub(seen, space + 1) == sig then
    since = tonumber(string.sub(seen, 1, space - 1))
  end
end
if not since then
  redis.call('SET', KEYS[3], now .. ' ' .. sig, 'PX', 4 * grace + 60000)
  return 0
end
if now - since < grace then
  return 0
end
redis.call('DEL', KEYS[3])
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
"""


def unheld_grace_s(settings: Settings) -> float:
    """How long a queued job may be in no lane before it counts as lost: the same silence after which
    a running job's worker counts as lost (one heartbeat plus `worker_lost_after_s`)."""
    return float(settings.worker_heartbeat_s + settings.worker_lost_after_s)


def active_job_ids(connection: Redis, keys: Keys) -> list[str]:
    """Every id in every tenant's active set (queued or running jobs, plus ended ones not yet pruned)."""
    ids: set[str] = set()
    for key in connection.scan_iter(match=keys.tenant_active_pattern(), count=500):
        ids.update(i.decode() if isinstance(i, bytes) else str(i) for i in connection.smembers(key))
    return sorted(ids)


def pending_report_ids(connection: Redis, keys: Keys) -> list[str]:
    """The report jobs queued after their search finished (`Keys.reports_pending`) that have not ended;
    ended or expired ones leave the set here."""
    ids = sorted(i.decode() if isinstance(i, bytes) else str(i) for i in connection.smembers(keys.reports_pending))
    pending = []
    for job_id in ids:
        status = connection.hget(Job.key_for(job_id), "status")
        if status is None or (status.decode() if isinstance(status, bytes) else str(status)) not in _NOT_ENDED:
            connection.srem(keys.reports_pending, job_id)
        else:
            pending.append(job_id)
    return pending


_NOT_ENDED = frozenset({"queued", "started", "deferred", "scheduled"})


def requeue_unheld(connection: Redis, settings: Settings) -> list[str]:
    """Push back to its lane every queued search that has been in no lane for the grace; their ids.

    Called from each search worker's maintenance (worker/runner.py), every `maintenance_interval_s`
    while it is idle: a lost job waits at most about grace + one interval."""
    keys = Keys.of(settings)
    grace_ms = str(int(unheld_grace_s(settings) * 1000))
    requeued = []
    for job_id in active_job_ids(connection, keys) + pending_report_ids(connection, keys):
        origin = connection.hget(Job.key_for(job_id), "origin")
        if origin is None:
            continue  # expired or deleted
        lane = Queue(origin.decode() if isinstance(origin, bytes) else str(origin), connection=connection)
        if connection.eval(
            _REQUEUE_IF_UNHELD, 3, Job.key_for(job_id), lane.key, keys.unheld_since(job_id), job_id, grace_ms
        ):
            log.warning("job %s was queued but in no lane (taken by a worker that vanished); queued again", job_id)
            requeued.append(job_id)
    return requeued
