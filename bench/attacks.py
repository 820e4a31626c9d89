"""The attacks of issue 25 on one running stack, side by side: does the API stay up for everyone?

Starts a whole service in a temporary folder with `bench.load.Service` — embedded Redis (AOF), the
API (`python -m spotlight.client.cli api`, one process) and one worker — with API keys for two tenants,
alice and bob. Each finishes a small search (2 regions on 2 000 x 7 rows) and uploads a dataset of
`--big-rows` x 7 rows. Then, one after the other:

0. no attack (the control: what /healthz takes on this machine at the moment);
a. score bodies at the cap (`max_score_body_bytes` of `[0,0,0,0,0,0,0]` rows: the most Python
   objects per byte) from 4 clients, then 8, then 64 (half of them each tenant's), each sending again
   as soon as it has its answer (a refusal: again after 0.2 s, not after Retry-After);
b. the largest score answers (a stored dataset's rows x 2 regions = 2 M weights, ~40 MB of JSON),
   8 clients reading them whole, then 32 clients that read one chunk and hold the connection;
c. `--records` job records of alice's (submitted and canceled, 8 at a time), then 80 clients
   listing `?status=queued` (and, second, 80 listing `?status=canceled&limit=1000`, the status
   that has every record) while bob lists his datasets (his latency is printed too);
d. image-heavy Parquet uploads, 8 at once: 300 identical 4096² PNGs (the issue's 9 KB file), then
   300 distinct 2048² PNGs (each at the per-image limit, together past the upload's pixel budget);
e. 16 concurrent `POST /v1/jobs` with one Idempotency-Key and one body (an inline dataset), and
   with two bodies alternating, `--rounds` keys each: how many jobs each key made.

During each, a prober asks `/healthz` every 0.25 s (5 s timeout; a failure is a timeout, an error
or a non-200) and a sampler reads the API's RSS every 20 ms (psutil). Printed: one row per attack
with /healthz's max latency, its failures, the API's peak RSS, what the attackers got, and whether
the issue's goal holds (/healthz < 1 s with no failure, RSS < 1.5 GB; for e, one job per key).
The load average is printed with the figures: on a shared machine the latencies are noisy.

    python -m bench.attacks            # ~5 min on 2 shared cores
    python -m bench.attacks --quick    # shorter attacks, 400 records, 500 000-row dataset (~2 min)
    python -m bench.attacks --only a,e # some of them
    python -m bench.attacks --repo PATH  # another checkout's service (e.g. an export of an older commit)
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.load import REPO_ROOT, Service, npz
from bench.rss import RssSampler
from spotlight.server.settings import Settings

TENANTS = {"alice": "attack-key-alice", "bob": "attack-key-bob"}
DIM = 7
CLIENTS = (4, 8, 64)
JOB_PARAMS = {"n_spotlights": 2, "steps": 30, "restarts": 1, "spotlight_size": 0.1, "device": "cpu"}
HEALTHZ_GOAL_S = 1.0
RSS_GOAL_BYTES = 1.5e9
MIB = 1024**2


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TENANTS[tenant]}"}


def outcome(r: httpx.Response) -> str:
    if r.status_code < 400:
        return str(r.status_code)
    try:
        return f"{r.status_code} {r.json()['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return str(r.status_code)


def score_body_at_cap(cap: int) -> bytes:
    """Bare rows of seven zeros, as many as the cap holds: the most numbers per byte a row can carry."""
    row = b"[" + b",".join([b"0"] * DIM) + b"]"
    head, tail = b'{"embeddings": [', b"]}"
    n = (cap - len(head) - len(tail) + 1) // (len(row) + 1)
    body = head + b",".join([row] * n) + tail
    assert len(body) <= cap
    return body


def png(size: int, shade: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (shade % 256, (shade // 256) % 256, 7)).save(buf, format="PNG")
    return buf.getvalue()


def image_parquet(images: list[bytes], seed: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(images)
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "embedding": pa.array(rng.normal(size=(n, DIM)).astype(np.float32).tolist(), type=pa.list_(pa.float32())),
            "loss": rng.random(n).astype(np.float32),
            "image": pa.array(images, type=pa.binary()),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# ----- what every attack is measured by -----
class HealthProbe(threading.Thread):
    """Asks /healthz every `interval` s on its own connection; records each answer's latency and failures."""

    def __init__(self, url: str, interval: float = 0.25, timeout: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.url, self.interval, self.timeout = url, interval, timeout
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout) as c:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = c.get("/healthz")
                    if r.status_code != 200:
                        self.failures[str(r.status_code)] += 1
                except httpx.HTTPError as exc:
                    self.failures[type(exc).__name__] += 1
                self.latencies.append(time.perf_counter() - t0)
                self.stop.wait(max(0.0, self.interval - (time.perf_counter() - t0)))


