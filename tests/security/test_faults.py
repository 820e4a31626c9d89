"""Faults, as real processes: Redis killed and restarted, the API killed mid-upload and mid-poll,
a worker killed mid-job, the store unwritable. Nothing stored is lost or corrupt, and no job is
left `running`.

(Work-horse kills, whole-worker kills with a retry, and a store error inside the worker are
covered at the RQ level in tests/runtime/test_workers.py; these tests watch through the API.)
"""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from spotlight.server.keys import Keys
from spotlight.server.settings import Settings

from .stack import QUICK_PARAMS, REPO_ROOT, Stack, npz_bytes, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    s.start_redis()
    try:
        yield s
    finally:
        s.close()


def digest_tree(root: Path, below: str) -> dict[str, str]:
    """sha256 of every file under root/below (hidden work folders excluded)."""
    base = root / below
    if not base.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def test_redis_restart_keeps_queued_jobs_and_finished_results(stack: Stack) -> None:
    stack.fsync_every_write()  # what Redis acknowledged is on disk when it is SIGKILLed below
    stack.start_api()
    stack.start_worker("w1")
    with stack.client() as c:
        ds = stack.upload(c)
        done = stack.submit(c, ds)
        assert stack.wait_ended(c, done, 90)["status"] == "finished", stack.log("w1")
        regions_before = c.get(f"/v1/jobs/{done}/regions").json()

        stack.kill("w1")  # queue jobs with nobody to run them
        queued = [stack.submit(c, ds, {**QUICK_PARAMS, "seed": i}) for i in range(3)]
        aof = stack.aof_bytes()
        assert all(job.encode() in aof for job in [done, *queued])  # the restart below can only replay the file
        stack.redis.kill()

        down = c.get(f"/v1/jobs/{done}")
        assert down.status_code == 503 and down.json()["error"]["code"] == "service_unavailable"
        assert c.get("/healthz").status_code == 200

        stack.redis.start()
        assert c.get(f"/v1/jobs/{done}/regions").json() == regions_before
        assert all(stack.status(c, j)["status"] == "queued" for j in queued)
        stack.start_worker("w2")
        for job in queued:
            assert stack.wait_ended(c, job, 90)["status"] == "finished", stack.log("w2")
        assert c.get(f"/v1/jobs/{queued[0]}/regions").status_code == 200


def test_a_job_taken_by_a_worker_that_vanished_runs_on_the_next(stack: Stack) -> None:
    """A worker gone without closing its connection (a node lost, a SIGKILLed worker whose scheduler
    child still holds the socket) still waits in Redis's BLPOP, so Redis hands it the next job and
    forgets it: queued, in no lane. Each idle worker's maintenance queues it again (spotlight/server/stranded.py)."""
    stack.start_api()
    keys = Keys.of(Settings(redis_url=stack.redis.url))
    lanes = [f"rq:queue:{keys.rq_queue}", f"rq:queue:{keys.large_queue}"]
    admin = redis.Redis.from_url(stack.redis.url)
    ghost = admin.connection_pool.get_connection()
    ghost.send_command("BLPOP", *lanes, 0)  # and never reads the answer
    wait_for(lambda: any(cl.get("cmd") == "blpop" for cl in admin.client_list()), 10, "the ghost's BLPOP")
    with stack.client() as c:
        job = stack.submit(c, stack.upload(c))
        assert not any(admin.llen(lane) for lane in lanes)  # the ghost has it
        assert stack.status(c, job)["status"] == "queued"
        stack.start_worker("w1")
        assert stack.wait_ended(c, job, 90)["status"] == "finished", stack.log("w1")
    ghost.disconnect()
    admin.close()


def test_a_worker_survives_a_redis_restart(stack: Stack) -> None:
    stack.fsync_every_write()
    stack.start_api()
    worker = stack.start_worker("w1")
    with stack.client() as c:
        ds = stack.upload(c)
        assert stack.wait_ended(c, stack.submit(c, ds), 90)["status"] == "finished"
        # Kill Redis once the worker is back to waiting for work (its blocking pop on the queue, as
        # Redis itself lists it): RQ retries that wait with backoff. An outage during the worker's own
        # bookkeeping between two jobs ends the process instead (RQ's loop), and `spotlight up` or the
        # orchestrator restarts it; that case is not what this test claims.
        admin = redis.Redis.from_url(stack.redis.url)
        wait_for(
            lambda: any(cl.get("cmd") in ("blpop", "blmpop") for cl in admin.client_list()),
            30,
            "the worker to wait on its queues",
        )
        admin.close()
        stack.redis.kill()
        # the worker logs the outage (RQ's reconnect loop, or our skipped maintenance) before Redis returns
        wait_for(
            lambda: re.search("could not connect to Redis|Redis unreachable", stack.log("w1")),
            30,
            "the worker to lose Redis",
        )
        stack.redis.start()
        job = stack.submit(c, ds, {**QUICK_PARAMS, "seed": 7})
        assert stack.wait_ended(c, job, 90)["status"] == "finished", stack.log("w1")
    assert worker.poll() is None


