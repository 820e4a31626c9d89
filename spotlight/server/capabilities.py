"""What the workers can compute on, published at their start so the API can refuse what none can run.

A job asking for ``device: "cuda"`` on a deployment whose workers have no GPU used to be accepted
and then fail in the worker. Each search worker now records how many CUDA devices it sees
(a hash per queue, worker name -> count); the API reads it together with RQ's registry of live
workers (so a dead worker's record counts for nothing) and answers 400 at submission.

The worker counts its devices with worker/devices.py (this module never imports torch).
"""

from __future__ import annotations

from redis import Redis
from rq import Queue, Worker

from spotlight.server.keys import Keys
from spotlight.server.settings import Settings


def publish(conn: Redis, settings: Settings, worker_name: str, cuda_devices: int) -> None:
    conn.hset(Keys.of(settings).cuda_devices(), worker_name, cuda_devices)


def withdraw(conn: Redis, settings: Settings, worker_name: str) -> None:
    conn.hdel(Keys.of(settings).cuda_devices(), worker_name)


def max_cuda_devices(conn: Redis, settings: Settings) -> int | None:
    """The most CUDA devices any live worker of the queue has; None when no live worker published."""
    published = {
        (k.decode() if isinstance(k, bytes) else k): int(v)
        for k, v in conn.hgetall(Keys.of(settings).cuda_devices()).items()
    }
    if not published:
        return None
    live = {w.name for w in Worker.all(queue=Queue(settings.rq_queue_name(), connection=conn))}
    counts = [n for name, n in published.items() if name in live]
    return max(counts) if counts else None