@dataclass
class Row:
    attack: str
    healthz_max_s: float
    healthz_probes: int
    failures: dict[str, int]
    rss_before: int
    rss_peak: int
    load: float
    got: dict[str, int]
    extra: str = ""
    extra_ok: bool = True

    @property
    def goal_met(self) -> bool:
        return (
            self.healthz_max_s < HEALTHZ_GOAL_S
            and not self.failures
            and self.rss_peak < RSS_GOAL_BYTES
            and self.extra_ok
        )


@dataclass
class Attack:
    """Outcomes the attacking clients got, counted across threads."""

    got: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, what: str) -> None:
        with self.lock:
            self.got[what] += 1


@contextmanager
def measured(service: Service, rows: list[Row], name: str, attack: Attack) -> Iterator[Row]:
    probe = HealthProbe(service.url)
    sampler = RssSampler(service.procs[0].pid)
    row = Row(name, 0.0, 0, {}, sampler.before, 0, 0.0, {})
    probe.start()
    sampler.start()
    try:
        yield row
    finally:
        probe.stop.set()
        sampler.stop.set()
        probe.join(10)
        sampler.join(5)
        row.healthz_max_s = max(probe.latencies, default=float("nan"))
        row.healthz_probes = len(probe.latencies)
        row.failures = dict(probe.failures)
        row.rss_peak = sampler.peak
        row.load = os.getloadavg()[0]
        row.got = dict(attack.got)
        rows.append(row)
        print(f"  {name}: healthz max {row.healthz_max_s:.2f} s, peak RSS {row.rss_peak / MIB:.0f} MiB, {row.got}")


def hammer(
    url: str,
    clients: list[str],
    duration: float,
    send: Callable[[httpx.Client, str], httpx.Response],
    attack: Attack,
) -> None:
    """Each client (a tenant's name) sends again as soon as it has an answer, for `duration` s; a
    refusal is retried after 0.2 s (a hostile client does not wait for Retry-After)."""
    deadline = time.monotonic() + duration

    def client(tenant: str) -> None:
        with httpx.Client(base_url=url, timeout=120, headers=auth(tenant)) as c:
            while time.monotonic() < deadline:
                try:
                    r = send(c, tenant)
                    attack.note(outcome(r))
                    if r.status_code >= 400:
                        time.sleep(0.2)
                except httpx.HTTPError as exc:
                    attack.note(type(exc).__name__)

    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(client, clients))


