"""Where a small job's time goes, end to end through the API, for one or more checkouts side by side.

    python -m bench.job_phases                                  # this checkout, 5 jobs
    python -m bench.job_phases --repo /tmp/before --repo .      # before/after, jobs interleaved
    python -m bench.job_phases --n 2000 --d 128 --jobs 7
    python -m bench.job_phases --back-to-back --repo /tmp/before --repo .   # as a pipeline submits

Each checkout gets a whole service in a temporary folder (`bench.load.Service`: embedded Redis, and the
checkout's own `spotlight up --workers 1`, i.e. the API, one search worker and whatever other workers
that checkout's `up` starts; `--plain`: the API and one plain `spotlight worker` instead). The services
run at the same time and take turns, one job at a time (a warm-up job each first), so the drift of a
shared machine falls on all of them alike. Per job, default parameters (5 regions, `device` cpu) on
`bench.speed.labelled_data` (n x d with 10 classes, as an MNIST-like upload holds them):

- submit to finished: from the POST to the first poll (every 10 ms) that sees `finished`;
- submit to report: to the first GET of the report that answers 200 (the next job starts after it, so
  a job never waits for the previous job's report);
- the phases, from RQ's job record: queue pick-up and the horse fork (RQ's `enqueued_at` to its
  `started_at`, set in the horse), the task's own start (meta written), and `phases_s`, the seconds of
  each phase the task returns (worker/task.py `Laps`; a checkout without it shows the run as a whole);
  the report job's run (its RQ start to end), for checkouts that render it after the job.

With ``--back-to-back`` the client submits each job as soon as the previous one is finished, without
waiting for its report (as a pipeline that submits many jobs does): then also how long the job waited
in the queue (RQ's `enqueued_at` to `started_at`) and how much of that wait overlapped the previous
job's report rendering (its report job's start to end): with one worker serving both, the time the
search waited behind that report.

Medians over the jobs, and in the same run the Domino-style mixture slicer (`bench.mixture_slicer`, 5
slices) on the same arrays: what a user would run instead.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from rq.job import Job

from bench import mixture_slicer
from bench.load import REPO_ROOT, Service, auth
from bench.speed import labelled_data
from spotlight.contract.protocol import parse_time


def _seconds(a: Any, b: Any) -> float | None:
    start, end = parse_time(a), parse_time(b)
    return (end - start).total_seconds() if start and end else None


def _overlap(a0: Any, a1: Any, b0: Any, b1: Any) -> float:
    """Seconds the intervals [a0, a1] and [b0, b1] (RQ timestamps) share; 0 when a bound is missing."""
    times = [parse_time(t) for t in (a0, a1, b0, b1)]
    if any(t is None for t in times):
        return 0.0
    s0, s1, r0, r1 = times
    return max(0.0, (min(s1, r1) - max(s0, r0)).total_seconds())  # type: ignore[operator]


def one_job(
    c: httpx.Client, conn: redis.Redis, dataset: str, *, wait_report: bool = True, previous: str | None = None
) -> tuple[str, dict[str, float]]:
    """One default job: its id, and its walls and phases (seconds). Without `wait_report` it returns once
    the job is finished; `previous`: the job submitted just before, whose report rendering this one may
    have waited behind."""
    t = time.perf_counter()
    r = c.post("/v1/jobs", headers=auth(0), json={"dataset": dataset, "params": {"device": "cpu"}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    submitted = time.perf_counter() - t
    while True:
        status = c.get(f"/v1/jobs/{job_id}", headers=auth(0)).json()["status"]
        if status == "finished":
            finished = time.perf_counter() - t
            break
        if status in ("failed", "canceled"):
            raise SystemExit(f"job {job_id} ended {status}")
        time.sleep(0.01)
    out: dict[str, float] = {"submit": submitted, "finished": finished}
    if wait_report:
        wait_for_report(c, job_id)
        out["report ready"] = time.perf_counter() - t
    job = Job.fetch(job_id, connection=conn)
    deadline = time.perf_counter() + 10
    while not job.is_finished and time.perf_counter() < deadline:  # RQ saves its result after our meta says so
        time.sleep(0.01)
    pickup = _seconds(job.enqueued_at, job.started_at)
    if pickup is not None:
        out["pick-up + fork"] = pickup
    if previous is not None:
        try:
            before = Job.fetch(f"{previous}-report", connection=conn)
            out["of it while the previous report rendered"] = _overlap(
                job.enqueued_at, job.started_at, before.started_at, before.ended_at
            )
        except Exception:  # noqa: BLE001 - a checkout that renders the report inside the job
            pass
    task_start = _seconds(job.started_at, job.meta.get("started_at"))
    if task_start is not None:
        out["task start"] = task_start
    summary = job.return_value() or {}
    phases = summary.get("phases_s")
    if phases:
        out.update({f"· {k}": float(v) for k, v in phases.items()})
    else:
        run = _seconds(job.meta.get("started_at"), job.meta.get("ended_at"))
        if run is not None:
            out["· run (search, verdict, descriptions, report, writes)"] = run
    if wait_report:
        out.update(report_job(conn, job_id))
    return job_id, out


def wait_for_report(c: httpx.Client, job_id: str, timeout_s: float = 300) -> None:
    t = time.perf_counter()
    while (report := c.get(f"/v1/jobs/{job_id}/report", headers=auth(0))).status_code != 200:
        assert report.status_code == 409, report.text
        if time.perf_counter() - t > timeout_s:
            raise SystemExit(f"no report for {job_id}: {report.text}")
        time.sleep(0.01)


def report_job(conn: redis.Redis, job_id: str) -> dict[str, float]:
    """The report job's pick-up and run (seconds), for checkouts that render it after the job."""
    try:
        rendering = Job.fetch(f"{job_id}-report", connection=conn)
    except Exception:  # noqa: BLE001 - a checkout that renders the report inside the job
        return {}
    return {
        "report job pick-up": _seconds(rendering.enqueued_at, rendering.started_at) or 0.0,
        "report job run": _seconds(rendering.started_at, rendering.ended_at) or 0.0,
    }


