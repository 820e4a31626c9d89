"""Load on loopback: many concurrent job submissions plus continuous status polling.

Starts a whole service in a temporary folder — embedded Redis (AOF), the API
(`python -m spotlight.client.cli api`) and N workers, with API keys for `--tenants` tenants — then, all
at once, submits `--jobs` searches (spread over the tenants, each on its own small dataset) while
`--pollers` clients keep asking for job status, until every accepted job has ended. The
per-tenant cap on active jobs stays at its default, so 200 jobs need 10 tenants. Prints jobs accepted / finished / failed / lost (accepted but never ended, or
vanished: must be 0) and the latency of submissions and status polls (p50 / p99).

    python -m bench.load                      # 200 jobs, 2 workers, 8 pollers
    python -m bench.load --jobs 50 --workers 1
    python -m bench.load --hostile [--repo PATH]   # other tenants' latency and the API's RSS under attack

`--hostile` runs instead the attacks of issue 12 at once against one API and one worker, for
`--duration` seconds: 42 references trickling a byte a second, two `gzip, gzip` reference bombs,
two inline JSON bodies of short numbers (`--inline-mb` each), an .npz with 15 M metadata strings,
the hours-long job of the issue and three large ones; meanwhile a victim tenant polls `/healthz`
and `/v1/jobs` and submits one small job. Prints the victim's latency (p50 / p99 / max, errors),
how long its small job waited to start, what each attack got, and the API's peak RSS. `--repo`
runs another checkout's service (e.g. an export of an older commit) for a before/after comparison.

`--big-job` runs the fair-share case alone, twice side by side: one API and one worker, tenant 1's
`--large-jobs` large searches (5 regions each) on a 20 000 x 64 dataset, then, once the first one
runs, tenant 0's small job. Printed per run: how long the small job waited to start, how many of
the running large job's regions were done by then, the first large job's time per region (start to end:
with yielding on, it waits behind its own tenant's other jobs once it yielded) and when all of them were
done (what the yields cost in throughput: a checkpoint and a reload each). The first
run has yielding off (`SPOTLIGHT_YIELD_TO_OTHER_TENANTS=false`: a running job holds the worker to
its end), the second has it on (it gives the worker up at its next region boundary).

    python -m bench.load --big-job [--large-jobs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from spotlight.ops.redis_server import EmbeddedRedis, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"n_spotlights": 2, "steps": 30, "restarts": 1, "spotlight_size": 0.1, "device": "cpu"}
TERMINAL = {"finished", "failed", "canceled"}


def npz(n: int, d: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    losses = (rng.random(n) + 2.0 * (emb[:, 0] > 1.0)).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, embeddings=emb, losses=losses)
    return buf.getvalue()


def tenant_key(i: int) -> str:
    return f"load-key-{i}"


def auth(i: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant_key(i)}"}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Service:
    """Redis + API + workers as child processes, each in its own session. With `up`, the checkout's own
    `spotlight up` starts the API and its workers (whatever kinds of worker that checkout runs: search,
    report, callbacks) on this Redis: what a user gets from `make run`."""

    def __init__(self, root: Path, workers: int, tenants: int, repo: Path = REPO_ROOT, up: bool = False) -> None:
        self.root = root
        self.repo = repo
        self.redis = EmbeddedRedis(root / "redis")
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = dict(os.environ)
        self.env.update(
            {
                "SPOTLIGHT_STORE_URL": str(root / "store"),
                "SPOTLIGHT_DATA_DIR": str(root / "data"),
                "SPOTLIGHT_API_KEYS": ",".join(f"t{i}:{tenant_key(i)}" for i in range(tenants)),
                "SPOTLIGHT_PROGRESS_INTERVAL_S": "0.3",
                "SPOTLIGHT_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(repo),
            }
        )
        self.env.pop("SPOTLIGHT_API_KEYS_FILE", None)
        self.workers = workers
        self.up = up

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *argv: str) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "spotlight.client.cli", *argv],
                cwd=self.repo,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def start(self) -> None:
        self.redis.start()
        self.env["REDIS_URL"] = self.redis.url
        if self.up:
            self._spawn(
                "up",
                "up",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--data-dir",
                str(self.root / "data"),
            )
        else:
            self._spawn("api", "api", "--host", "127.0.0.1", "--port", str(self.port))
            for i in range(self.workers):
                self._spawn(f"worker{i}", "worker", "--name", f"load-w{i}")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("the API did not become ready; see " + str(self.root / ("up.log" if self.up else "api.log")))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.redis.stop()


async def run_load(
    url: str, n_jobs: int, n_pollers: int, datasets: list[str], timeout_s: float, poll_interval_s: float
) -> dict[str, Any]:
    """`datasets[i]` belongs to tenant i; job j goes to tenant j % len(datasets)."""
    tenants = len(datasets)
    limits = httpx.Limits(max_connections=n_jobs + n_pollers + 4, max_keepalive_connections=n_jobs + n_pollers + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        submit_lat: list[float] = []
        poll_lat: list[float] = []
        accepted: dict[str, int] = {}  # job id -> tenant
        refused: dict[str, int] = {}
        final: dict[str, str] = {}
        vanished: set[str] = set()
        poll_errors = 0

        async def submit(i: int) -> None:
            tenant = i % tenants
            body = {"dataset": datasets[tenant], "params": {**PARAMS, "seed": i}}
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/jobs", json=body, headers=auth(tenant))
            except httpx.HTTPError as exc:
                refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
                return
            submit_lat.append(time.perf_counter() - t0)
            if r.status_code == 202:
                accepted[r.json()["id"]] = tenant
            else:
                key = f"{r.status_code} {r.json().get('error', {}).get('code')}"
                refused[key] = refused.get(key, 0) + 1

        async def poller(stop: asyncio.Event) -> None:
            nonlocal poll_errors
            while not stop.is_set():
                pending = [j for j in accepted if j not in final]
                if not pending:
                    await asyncio.sleep(0.05)
                    continue
                job = random.choice(pending)
                t0 = time.perf_counter()
                try:
                    r = await client.get(f"/v1/jobs/{job}", headers=auth(accepted[job]))
                except httpx.HTTPError:
                    poll_errors += 1
                    continue
                poll_lat.append(time.perf_counter() - t0)
                if r.status_code == 404:
                    vanished.add(job)
                    final[job] = "vanished"
                elif r.status_code != 200:
                    poll_errors += 1
                elif r.json()["status"] in TERMINAL:
                    final[job] = r.json()["status"]
                await asyncio.sleep(poll_interval_s)

        stop = asyncio.Event()
        pollers = [asyncio.create_task(poller(stop)) for _ in range(n_pollers)]
        t_start = time.perf_counter()
        await asyncio.gather(*(submit(i) for i in range(n_jobs)))
        t_submitted = time.perf_counter() - t_start
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(final) < len(accepted):
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*pollers, return_exceptions=True)
        wall = time.perf_counter() - t_start

        # A last look at every accepted job: anything not ended now is lost.
        for job, tenant in accepted.items():
            if job in final:
                continue
            r = await client.get(f"/v1/jobs/{job}", headers=auth(tenant))
            if r.status_code == 200 and r.json()["status"] in TERMINAL:
                final[job] = r.json()["status"]
        listed = 0
        for tenant in range(tenants):
            listed += (await client.get("/v1/jobs", params={"limit": 1000}, headers=auth(tenant))).json()["total"]
    return {
        "accepted": list(accepted),
        "refused": refused,
        "final": final,
        "vanished": vanished,
        "submit_lat": submit_lat,
        "poll_lat": poll_lat,
        "poll_errors": poll_errors,
        "t_submitted": t_submitted,
        "wall": wall,
        "listed_total": listed,
    }


# ----- --hostile: the attacks of issue 12, all at once -----
class HostileServer:
    """Loopback HTTP server: /trickle.npz sends a byte a second, /bomb.npz is `gzip, gzip` of zeros."""

    def __init__(self, bomb_mb: int) -> None:
        import gzip
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        bomb = gzip.compress(gzip.compress(b"\0" * (bomb_mb * 1024 * 1024), 9), 9)
        stop = self.stop = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                self.close_connection = True
                if self.path == "/bomb.npz":
                    self.send_response(200)
                    self.send_header("Content-Encoding", "gzip, gzip")
                    self.send_header("Content-Length", str(len(bomb)))
                    self.end_headers()
                    self.wfile.write(bomb)
                    return
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                while not stop.wait(1.0):
                    try:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    except OSError:
                        return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def short_numbers_body(mb: float, d: int = 64) -> bytes:
    row = "[" + ",".join(["0"] * d) + "]"
    n = int(mb * 1e6 / (len(row) + 3))
    return ('{"embeddings": [' + ",".join([row] * n) + '], "losses": [' + ",".join(["1"] * n) + "]}").encode()


def metadata_bomb(millions: float) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, embeddings=np.ones((4, 2)), losses=np.ones(4), metadata=np.array(["{}"] * int(millions * 1e6)))
    return buf.getvalue()


HUGE_JOB = {
    "n_spotlights": 50,
    "steps": 100_000,
    "restarts": 256,
    "n_permutations": 1000,
    "shape": "diagonal",
    "device": "cpu",
}
LARGE_JOB = {"n_spotlights": 5, "steps": 2000, "restarts": 8, "spotlight_size": 0.05, "device": "cpu"}
SMALL_JOB = {"n_spotlights": 1, "steps": 30, "restarts": 1, "spotlight_size": 0.1, "device": "cpu"}


def run_hostile(args: argparse.Namespace) -> int:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from bench.rss import RssSampler

    attacker_tenants = [1, 2, 3]
    hostile = HostileServer(args.bomb_mb)
    outcomes: dict[str, dict[str, int]] = {}
    lock = threading.Lock()

    def note(kind: str, outcome: str) -> None:
        with lock:
            outcomes.setdefault(kind, {})[outcome] = outcomes.setdefault(kind, {}).get(outcome, 0) + 1

    with tempfile.TemporaryDirectory(prefix="spotlight-hostile-") as tmp:
        service = Service(Path(tmp), 1, 4, repo=args.repo.resolve())
        service.env.update(
            {
                "SPOTLIGHT_ALLOWED_SCHEMES": '["file", "http"]',
                "SPOTLIGHT_ALLOWED_HOSTS": '["127.0.0.1"]',
                "SPOTLIGHT_ALLOW_PRIVATE_ADDRESSES": "true",
                "SPOTLIGHT_REFERENCE_TIMEOUT_S": str(args.duration),
                "SPOTLIGHT_MAX_UPLOAD_BYTES": str(512 * 1024**2),
            }
        )
        sampler: RssSampler | None = None
        try:
            service.start()
            sampler = RssSampler(service.procs[0].pid)
            sampler.start()
            with httpx.Client(base_url=service.url, timeout=60) as c:
                victim_ds = c.post(
                    "/v1/datasets",
                    headers=auth(0),
                    files={"file": ("d.npz", npz(300, 8, 0), "application/octet-stream")},
                ).json()["id"]
                big_ds = c.post(
                    "/v1/datasets",
                    headers=auth(1),
                    files={"file": ("d.npz", npz(20000, 64, 1), "application/octet-stream")},
                ).json()["id"]

            latencies: list[float] = []
            errors: dict[str, int] = {}
            small_wait: float | None = None
            stop = threading.Event()

            def victim() -> None:
                with httpx.Client(base_url=service.url, timeout=10, headers=auth(0)) as v:
                    i = 0
                    while not stop.is_set():
                        path = "/healthz" if i % 2 else "/v1/jobs"
                        i += 1
                        t0 = time.perf_counter()
                        try:
                            r = v.get(path)
                            latencies.append(time.perf_counter() - t0)
                            if r.status_code != 200:
                                errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                        except httpx.HTTPError as exc:
                            latencies.append(time.perf_counter() - t0)
                            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                        stop.wait(0.05)

            def attack(kind: str, tenant: int, method: str, path: str, **kw: Any) -> None:
                try:
                    with httpx.Client(base_url=service.url, timeout=args.duration + 30, headers=auth(tenant)) as a:
                        r = a.request(method, path, **kw)
                    note(
                        kind,
                        f"{r.status_code} {r.json().get('error', {}).get('code', '') if r.status_code >= 400 else ''}".strip(),
                    )
                except (httpx.HTTPError, ValueError) as exc:
                    note(kind, type(exc).__name__)

            inline = short_numbers_body(args.inline_mb)
            meta_npz = metadata_bomb(15)
            watcher = threading.Thread(target=victim, daemon=True)
            watcher.start()
            t_start = time.monotonic()
            with ThreadPoolExecutor(64) as pool:
                jobs = [
                    pool.submit(
                        attack, "job huge (issue)", 1, "POST", "/v1/jobs", json={"dataset": big_ds, "params": HUGE_JOB}
                    )
                ]
                jobs += [
                    pool.submit(
                        attack, "job large", 1, "POST", "/v1/jobs", json={"dataset": big_ds, "params": LARGE_JOB}
                    )
                    for _ in range(3)
                ]
                for f in jobs:
                    f.result()
                for i in range(2):
                    pool.submit(
                        attack,
                        "gzip,gzip reference",
                        attacker_tenants[i % 3],
                        "POST",
                        "/v1/datasets",
                        json={"uri": f"http://127.0.0.1:{hostile.port}/bomb.npz"},
                    )
                for i in range(2):
                    pool.submit(
                        attack,
                        f"inline JSON {len(inline) / 1e6:.0f} MB",
                        attacker_tenants[i % 3],
                        "POST",
                        "/v1/datasets",
                        content=inline,
                        headers={"content-type": "application/json"},
                    )
                pool.submit(
                    attack,
                    "npz 15 M metadata strings",
                    3,
                    "POST",
                    "/v1/datasets",
                    files={"file": ("m.npz", meta_npz, "application/octet-stream")},
                )
                for i in range(42):
                    pool.submit(
                        attack,
                        "slow reference",
                        attacker_tenants[i % 3],
                        "POST",
                        "/v1/datasets",
                        json={"uri": f"http://127.0.0.1:{hostile.port}/trickle.npz"},
                    )
                # The victim's small job, once the attack is under way.
                time.sleep(2)
                small_id = None
                with httpx.Client(base_url=service.url, timeout=10, headers=auth(0)) as v:
                    t_sub = time.monotonic()
                    while time.monotonic() - t_start < args.duration:
                        try:
                            if small_id is None:
                                r = v.post("/v1/jobs", json={"dataset": victim_ds, "params": SMALL_JOB})
                                small_id = r.json().get("id") if r.status_code == 202 else None
                            elif v.get(f"/v1/jobs/{small_id}").json().get("started_at"):
                                small_wait = time.monotonic() - t_sub
                                break
                        except (httpx.HTTPError, ValueError):
                            pass  # the API did not answer in time: keep trying until the run ends
                        time.sleep(0.25)
                stop.wait(max(0.0, args.duration - (time.monotonic() - t_start)))
                stop.set()
                hostile.stop.set()
            watcher.join(15)
        finally:
            if sampler is not None:
                sampler.stop.set()
            service.stop()
            hostile.close()

    ms = 1000.0
    mib = 1024**2
    print(f"hostile: {args.duration:.0f} s of attacks on one API + one worker, API from {args.repo}")
    print(
        f"  victim GETs      {len(latencies)}   p50 {pct(latencies, 50) * ms:.0f} ms   p99 {pct(latencies, 99) * ms:.0f} ms"
        f"   max {max(latencies) * ms if latencies else float('nan'):.0f} ms   errors {errors or 0}"
    )
    waited = f"started after {small_wait:.1f} s" if small_wait is not None else "not started within the run"
    print(f"  victim small job {waited}")
    assert sampler is not None
    print(f"  API RSS          before {sampler.before / mib:.0f} MiB   peak {sampler.peak / mib:.0f} MiB")
    for kind, seen in outcomes.items():
        print(f"  {kind:<26} {seen}")
    return 0


def _wait_for_status(c: httpx.Client, tenant: int, job: str, done: Any, timeout: float) -> dict[str, Any]:
    """Poll a job until `done(view)`; polling is what a client of the API does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = c.get(f"/v1/jobs/{job}", headers=auth(tenant)).json()
        if done(view):
            return dict(view)
        time.sleep(0.1)
    raise SystemExit(f"job {job} did not get there within {timeout:.0f} s: {view}")