def streamed(c: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    """The answer read to its end and dropped chunk by chunk, so 8 large answers cost the bench nothing."""
    with c.stream(method, path, **kw) as r:
        if r.status_code >= 400:
            r.read()  # an error is small, and outcome() reads its code
        else:
            for _ in r.iter_bytes():
                pass
    return r


def score_sender(job: dict[str, str], body: bytes | None = None, dataset: dict[str, str] | None = None) -> Any:
    def send(c: httpx.Client, tenant: str) -> httpx.Response:
        if body is not None:
            return c.post(f"/v1/jobs/{job[tenant]}/score", content=body, headers={"content-type": "application/json"})
        assert dataset is not None
        return streamed(c, "POST", f"/v1/jobs/{job[tenant]}/score", json={"dataset": dataset[tenant]})

    return send


# ----- setup -----
def wait_finished(c: httpx.Client, tenant: str, job: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = c.get(f"/v1/jobs/{job}", headers=auth(tenant)).json()["status"]
        if status == "finished":
            return
        if status in ("failed", "canceled"):
            raise SystemExit(f"setup job {job} ended {status}")
        time.sleep(0.3)
    raise SystemExit(f"setup job {job} did not finish in {timeout:.0f} s")


def make_records(url: str, tenant: str, dataset: str, count: int) -> float:
    """`count` job records of `tenant`'s: each submitted and canceled, 8 at a time (the active-jobs cap is 20)."""
    t0 = time.perf_counter()

    def one(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60, headers=auth(tenant)) as c:
            for j in range(i, count, 8):
                r = c.post("/v1/jobs", json={"dataset": dataset, "params": {**JOB_PARAMS, "seed": j}})
                assert r.status_code == 202, r.text
                c.delete(f"/v1/jobs/{r.json()['id']}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(8)))
    return time.perf_counter() - t0


# ----- the attacks -----
@dataclass
class Run:
    service: Service
    duration: float
    records: int
    big_rows: int
    rounds: int
    job: dict[str, str]  # each tenant's finished search
    small: dict[str, str]  # the dataset it was found on
    big: dict[str, str]  # each tenant's `big_rows` x 7 dataset
    regions: int
    rows: list[Row] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.service.url


def attack_score_bodies(run: Run) -> None:
    body = score_body_at_cap(Settings().max_score_body_bytes)
    for clients in CLIENTS:
        attack = Attack()
        beyond = "" if clients <= 8 else " (beyond the issue's 4 and 8)"
        name = f"a. score bodies at the cap ({len(body) / MIB:.0f} MiB), {clients} clients{beyond}"
        with measured(run.service, run.rows, name, attack):
            hammer(run.url, ["alice", "bob"] * (clients // 2), run.duration, score_sender(run.job, body=body), attack)


def attack_score_answers(run: Run) -> None:
    attack = Attack()
    name = f"b. largest score answers ({run.big_rows} rows x {run.regions} regions), 8 clients"
    with measured(run.service, run.rows, name, attack):
        hammer(run.url, ["alice", "bob"] * 4, run.duration, score_sender(run.job, dataset=run.big), attack)

    deadline = time.monotonic() + run.duration

    def slow_reader(c: httpx.Client, tenant: str) -> httpx.Response:
        """Reads the answer's first chunk, then nothing until the attack ends."""
        with c.stream("POST", f"/v1/jobs/{run.job[tenant]}/score", json={"dataset": run.big[tenant]}) as r:
            if r.status_code >= 400:
                r.read()
            else:
                next(r.iter_bytes(), None)
                time.sleep(max(0.0, deadline - time.monotonic()))
        return r

    attack = Attack()
    name = "b. largest score answers, 32 clients reading one chunk and holding the connection"
    with measured(run.service, run.rows, name, attack):
        hammer(run.url, ["alice", "bob"] * 16, run.duration, slow_reader, attack)


def listing_case(run: Run, status: str, limit: int) -> None:
    attack = Attack()
    bob_lat: list[float] = []
    stop = threading.Event()

    def bob_lists() -> None:
        with httpx.Client(base_url=run.url, timeout=120, headers=auth("bob")) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = c.get("/v1/datasets")
                bob_lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    attack.note(f"bob's listing {outcome(r)}")
                stop.wait(0.1)

    def lists(c: httpx.Client, _: str) -> httpx.Response:
        return c.get("/v1/jobs", params={"status": status, "limit": limit})

    name = f"c. 80 clients list ?status={status}&limit={limit} over {run.records} records"
    with measured(run.service, run.rows, name, attack) as row:
        bob = threading.Thread(target=bob_lists, daemon=True)
        bob.start()
        hammer(run.url, ["alice"] * 80, run.duration, lists, attack)
        stop.set()
        bob.join(130)
    bob_max = max(bob_lat, default=float("nan"))
    row.extra = f"bob's GET /v1/datasets meanwhile: {len(bob_lat)} answered, max {bob_max:.2f} s"


def attack_listings(run: Run) -> None:
    made = make_records(run.url, "alice", run.small["alice"], run.records)
    print(f"  {run.records} job records made in {made:.0f} s", flush=True)
    listing_case(run, "queued", 50)
    listing_case(run, "canceled", 1000)


def attack_images(run: Run) -> None:
    cases = [
        ("300 identical 4096² PNGs", [png(4096, 0)] * 300),
        ("300 distinct 2048² PNGs", [png(2048, i) for i in range(300)]),
    ]
    for what, images in cases:
        data = image_parquet(images, 0)
        attack = Attack()

        def upload(c: httpx.Client, _: str, data: bytes = data) -> httpx.Response:
            return c.post("/v1/datasets", files={"file": ("img.parquet", data)})

        name = f"d. Parquet of {what} ({len(data) / 1024:.0f} KB), 8 uploads at once"
        with measured(run.service, run.rows, name, attack):
            hammer(run.url, ["alice", "bob"] * 4, run.duration, upload, attack)


def idempotency_case(run: Run, bodies: list[dict[str, Any]]) -> None:
    """`run.rounds` fresh keys, each raced by 16 requests whose bodies alternate over `bodies`; a key
    made as many jobs as bob's job count grew by (or, when 202s named several ids, minus that many)."""
    attack = Attack()
    jobs_per_key: list[int] = []
    plural = "body" if len(bodies) == 1 else "bodies"
    name = f"e. 16 concurrent POST /v1/jobs, one Idempotency-Key, {len(bodies)} {plural}"
    with (
        measured(run.service, run.rows, name, attack) as row,
        httpx.Client(base_url=run.url, timeout=120, headers=auth("bob")) as c,
    ):
        for k in range(run.rounds):
            key = f"race-{len(bodies)}-{k}"
            before = c.get("/v1/jobs", params={"limit": 1}).json()["total"]

            def post(i: int, key: str = key) -> httpx.Response:
                body = {"dataset": bodies[i % len(bodies)], "params": JOB_PARAMS}
                return c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})

            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(post, range(16)))
            for r in answers:
                attack.note(outcome(r))
            ids = {r.json()["id"] for r in answers if r.status_code == 202}
            made = c.get("/v1/jobs", params={"limit": 1}).json()["total"] - before
            jobs_per_key.append(made if len(ids) <= 1 else -len(ids))
            for job_id in ids:
                c.delete(f"/v1/jobs/{job_id}")
    row.extra = f"jobs made per key: {jobs_per_key}"
    row.extra_ok = all(n == 1 for n in jobs_per_key)


def attack_idempotency(run: Run) -> None:
    inline = [
        {
            "embeddings": np.random.default_rng(s).normal(size=(400, DIM)).round(4).tolist(),
            "losses": np.random.default_rng(s + 1).random(400).round(4).tolist(),
        }
        for s in (0, 1)
    ]
    idempotency_case(run, inline[:1])
    idempotency_case(run, inline)


def control(run: Run) -> None:
    """No attack: what /healthz takes on this machine right now, to read the attacks' rows against."""
    with measured(run.service, run.rows, "0. no attack (control)", Attack()):
        time.sleep(run.duration)


ATTACKS: dict[str, Callable[[Run], None]] = {
    "0": control,
    "a": attack_score_bodies,
    "b": attack_score_answers,
    "c": attack_listings,
    "d": attack_images,
    "e": attack_idempotency,
}


def set_up(service: Service, big_rows: int, with_big: bool) -> tuple[dict[str, str], ...]:
    """Each tenant's finished search, its dataset, and (`with_big`) a `big_rows` x 7 dataset."""
    job: dict[str, str] = {}
    small: dict[str, str] = {}
    big: dict[str, str] = {}
    with httpx.Client(base_url=service.url, timeout=300) as c:
        for seed, tenant in enumerate(TENANTS):
            files = {"file": ("d.npz", npz(2000, DIM, seed), "application/octet-stream")}
            small[tenant] = c.post("/v1/datasets", headers=auth(tenant), files=files).json()["id"]
            r = c.post("/v1/jobs", headers=auth(tenant), json={"dataset": small[tenant], "params": JOB_PARAMS})
            assert r.status_code == 202, r.text
            job[tenant] = r.json()["id"]
            if with_big:
                files = {"file": ("big.npz", npz(big_rows, DIM, 10 + seed), "application/octet-stream")}
                r = c.post("/v1/datasets", headers=auth(tenant), files=files)
                assert r.status_code == 201, r.text
                big[tenant] = r.json()["id"]
        for tenant in TENANTS:
            wait_finished(c, tenant, job[tenant])
    return job, small, big


def print_table(rows: list[Row], header: str) -> None:
    print()
    print(header)
    print("| attack | /healthz max | failures | API RSS before → peak | load | attackers got | goal met |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        got = ", ".join(f"{k}: {v}" for k, v in sorted(row.got.items()))
        extra = f"; {row.extra}" if row.extra else ""
        failures = f"{sum(row.failures.values())}{' ' + str(row.failures) if row.failures else ''}"
        print(
            f"| {row.attack} | {row.healthz_max_s:.2f} s ({row.healthz_probes} probes) | {failures} | "
            f"{row.rss_before / MIB:.0f} → {row.rss_peak / MIB:.0f} MiB | {row.load:.1f} | {got}{extra} | "
            f"{'yes' if row.goal_met else 'NO'} |"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter attacks on less data (~2 min)")
    ap.add_argument("--duration", type=float, help="seconds each hammering attack lasts (default 20; quick 8)")
    ap.add_argument("--records", type=int, help="job records for the listing attack (default 2000; quick 400)")
    ap.add_argument("--big-rows", type=int, help="rows of the dataset scored whole (default 1 000 000; quick 500 000)")
    ap.add_argument("--rounds", type=int, help="Idempotency-Keys raced per case (default 5; quick 2)")
    ap.add_argument("--only", default="0abcde", help="which attacks, e.g. 'a,e' (0: the control, no attack)")
    ap.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout whose service to run (a before/after)")
    args = ap.parse_args(argv)
    only = [k for k in ATTACKS if k in args.only]
    load_start = os.getloadavg()[0]
    t_run = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="spotlight-attacks-") as tmp:
        service = Service(Path(tmp), workers=1, tenants=0, repo=args.repo.resolve())
        service.env["SPOTLIGHT_API_KEYS"] = ",".join(f"{t}:{k}" for t, k in TENANTS.items())
        try:
            service.start()
            big_rows = args.big_rows or (500_000 if args.quick else 1_000_000)
            print(f"setup: a finished search (2 regions on 2000 x {DIM}) and {big_rows} x {DIM} rows per tenant")
            job, small, big = set_up(service, big_rows, "b" in only)
            with httpx.Client(base_url=service.url, timeout=60, headers=auth("alice")) as c:
                regions = len(c.get(f"/v1/jobs/{job['alice']}/regions").json()["regions"])
            run = Run(
                service,
                duration=args.duration or (8.0 if args.quick else 20.0),
                records=args.records if args.records is not None else (400 if args.quick else 2000),
                big_rows=big_rows,
                rounds=args.rounds or (2 if args.quick else 5),
                job=job,
                small=small,
                big=big,
                regions=regions,
            )
            for key in only:
                ATTACKS[key](run)
        finally:
            service.stop()

    print_table(
        run.rows,
        f"bench.attacks{' --quick' if args.quick else ''}: {args.repo}'s API + one worker + embedded Redis, tenants alice "
        f"and bob; {os.cpu_count()} CPUs shared, load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; {time.perf_counter() - t_run:.0f} s, each attack {run.duration:.0f} s; "
        f"goal: /healthz < {HEALTHZ_GOAL_S:.0f} s with no failure, API RSS < 1.5 GB",
    )
    return 0 if all(row.goal_met for row in run.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
