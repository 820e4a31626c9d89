"""Peak memory of the API process on bodies whose size on the wire understates their parsed size.

Starts a real redis-server and the API (uvicorn, one process) from `--repo` (default: this
checkout, so two checkouts can be compared side by side), then for each case sends one body and
samples the API's resident memory (psutil, every 10 ms) until the answer comes back:

- `inline-short`: an inline JSON dataset of numbers written `0,` (the worst case for one Python
  object per number), `--mb` MB;
- `inline-float`: the same size of 6-decimal floats;
- `npz-metadata`: an .npz with 4 rows of embeddings and `--strings` million tiny metadata strings.

Prints, per case: status, time, RSS before, peak, and (peak - before) / body size.

    python -m bench.inline_memory [--mb 54] [--strings 15] [--repo PATH]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from bench.rss import RssSampler
from spotlight.ops.redis_server import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024**2


def inline_body(mb: float, short: bool, d: int = 64) -> bytes:
    if short:
        row = "[" + ",".join(["0"] * d) + "]"
    else:
        rng = np.random.default_rng(0)
        row = "[" + ",".join(f"{x:.6f}" for x in rng.normal(size=d)) + "]"
    n = int(mb * 1e6 / (len(row) + 3))
    return ('{"embeddings": [' + ",".join([row] * n) + '], "losses": [' + ",".join(["1"] * n) + "]}").encode()


def npz_metadata(millions: float) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, embeddings=np.ones((4, 2)), losses=np.ones(4), metadata=np.array(["{}"] * int(millions * 1e6)))
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=54.0, help="size of the inline JSON bodies, MB")
    ap.add_argument("--strings", type=float, default=15.0, help="millions of metadata strings in the .npz")
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose API to run (default: this one)")
    args = ap.parse_args()

    cases: list[tuple[str, Callable[[], tuple[bytes, dict[str, str] | None, bool]]]] = [
        ("inline-short", lambda: (inline_body(args.mb, True), {"content-type": "application/json"}, False)),
        ("inline-float", lambda: (inline_body(args.mb, False), {"content-type": "application/json"}, False)),
        ("npz-metadata", lambda: (npz_metadata(args.strings), None, True)),
    ]
    work = Path(tempfile.mkdtemp(prefix="spotlight-bench-inline-"))
    redis_srv = EmbeddedRedis(work / "redis").start()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(args.repo.resolve()),
        "SPOTLIGHT_REDIS_URL": redis_srv.url,
        "SPOTLIGHT_STORE_URL": str(work / "store"),
        "SPOTLIGHT_DATA_DIR": str(work),
        "SPOTLIGHT_LOG_LEVEL": "WARNING",
        "SPOTLIGHT_MAX_INLINE_BYTES": str(64 * MIB),
    }
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    server = subprocess.Popen(cmd, cwd=args.repo, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the API did not come up")
            time.sleep(0.2)
        print(f"API from {args.repo}")
        print("| case | body | answer | time | RSS before | RSS peak | (peak - before) / body |")
        print("|---|---|---|---|---|---|---|")
        for name, make in cases:
            body, headers, multipart = make()
            sampler = RssSampler(server.pid, interval=0.01)
            before = sampler.before
            sampler.start()
            t0 = time.perf_counter()
            if multipart:
                r = httpx.post(url + "/v1/datasets", files={"file": ("d.npz", body)}, timeout=None)
            else:
                r = httpx.post(url + "/v1/datasets", content=body, headers=headers, timeout=None)
            elapsed = time.perf_counter() - t0
            sampler.stop.set()
            sampler.join()
            answer = f"{r.status_code} {r.json().get('error', {}).get('code', '') if r.status_code >= 400 else ''}"
            print(
                f"| {name} | {len(body) / MIB:.1f} MiB | {answer.strip()} | {elapsed:.1f} s | {before / MIB:.0f} MiB "
                f"| {sampler.peak / MIB:.0f} MiB | {(sampler.peak - before) / len(body):.1f} |"
            )
            del body
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        redis_srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