def test_a_worker_that_loses_redis_mid_job_serves_again_once_it_returns(tmp_path: Path) -> None:
    """An outage outside RQ's wait for work (here: while the worker supervises a running job and
    renews its heartbeat) ends RQ's loop; the worker must come back rather than exit."""
    stack = Stack(tmp_path, SPOTLIGHT_WORKER_HEARTBEAT_S="1")
    stack.start_redis()
    try:
        stack.fsync_every_write()
        stack.start_api()
        worker = stack.start_worker("w1", held=True)
        with stack.client() as c:
            ds = stack.upload(c)
            first = stack.submit(c, ds)
            stack.gate(first).wait_held()
            stack.redis.kill()  # mid-job: the worker's next heartbeat meets a dead Redis
            wait_for(
                lambda: "lost Redis" in stack.log("w1") or worker.poll() is not None,
                60,
                "the worker to notice the outage",
            )
            assert worker.poll() is None, stack.log("w1")
            stack.redis.start()
            second = stack.submit(c, ds, {**QUICK_PARAMS, "seed": 3})
            stack.gate(second).open()
            assert stack.wait_ended(c, second, 90)["status"] == "finished", stack.log("w1")
        assert worker.poll() is None
    finally:
        stack.close()


def test_api_killed_mid_upload_loses_and_corrupts_nothing(stack: Stack) -> None:
    stack.start_api()
    with stack.client() as c:
        kept = stack.upload(c, seed=1)
    before = digest_tree(stack.store_dir, "datasets")
    assert before

    body = npz_bytes(n=200_000, d=8, seed=2)  # ~8 MB: half is sent, then the API is killed
    killed = threading.Event()

    def cut_body() -> Iterator[bytes]:
        boundary = b"--spotlightboundary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.npz"\r\n'
        yield b"Content-Type: application/octet-stream\r\n\r\n"
        half = len(body) // 2
        for i in range(0, half, 256 * 1024):
            yield body[i : min(i + 256 * 1024, half)]
        killed.wait(60)  # the rest never reaches a living server
        yield body[half:]
        yield b"\r\n" + boundary + b"--\r\n"

    errors: list[BaseException] = []

    def upload() -> None:
        try:
            with stack.client() as c:
                c.post(
                    "/v1/datasets",
                    content=cut_body(),
                    headers={"Content-Type": "multipart/form-data; boundary=spotlightboundary"},
                )
        except BaseException as exc:  # noqa: BLE001 - the server vanishes mid-body: expected
            errors.append(exc)

    def receiving() -> bool:  # the API has started writing the body into its ingest work area
        return any(p.is_file() and p.stat().st_size > 0 for p in (stack.store_dir / ".ingest").rglob("*"))

    thread = threading.Thread(target=upload)
    thread.start()
    try:
        wait_for(receiving, 30, "the API to receive the upload")
        stack.kill("api")
    finally:
        killed.set()
        thread.join(30)
    assert errors and isinstance(errors[0], httpx.HTTPError)

    stack.start_api()
    with stack.client() as c:
        listed = c.get("/v1/datasets").json()
        assert [d["id"] for d in listed["datasets"]] == [kept]  # the cut upload registered nothing
        assert digest_tree(stack.store_dir, "datasets") == before  # nothing stored changed
        stack.start_worker("w1")
        assert stack.wait_ended(c, stack.submit(c, kept), 90)["status"] == "finished", stack.log("w1")


