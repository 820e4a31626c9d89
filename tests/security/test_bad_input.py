"""Bad input the service's own matrix (tests/service/test_bad_input.py) does not reach, checked
more strictly: a separate API process, and after every refusal neither the store *nor Redis* has
changed and /healthz answers. Covers .npy-field and JSON spellings of non-finite values, corrupt
Parquet, malformed job bodies, proof that pickles are never unpickled, other tenants' ids on every
verb, references outside the sandbox, callbacks to private addresses, and a public bind of
`spotlight api` without keys.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from .stack import QUICK_PARAMS, REPO_ROOT, Stack

pytestmark = pytest.mark.e2e

KEY_A, KEY_B = "key-of-tenant-a", "key-of-tenant-b"
MAX_UPLOAD = 4 * 1024 * 1024
SENTINEL_NAME = "unpickled-sentinel"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("bad-input"),
        SPOTLIGHT_API_KEYS=f"a:{KEY_A},b:{KEY_B}",
        SPOTLIGHT_MAX_UPLOAD_BYTES=MAX_UPLOAD,
    )
    s.start_redis()
    try:
        s.start_api()
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def a(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client(headers={"Authorization": f"Bearer {KEY_A}"}) as c:
        yield c


@pytest.fixture(scope="module")
def b(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client(headers={"Authorization": f"Bearer {KEY_B}"}) as c:
        yield c


@pytest.fixture(scope="module")
def owned(stack: Stack, a: httpx.Client) -> dict[str, str]:
    """A dataset and a job of tenant a (no worker runs: the job stays queued)."""
    ds = stack.upload(a)
    return {"dataset": ds, "job": stack.submit(a, ds)}


def snapshot(stack: Stack) -> tuple[set[str], set[bytes]]:
    """Every file in the store and every key in Redis (workers' own keys and request counters aside:
    /metrics counts every request, refused ones included — service/http_metrics.py)."""
    files = {str(p.relative_to(stack.store_dir)) for p in stack.store_dir.rglob("*") if p.is_file()}
    files = {f for f in files if not f.startswith(".probe")}
    conn = redis.Redis.from_url(stack.redis.url)
    try:
        keys = {
            k
            for k in conn.keys("*")
            if not k.startswith((b"rq:worker", b"rq:workers")) and not (b":stats:" in k and b":http" in k)
        }
    finally:
        conn.close()
    return files, keys


def expect_error(
    stack: Stack, client: httpx.Client, send: Callable[[httpx.Client], httpx.Response], status: int, code: str
) -> dict[str, Any]:
    before = snapshot(stack)
    r = send(client)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    assert isinstance(body["error"].get("details", {}), dict), body
    assert snapshot(stack) == before, "a refused request left something behind"
    assert client.get("/healthz").status_code == 200
    return dict(body["error"])


# ----- payload builders -----
def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def good(n: int = 50, d: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"embeddings": rng.normal(size=(n, d)).astype(np.float32), "losses": rng.random(n).astype(np.float32)}


def upload_file(name: str, data: bytes) -> Callable[[httpx.Client], httpx.Response]:
    return lambda c: c.post("/v1/datasets", files={"file": (name, data, "application/octet-stream")})


def upload_parts(**parts: bytes) -> Callable[[httpx.Client], httpx.Response]:
    return lambda c: c.post(
        "/v1/datasets", files={k: (f"{k}.npy", v, "application/octet-stream") for k, v in parts.items()}
    )


def post_json(path: str, body: Any) -> Callable[[httpx.Client], httpx.Response]:
    return lambda c: c.post(path, json=body)


def post_raw(path: str, raw: bytes) -> Callable[[httpx.Client], httpx.Response]:
    return lambda c: c.post(path, content=raw, headers={"Content-Type": "application/json"})


class Evil:
    """Unpickling this creates a file; the server must never do it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def zip_bomb() -> bytes:
    """A small .npz whose embeddings inflate to twice the upload limit at a modest ratio (about
    30:1, under any "suspicious ratio" rule): only counting inflated bytes stops it."""
    n = 2 * MAX_UPLOAD // 16
    rng = np.random.default_rng(2)
    emb = np.zeros((n, 4), np.float32)
    emb[::8, 0] = rng.normal(size=len(emb[::8]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("embeddings.npy", npy(emb))
        zf.writestr("losses.npy", npy(np.ones(n, np.float32)))
    return buf.getvalue()


def parquet_bytes(drop: str | None = None) -> bytes:
    g = good()
    columns = {"embeddings": pa.array(g["embeddings"].tolist()), "losses": pa.array(g["losses"])}
    columns.pop(drop or "", None)
    table = pa.table(columns)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# ----- the cases -----
CASES: dict[str, tuple[Callable[[], Callable[[httpx.Client], httpx.Response]], int, str]] = {
    "nan in losses (npy parts)": (
        lambda: upload_parts(embeddings=npy(good()["embeddings"]), losses=npy(np.full(50, np.nan, np.float32))),
        400,
        "non_finite_values",
    ),
    "inf in embeddings (npy parts)": (
        lambda: upload_parts(embeddings=npy(np.full((50, 3), np.inf, np.float32)), losses=npy(good()["losses"])),
        400,
        "non_finite_values",
    ),
    "Infinity in inline JSON": (
        lambda: post_raw("/v1/datasets", b'{"embeddings": [[1, 2], [3, 4]], "losses": [1, Infinity]}'),
        400,
        "non_finite_values",
    ),
    "-Infinity in inline JSON embeddings": (
        lambda: post_raw("/v1/datasets", b'{"embeddings": [[1, -Infinity], [3, 4]], "losses": [1, 2]}'),
        400,
        "non_finite_values",
    ),
    "malformed JSON job": (lambda: post_raw("/v1/jobs", b'{"dataset": '), 400, "malformed_json"),
    "corrupt parquet": (lambda: upload_file("x.parquet", b"PAR1" + bytes(500) + b"PAR1"), 400, "bad_file"),
    "parquet without embeddings": (
        lambda: upload_file("x.parquet", parquet_bytes(drop="embeddings")),
        400,
        "validation_error",
    ),
    "zip bomb with a plausible ratio (npz)": (lambda: upload_file("x.npz", zip_bomb()), 413, "payload_too_large"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_dataset_input_is_refused_cleanly(stack: Stack, a: httpx.Client, case: str) -> None:
    make, status, code = CASES[case]
    expect_error(stack, a, make(), status, code)


def test_pickled_npy_is_refused_and_never_unpickled(stack: Stack, a: httpx.Client, tmp_path: Path) -> None:
    sentinel = tmp_path / SENTINEL_NAME
    evil = np.array([Evil(str(sentinel)), Evil(str(sentinel))], dtype=object)
    for send in (
        upload_parts(embeddings=npy(evil, allow_pickle=True), losses=npy(good()["losses"][:2])),
        upload_file("x.npz", _npz_with_raw(embeddings=npy(evil, allow_pickle=True), losses=npy(good()["losses"][:2]))),
    ):
        expect_error(stack, a, send, 400, "bad_file")
    assert not sentinel.exists(), "the server unpickled the upload"


def _npz_with_raw(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"{name}.npy", data)
    return buf.getvalue()


def test_unknown_ids_are_404(stack: Stack, a: httpx.Client) -> None:
    expect_error(stack, a, lambda c: c.get("/v1/datasets/ds_000000000000000000000000"), 404, "dataset_not_found")
    expect_error(stack, a, lambda c: c.get("/v1/jobs/job_000000000000000000000000"), 404, "job_not_found")
    expect_error(
        stack,
        a,
        post_json("/v1/jobs", {"dataset": "ds_000000000000000000000000", "params": QUICK_PARAMS}),
        404,
        "dataset_not_found",
    )
    expect_error(stack, a, lambda c: c.get("/v1/jobs/job_000000000000000000000000/regions"), 404, "job_not_found")


def test_another_tenants_ids_are_404_and_untouched(stack: Stack, b: httpx.Client, owned: dict[str, str]) -> None:
    ds, job = owned["dataset"], owned["job"]
    expect_error(stack, b, lambda c: c.get(f"/v1/datasets/{ds}"), 404, "dataset_not_found")
    expect_error(stack, b, lambda c: c.delete(f"/v1/datasets/{ds}"), 404, "dataset_not_found")
    expect_error(stack, b, post_json("/v1/jobs", {"dataset": ds, "params": QUICK_PARAMS}), 404, "dataset_not_found")
    expect_error(stack, b, lambda c: c.get(f"/v1/jobs/{job}"), 404, "job_not_found")
    expect_error(stack, b, lambda c: c.delete(f"/v1/jobs/{job}"), 404, "job_not_found")
    expect_error(stack, b, lambda c: c.get(f"/v1/jobs/{job}/regions"), 404, "job_not_found")
    assert ds not in [d["id"] for d in b.get("/v1/datasets").json()["datasets"]]
    assert job not in [j["id"] for j in b.get("/v1/jobs").json()["jobs"]]


def test_references_outside_the_sandbox_are_refused(stack: Stack, a: httpx.Client) -> None:
    for uri in (
        "file:///etc/passwd",
        "file:///proc/self/environ",
        "s3://bucket/key.npz",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:6379/",
    ):
        expect_error(stack, a, post_json("/v1/datasets", {"uri": uri}), 400, "reference_refused")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6379/", "http://169.254.169.254/", "http://0x7f.1/", "ftp://example.com/", "http://[::1]/"],
)
def test_private_callback_urls_are_refused_at_submission(
    stack: Stack, a: httpx.Client, owned: dict[str, str], url: str
) -> None:
    expect_error(
        stack,
        a,
        post_json("/v1/jobs", {"dataset": owned["dataset"], "params": QUICK_PARAMS, "callback_url": url}),
        400,
        "validation_error",
    )


def test_without_keys_the_api_refuses_a_public_bind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTLIGHT_API_KEYS")}
    env.update(
        {"PYTHONPATH": str(REPO_ROOT), "SPOTLIGHT_DATA_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    proc = subprocess.run(
        [sys.executable, "-m", "spotlight.client.cli", "api", "--host", "0.0.0.0", "--port", "1"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "refusing to bind 0.0.0.0 without API keys" in proc.stdout + proc.stderr