def _seconds(view: dict[str, Any]) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(view["ended_at"]) - datetime.fromisoformat(view["started_at"])).total_seconds()


def run_big_job(args: argparse.Namespace) -> int:
    rows = []
    for yielding in (False, True):
        with tempfile.TemporaryDirectory(prefix="spotlight-bigjob-") as tmp:
            service = Service(Path(tmp), 1, 2, repo=args.repo.resolve())
            service.env["SPOTLIGHT_YIELD_TO_OTHER_TENANTS"] = str(yielding).lower()
            try:
                service.start()
                with httpx.Client(base_url=service.url, timeout=60) as c:
                    files = {"file": ("d.npz", npz(300, 8, 0), "application/octet-stream")}
                    small_ds = c.post("/v1/datasets", headers=auth(0), files=files).json()["id"]
                    files = {"file": ("d.npz", npz(20000, 64, 1), "application/octet-stream")}
                    big_ds = c.post("/v1/datasets", headers=auth(1), files=files).json()["id"]
                    large = []
                    for _ in range(args.large_jobs):
                        r = c.post("/v1/jobs", headers=auth(1), json={"dataset": big_ds, "params": LARGE_JOB})
                        assert r.status_code == 202, r.text
                        large.append(r.json()["id"])
                    _wait_for_status(c, 1, large[0], lambda v: v["status"] == "running", args.timeout)
                    t_sub = time.monotonic()
                    r = c.post("/v1/jobs", headers=auth(0), json={"dataset": small_ds, "params": SMALL_JOB})
                    assert r.status_code == 202, r.text
                    small = r.json()["id"]
                    _wait_for_status(c, 0, small, lambda v: v["status"] != "queued", args.timeout)
                    waited = time.monotonic() - t_sub
                    at_start = c.get(f"/v1/jobs/{large[0]}", headers=auth(1)).json()
                    _wait_for_status(c, 0, small, lambda v: v["status"] == "finished", args.timeout)
                    ends = [
                        _wait_for_status(c, 1, job, lambda v: v["status"] == "finished", args.timeout) for job in large
                    ]
                    all_done = time.monotonic() - t_sub
            finally:
                service.stop()
        rows.append((yielding, waited, at_start, _seconds(ends[0]) / LARGE_JOB["n_spotlights"], all_done))
    print(
        f"big job: one API + one worker; tenant 1 queues {args.large_jobs} jobs of {LARGE_JOB} on 20000x64, "
        f"tenant 0 then submits {SMALL_JOB} on 300x8; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    for yielding, waited, at_start, per_region, all_done in rows:
        p = at_start["progress"]
        print(
            f"  yielding {'on ' if yielding else 'off'}  small job started after {waited:5.1f} s"
            f"   (then the first large job was {at_start['status']}, spotlight {p['spotlight']} of {p['n_spotlights']})"
            f"   first large job: {per_region:.1f} s per region, start to end"
            f"   all large jobs done {all_done:.1f} s after the small job's submission"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pollers", type=int, default=8)
    parser.add_argument("--tenants", type=int, default=10, help="API keys; each tenant gets its own dataset")
    parser.add_argument("--n", type=int, default=300, help="rows per dataset")
    parser.add_argument("--d", type=int, default=8, help="embedding dimension")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="pause of each poller between polls (s)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for all jobs to end")
    parser.add_argument("--hostile", action="store_true", help="run the attacks of issue 12 instead (see above)")
    parser.add_argument("--duration", type=float, default=40.0, help="--hostile: seconds of attack")
    parser.add_argument("--inline-mb", type=float, default=32.0, help="--hostile: size of each inline JSON body")
    parser.add_argument("--bomb-mb", type=int, default=256, help="--hostile: zeros inside each gzip bomb, MiB")
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout whose service to run")
    parser.add_argument("--big-job", action="store_true", help="run the fair-share case alone, yielding off then on")
    parser.add_argument("--large-jobs", type=int, default=3, help="--big-job: tenant 1's large jobs")
    args = parser.parse_args(argv)
    if args.hostile:
        return run_hostile(args)
    if args.big_job:
        return run_big_job(args)

    with tempfile.TemporaryDirectory(prefix="spotlight-load-") as tmp:
        service = Service(Path(tmp), args.workers, args.tenants)
        try:
            service.start()
            with httpx.Client(base_url=service.url, timeout=60) as c:
                datasets = []
                for i in range(args.tenants):
                    r = c.post(
                        "/v1/datasets",
                        headers=auth(i),
                        files={"file": ("d.npz", npz(args.n, args.d, i), "application/octet-stream")},
                    )
                    r.raise_for_status()
                    datasets.append(r.json()["id"])
            res = asyncio.run(
                run_load(service.url, args.jobs, args.pollers, datasets, args.timeout, args.poll_interval)
            )
        finally:
            service.stop()

    accepted, final = res["accepted"], res["final"]
    finished = sum(1 for j in accepted if final.get(j) == "finished")
    failed = sum(1 for j in accepted if final.get(j) == "failed")
    lost = sum(1 for j in accepted if final.get(j) not in ("finished", "failed", "canceled"))
    ms = 1000.0
    print(
        f"load: {args.jobs} concurrent submissions, {args.workers} workers, {args.pollers} pollers "
        f"(pause {args.poll_interval} s), {args.tenants} tenants with a dataset of {args.n}x{args.d} each, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"  accepted        {len(accepted)}   refused {res['refused'] or 0}")
    print(f"  finished        {finished}")
    print(f"  failed          {failed}")
    print(f"  jobs lost       {lost}   (accepted but never ended, or vanished: {len(res['vanished'])})")
    print(f"  listed by API   {res['listed_total']}")
    print(
        f"  submit latency  p50 {pct(res['submit_lat'], 50) * ms:.1f} ms   p99 {pct(res['submit_lat'], 99) * ms:.1f} ms"
        f"   (all {len(res['submit_lat'])} sent in {res['t_submitted']:.2f} s)"
    )
    print(
        f"  poll latency    p50 {pct(res['poll_lat'], 50) * ms:.1f} ms   p99 {pct(res['poll_lat'], 99) * ms:.1f} ms"
        f"   ({len(res['poll_lat'])} polls, {res['poll_errors']} errors, mean "
        f"{statistics.fmean(res['poll_lat']) * ms if res['poll_lat'] else float('nan'):.1f} ms)"
    )
    print(f"  wall            {res['wall']:.1f} s   ({finished / res['wall']:.2f} jobs/s)")
    return 0 if lost == 0 and not res["refused"] else 1


if __name__ == "__main__":
    sys.exit(main())
