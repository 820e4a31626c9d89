"""Load on loopback: many concurrent job submissions plus continuous status polling.

Starts a whole service in a temporary folder — embedded Redis (AOF), the API
(`python -m spotlight.cli api`) and N workers, with API keys for `--tenants` tenants — then, all
at once, submits `--jobs` searches (spread over the tenants, each on its own small dataset) while
`--pollers` clients keep asking for job status, until every accepted job has ended. The
per-tenant cap on active jobs stays at its default, so 200 jobs need 10 tenants. Prints jobs accepted / finished / failed / lost (accepted but never ended, or
vanished: must be 0) and the latency of submissions and status polls (p50 / p99).

    python -m bench.load                      # 200 jobs, 2 workers, 8 pollers
    python -m bench.load --jobs 50 --workers 1
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

from spotlight.redis_server import EmbeddedRedis, free_port

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
    """Redis + API + workers as child processes, each in its own session."""

    def __init__(self, root: Path, workers: int, tenants: int) -> None:
        self.root = root
        self.redis = EmbeddedRedis(root / "redis")
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = dict(os.environ)
        self.env.update({
            "SPOTLIGHT_STORE_URL": str(root / "store"),
            "SPOTLIGHT_DATA_DIR": str(root / "data"),
            "SPOTLIGHT_API_KEYS": ",".join(f"t{i}:{tenant_key(i)}" for i in range(tenants)),
            "SPOTLIGHT_PROGRESS_INTERVAL_S": "0.3",
            "SPOTLIGHT_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(REPO_ROOT),
        })
        self.env.pop("SPOTLIGHT_API_KEYS_FILE", None)
        self.workers = workers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *argv: str) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "spotlight.cli", *argv], cwd=REPO_ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ))

    def start(self) -> None:
        self.redis.start()
        self.env["REDIS_URL"] = self.redis.url
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
        raise SystemExit("the API did not become ready; see " + str(self.root / "api.log"))

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


async def run_load(url: str, n_jobs: int, n_pollers: int, datasets: list[str], timeout_s: float,
                   poll_interval_s: float) -> dict[str, Any]:
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
        "accepted": list(accepted), "refused": refused, "final": final, "vanished": vanished,
        "submit_lat": submit_lat, "poll_lat": poll_lat, "poll_errors": poll_errors,
        "t_submitted": t_submitted, "wall": wall, "listed_total": listed,
    }


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
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="spotlight-load-") as tmp:
        service = Service(Path(tmp), args.workers, args.tenants)
        try:
            service.start()
            with httpx.Client(base_url=service.url, timeout=60) as c:
                datasets = []
                for i in range(args.tenants):
                    r = c.post("/v1/datasets", headers=auth(i),
                               files={"file": ("d.npz", npz(args.n, args.d, i), "application/octet-stream")})
                    r.raise_for_status()
                    datasets.append(r.json()["id"])
            res = asyncio.run(run_load(service.url, args.jobs, args.pollers, datasets, args.timeout,
                                     args.poll_interval))
        finally:
            service.stop()

    accepted, final = res["accepted"], res["final"]
    finished = sum(1 for j in accepted if final.get(j) == "finished")
    failed = sum(1 for j in accepted if final.get(j) == "failed")
    lost = sum(1 for j in accepted if final.get(j) not in ("finished", "failed", "canceled"))
    ms = 1000.0
    print(f"load: {args.jobs} concurrent submissions, {args.workers} workers, {args.pollers} pollers "
          f"(pause {args.poll_interval} s), {args.tenants} tenants with a dataset of {args.n}x{args.d} each, "
          f"{os.cpu_count()} CPUs")
    print(f"  accepted        {len(accepted)}   refused {res['refused'] or 0}")
    print(f"  finished        {finished}")
    print(f"  failed          {failed}")
    print(f"  jobs lost       {lost}   (accepted but never ended, or vanished: {len(res['vanished'])})")
    print(f"  listed by API   {res['listed_total']}")
    print(f"  submit latency  p50 {pct(res['submit_lat'], 50) * ms:.1f} ms   p99 {pct(res['submit_lat'], 99) * ms:.1f} ms"
          f"   (all {len(res['submit_lat'])} sent in {res['t_submitted']:.2f} s)")
    print(f"  poll latency    p50 {pct(res['poll_lat'], 50) * ms:.1f} ms   p99 {pct(res['poll_lat'], 99) * ms:.1f} ms"
          f"   ({len(res['poll_lat'])} polls, {res['poll_errors']} errors, mean "
          f"{statistics.fmean(res['poll_lat']) * ms if res['poll_lat'] else float('nan'):.1f} ms)")
    print(f"  wall            {res['wall']:.1f} s   ({finished / res['wall']:.2f} jobs/s)")
    return 0 if lost == 0 and not res["refused"] else 1


if __name__ == "__main__":
    sys.exit(main())