def back_to_back(c: httpx.Client, conn: redis.Redis, dataset: str) -> dict[str, float]:
    """Two jobs as a pipeline submits them: the second right after the first is finished, neither
    client waiting for a report; the second job's figures, then both reports waited for (so the next
    pair, or another checkout's, starts on an idle worker)."""
    lead, _ = one_job(c, conn, dataset, wait_report=False)
    job_id, out = one_job(c, conn, dataset, wait_report=False, previous=lead)
    wait_for_report(c, lead)
    wait_for_report(c, job_id)
    out.update({f"previous {k}": v for k, v in report_job(conn, lead).items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", action="append", type=Path, help="a checkout to run (repeat; default: this one)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument(
        "--back-to-back", action="store_true", help="each timed job submitted right after another one finished"
    )
    parser.add_argument("--plain", action="store_true", help="the API and one plain `spotlight worker`, not `up`")
    args = parser.parse_args()
    repos = [r.resolve() for r in (args.repo or [REPO_ROOT])]
    x, loss, labels, probs = labelled_data(args.n, args.d)
    buf = io.BytesIO()
    np.savez(buf, embeddings=x, losses=loss, labels=labels)
    upload = buf.getvalue()
    runs: dict[Path, list[dict[str, float]]] = {r: [] for r in repos}
    with tempfile.TemporaryDirectory(prefix="spotlight-phases-") as tmp:
        services = [
            Service(Path(tmp) / str(i), workers=1, tenants=1, repo=r, up=not args.plain) for i, r in enumerate(repos)
        ]
        clients: list[tuple[httpx.Client, redis.Redis, str]] = []
        try:
            for service in services:
                (service.root).mkdir(parents=True, exist_ok=True)
                service.start()
                c = httpx.Client(base_url=service.url, timeout=600)
                files = {"file": ("d.npz", upload, "application/octet-stream")}
                r = c.post("/v1/datasets", headers=auth(0), files=files)
                assert r.status_code in (200, 201), r.text
                clients.append((c, redis.Redis.from_url(service.redis.url), r.json()["id"]))
            for c, conn, dataset in clients:
                one_job(c, conn, dataset)  # warm-up
            for _ in range(args.jobs):
                for repo, (c, conn, dataset) in zip(repos, clients, strict=True):
                    if args.back_to_back:
                        runs[repo].append(back_to_back(c, conn, dataset))
                    else:
                        runs[repo].append(one_job(c, conn, dataset)[1])
            slicer = []
            for _ in range(3):
                t = time.perf_counter()
                mixture_slicer.fit_slices(x, labels, probs, loss, n_slices=5)
                slicer.append(time.perf_counter() - t)
        finally:
            for c, _, _ in clients:
                c.close()
            for service in services:
                service.stop()
    how = "each submitted right after another job finished" if args.back_to_back else "one at a time"
    print(
        f"# {args.n} x {args.d}, 5 regions, defaults (device cpu), labels; medians of {args.jobs} jobs per "
        f"checkout ({how}), interleaved, {'plain workers' if args.plain else 'spotlight up'}; "
        f"load {os.getloadavg()[0]:.2f}"
    )
    keys = list(dict.fromkeys(k for repo in repos for run in runs[repo] for k in run))
    print("| s | " + " | ".join(r.name for r in repos) + " |")
    print("|---|" + "---|" * len(repos))
    for key in keys:
        cells = []
        for repo in repos:
            values = [run[key] for run in runs[repo] if key in run]
            cells.append(f"{statistics.median(values):.3f}" if values else "—")
        print(f"| {key} | " + " | ".join(cells) + " |")
    for repo in repos:
        walls = " / ".join(f"{run['finished']:.2f}" for run in runs[repo])
        print(f"# {repo.name}: submit to finished {walls} s")
    print(f"# mixture slicer (5 slices) on the same arrays: {' / '.join(f'{s:.2f}' for s in slicer)} s")


if __name__ == "__main__":
    main()
