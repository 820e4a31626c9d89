"""Peak memory of the API process while it receives a ~1 GB upload (target: under 300 MB).

Starts a real redis-server and the API (uvicorn, one process) as subprocesses, writes a ~1 GB
.npz (float32 embeddings n x 256 + losses) to bench/out/, streams it as a multipart upload from a
generator with httpx, and samples the server's resident memory (psutil) every 20 ms until the
201 comes back. Prints the baseline RSS, the peak, and the peak as a ratio of the upload size.

    python -m bench.upload [--gb 1.0] [--format npz|npy] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from bench.rss import RssSampler
from spotlight.ops.redis_server import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DIM = 256
BLOCK_ROWS = 16384


def _write_npy_stream(f, n: int, rng: np.random.Generator) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, DIM)})
    for start in range(0, n, BLOCK_ROWS):
        rows = min(BLOCK_ROWS, n - start)
        f.write(rng.standard_normal((rows, DIM), dtype=np.float32).tobytes())


def make_payload(gb: float, fmt: str) -> tuple[list[tuple[str, Path]], int]:
    """Write the upload's file(s) to bench/out/ in blocks (the bench itself stays small too)."""
    OUT.mkdir(parents=True, exist_ok=True)
    n = int(gb * 1024**3 / (DIM * 4))
    rng = np.random.default_rng(0)
    losses = rng.random(n, dtype=np.float32)
    if fmt == "npz":
        path = OUT / f"upload_{gb:g}gb.npz"
        if not path.exists():
            with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                with zf.open("embeddings.npy", "w", force_zip64=True) as f:
                    _write_npy_stream(f, n, rng)
                with zf.open("losses.npy", "w") as f:
                    np.save(f, losses)
        return [("file", path)], n
    emb, los = OUT / f"upload_{gb:g}gb_embeddings.npy", OUT / f"upload_{gb:g}gb_losses.npy"
    if not emb.exists():
        with open(emb, "wb") as f:
            _write_npy_stream(f, n, rng)
        np.save(los, losses)
    return [("embeddings", emb), ("losses", los)], n


def multipart(parts: list[tuple[str, Path]], boundary: str) -> tuple[Iterator[bytes], int]:
    heads = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{p.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        for name, p in parts
    ]
    tail = f"--{boundary}--\r\n".encode()
    length = sum(len(h) + p.stat().st_size + 2 for h, (_, p) in zip(heads, parts, strict=True)) + len(tail)

    def gen() -> Iterator[bytes]:
        for head, (_, p) in zip(heads, parts, strict=True):
            yield head
            with open(p, "rb") as f:
                while block := f.read(1024 * 1024):
                    yield block
            yield b"\r\n"
        yield tail

    return gen(), length


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="upload size in GiB")
    ap.add_argument("--format", choices=["npz", "npy"], default="npz")
    ap.add_argument("--keep", action="store_true", help="keep the generated upload in bench/out/")
    args = ap.parse_args()

    parts, n = make_payload(args.gb, args.format)
    work = Path(tempfile.mkdtemp(prefix="spotlight-bench-upload-"))
    redis_srv = EmbeddedRedis(work / "redis").start()
    port = free_port()
    env = {
        **os.environ,
        "SPOTLIGHT_REDIS_URL": redis_srv.url,
        "SPOTLIGHT_STORE_URL": str(work / "store"),
        "SPOTLIGHT_DATA_DIR": str(work),
        "SPOTLIGHT_LOG_LEVEL": "WARNING",
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
    server = subprocess.Popen(cmd, cwd=ROOT, env=env)
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
        sampler = RssSampler(server.pid)
        baseline = sampler.before
        body, length = multipart(parts, "benchboundary7f3a")
        sampler.start()
        t0 = time.perf_counter()
        r = httpx.post(
            url + "/v1/datasets",
            content=body,
            timeout=None,
            headers={"Content-Type": "multipart/form-data; boundary=benchboundary7f3a", "Content-Length": str(length)},
        )
        elapsed = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        if r.status_code != 201:
            raise SystemExit(f"upload failed: {r.status_code} {r.text[:500]}")
        ds = r.json()
        mib = 1024**2
        print(f"upload            {args.format}, {length / mib:,.0f} MiB, n={ds['n']:,} x d={ds['dim']}")
        print(f"time              {elapsed:.1f} s ({length / mib / elapsed:,.0f} MiB/s, receive + validate + store)")
        print(f"API RSS baseline  {baseline / mib:,.0f} MiB")
        print(f"API RSS peak      {sampler.peak / mib:,.0f} MiB   (target < 300 MiB)")
        print(
            f"peak / upload     {sampler.peak / length:.3f}   (peak - baseline) / upload {(sampler.peak - baseline) / length:.3f}"
        )
        print("PASS" if sampler.peak < 300 * mib else "FAIL: peak RSS over 300 MiB")
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        redis_srv.stop()
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            for _, p in parts:
                p.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