def test_api_killed_mid_poll_serves_only_whole_results(stack: Stack) -> None:
    """Poll status and regions while the job runs (held at the test's gate) and while the API is
    killed and restarted: every answer is a status, a 409 job_not_finished, or a complete result —
    never 5xx or half."""
    stack.start_api()
    stack.start_worker("w1", held=True)
    seen: list[tuple[int, str]] = []
    with stack.client() as c:
        ds = stack.upload(c)
        job = stack.submit(c, ds)
        gate = stack.gate(job)
        gate.wait_held()

        def poll_once() -> str | None:
            try:
                s = c.get(f"/v1/jobs/{job}")
                r = c.get(f"/v1/jobs/{job}/regions")
            except httpx.TransportError:
                return None  # the API is down right now
            seen.append((s.status_code, s.json()["status"] if s.status_code == 200 else s.text))
            if r.status_code == 409:
                assert r.json()["error"]["code"] == "job_not_finished"
            else:
                assert r.status_code == 200, r.text
                regions = r.json()["regions"]
                assert len(regions) == QUICK_PARAMS["n_spotlights"]
                assert all(len(reg["center"]) == 4 for reg in regions)
            return seen[-1][1]

        for _ in range(5):
            assert poll_once() == "running"
        stack.kill("api")
        for _ in range(3):
            assert poll_once() is None
        stack.start_api()
        assert poll_once() == "running"  # the restarted API sees the same running job
        gate.open()
        wait_for(lambda: poll_once() in ("finished", "failed"), 120, "the job to end", interval=0.1)
        assert seen[-1] == (200, "finished"), stack.log("w1")
        assert all(code == 200 for code, _ in seen)
        assert c.get(f"/v1/jobs/{job}/weights").status_code == 200


def test_a_running_job_canceled_over_http_stops_at_the_next_step(stack: Stack) -> None:
    """DELETE on a job that is running (held mid-search at the test's gate, so it cannot finish first
    on a fast CPU): 202 with cancel_requested, then `canceled` with no results."""
    stack.start_api()
    stack.start_worker("w1", held=True)
    with stack.client() as c:
        job = stack.submit(c, stack.upload(c))
        stack.gate(job).wait_held()
        r = c.delete(f"/v1/jobs/{job}")
        assert r.status_code == 202 and r.json()["cancel_requested"] is True and r.json()["status"] == "running"
        ended = stack.wait_ended(c, job, 60)  # the worker's own cancel check ends the hold
        assert ended["status"] == "canceled" and ended["error"]["code"] == "canceled", ended
        assert ended["progress"]["fraction"] < 1.0
        assert c.get(f"/v1/jobs/{job}/regions").status_code == 409
        assert c.delete(f"/v1/jobs/{job}").status_code == 409  # nothing left to cancel


def test_results_are_written_whole_or_not_at_all(tmp_path: Path) -> None:
    """A writer killed mid-file leaves no file under the final name (write, then rename)."""
    script = (
        "import signal, sys\n"
        "from spotlight.server.store import ArtifactStore\n"
        "s = ArtifactStore(sys.argv[1])\n"
        "with s.open_write_atomic('jobs/job_x/regions.json') as f:\n"
        "    f.write(b'{\"regions\": [')\n"
        "    f.flush()\n"
        "    print('writing', flush=True)\n"
        "    signal.pause()  # until the test kills it\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    folder = tmp_path / "jobs" / "job_x"
    assert not (folder / "regions.json").exists()
    assert [p.name.startswith(".tmp-") for p in folder.iterdir()] == [True]


def test_a_worker_killed_with_no_retry_left_shows_failed_worker_lost(tmp_path: Path) -> None:
    s = Stack(tmp_path, SPOTLIGHT_JOB_RETRIES=0)
    s.start_redis()
    try:
        s.start_api()
        s.start_worker("w1", held=True)
        s.start_worker("w2", held=True)  # its maintenance notices the victim's abandoned job
        with s.client() as c:
            ds = s.upload(c)
            job = s.submit(c, ds)
            s.gate(job).wait_held()
            assert s.status(c, job)["status"] == "running"
            import redis as redis_lib
            from rq.job import Job

            victim = Job.fetch(job, connection=redis_lib.Redis.from_url(s.redis.url)).worker_name
            s.kill(victim)  # worker and work-horse, as a machine losing the process group
            ended = s.wait_ended(c, job, 60)
            assert ended["status"] == "failed"
            assert ended["error"]["code"] == "worker_lost"
            # and the surviving worker still serves
            after = s.submit(c, ds, QUICK_PARAMS)
            s.gate(after).open()
            assert s.wait_ended(c, after, 90)["status"] == "finished"
    finally:
        s.close()


def test_an_unwritable_store_gives_503_and_the_service_recovers(stack: Stack) -> None:
    stack.start_api()
    with stack.client() as c:
        kept = stack.upload(c, seed=1)
        datasets = stack.store_dir / "datasets"
        moved = stack.store_dir / "datasets-away"
        shutil.move(datasets, moved)
        datasets.write_bytes(b"a file where a folder must be: every write below it fails")
        try:
            r = c.post("/v1/datasets", files={"file": ("x.npz", npz_bytes(seed=5), "application/octet-stream")})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "store_error"
            assert c.get("/healthz").status_code == 200
        finally:
            datasets.unlink()
            shutil.move(moved, datasets)
        assert c.get("/readyz").status_code == 200
        assert stack.upload(c, seed=5) != kept
        assert c.get(f"/v1/datasets/{kept}").status_code == 200
