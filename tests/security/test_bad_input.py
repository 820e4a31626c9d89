"""Every bad input of issue 4 gets its own 4xx with the contract's error JSON, stores nothing, and
leaves the service healthy. One live API process (real HTTP, real Redis) serves the whole module.
"""

from __future__ import annotations

import hashlib
import io
import json
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

KEY_A, KEY_B, KEY_C = "key-of-tenant-a", "key-of-tenant-b", "key-of-tenant-c"
CAP = 3
MAX_UPLOAD = 4 * 1024 * 1024
MAX_ELEMENTS = 200_000
SENTINEL_NAME = "unpickled-sentinel"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("bad-input")
    keys_file = root / "keys"  # tenant c's key only as its hash, as an operator would store it
    keys_file.write_text(f"# tenants\nc:sha256:{hashlib.sha256(KEY_C.encode()).hexdigest()}\n")
    s = Stack(
        root,
        SPOTLIGHT_API_KEYS=f"a:{KEY_A},b:{KEY_B}",
        SPOTLIGHT_API_KEYS_FILE=keys_file,
        SPOTLIGHT_MAX_ACTIVE_JOBS_PER_TENANT=CAP,
        SPOTLIGHT_MAX_UPLOAD_BYTES=MAX_UPLOAD,
        SPOTLIGHT_MAX_ELEMENTS=MAX_ELEMENTS,
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
    """Every file in the store and every key in Redis (workers' own keys aside)."""
    files = {str(p.relative_to(stack.store_dir)) for p in stack.store_dir.rglob("*") if p.is_file()}
    files = {f for f in files if not f.startswith(".probe")}
    conn = redis.Redis.from_url(stack.redis.url)
    try:
        keys = {k for k in conn.keys("*") if not k.startswith((b"rq:worker", b"rq:workers"))}
    finally:
        conn.close()
    return files, keys


def expect_error(stack: Stack, client: httpx.Client, send: Callable[[httpx.Client], httpx.Response],
                 status: int, code: str) -> dict[str, Any]:
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
    return lambda c: c.post("/v1/datasets", files={k: (f"{k}.npy", v, "application/octet-stream")
                                                   for k, v in parts.items()})


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
    """A small .npz whose members inflate far past the upload limit (about 200 MB of zeros)."""
    buf = io.BytesIO()
    emb = good()["embeddings"]
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("losses.npy", npy(good()["losses"]))
        with zf.open("embeddings.npy", "w", force_zip64=True) as member:
            member.write(npy(emb))
            zeros = bytes(1024 * 1024)
            for _ in range(200):
                member.write(zeros)
    return buf.getvalue()


def parquet_bytes() -> bytes:
    g = good()
    table = pa.table({"embeddings": pa.array(g["embeddings"].tolist()), "losses": pa.array(g["losses"])})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# ----- the cases -----
def nan_emb() -> bytes:
    g = good()
    g["embeddings"][3, 1] = np.nan
    return npz(**g)


def inf_loss() -> bytes:
    g = good()
    g["losses"][7] = np.inf
    return npz(**g)


CASES: dict[str, tuple[Callable[[], Callable[[httpx.Client], httpx.Response]], int, str]] = {
    "nan in embeddings (npz)": (lambda: upload_file("x.npz", nan_emb()), 400, "non_finite_values"),
    "inf in losses (npz)": (lambda: upload_file("x.npz", inf_loss()), 400, "non_finite_values"),
    "nan in losses (npy parts)": (
        lambda: upload_parts(embeddings=npy(good()["embeddings"]), losses=npy(np.full(50, np.nan, np.float32))),
        400, "non_finite_values"),
    "Infinity in inline JSON": (
        lambda: post_raw("/v1/datasets", b'{"embeddings": [[1, 2], [3, 4]], "losses": [1, Infinity]}'),
        400, "non_finite_values"),
    "losses shorter than embeddings": (
        lambda: upload_file("x.npz", npz(embeddings=good()["embeddings"], losses=good()["losses"][:-1])),
        400, "shape_mismatch"),
    "labels of another length": (
        lambda: upload_file("x.npz", npz(**good(), labels=np.zeros(49, np.int64))), 400, "shape_mismatch"),
    "ids of another length": (
        lambda: post_json("/v1/datasets", {"embeddings": [[0.0, 1.0]] * 4, "losses": [1.0] * 4, "ids": [1, 2, 3]}),
        400, "shape_mismatch"),
    "metadata of another length": (
        lambda: post_json("/v1/datasets", {"embeddings": [[0.0, 1.0]] * 4, "losses": [1.0] * 4, "metadata": [{}]}),
        400, "shape_mismatch"),
    "1-D embeddings": (
        lambda: upload_file("x.npz", npz(embeddings=np.ones(50, np.float32), losses=good()["losses"])),
        400, "validation_error"),
    "3-D embeddings": (
        lambda: upload_file("x.npz", npz(embeddings=np.ones((50, 2, 2), np.float32), losses=good()["losses"])),
        400, "validation_error"),
    "n = 0": (lambda: upload_file("x.npz", npz(embeddings=np.ones((0, 3), np.float32),
                                                losses=np.ones(0, np.float32))), 400, "validation_error"),
    "d = 0": (lambda: upload_file("x.npz", npz(embeddings=np.ones((50, 0), np.float32), losses=good()["losses"])),
              400, "validation_error"),
    "malformed JSON": (lambda: post_raw("/v1/datasets", b'{"embeddings": [[1, 2]'), 400, "malformed_json"),
    "malformed JSON job": (lambda: post_raw("/v1/jobs", b'{"dataset": '), 400, "malformed_json"),
    "wrong types inline": (lambda: post_json("/v1/datasets", {"embeddings": "abc", "losses": [1.0]}),
                           400, "validation_error"),
    "truncated npz": (lambda: upload_file("x.npz", npz(**good())[:-200]), 400, "bad_file"),
    "corrupt npz": (lambda: upload_file("x.npz", b"PK\x03\x04" + bytes(range(256)) * 8), 400, "bad_file"),
    "truncated npy part": (
        lambda: upload_parts(embeddings=npy(good()["embeddings"])[:-30], losses=npy(good()["losses"])),
        400, "bad_file"),
    "corrupt parquet": (lambda: upload_file("x.parquet", b"PAR1" + bytes(500) + b"PAR1"), 400, "bad_file"),
    "truncated parquet": (lambda: upload_file("x.parquet", parquet_bytes()[:-40]), 400, "bad_file"),
    "zip bomb in npz": (lambda: upload_file("x.npz", zip_bomb()), 400, "bad_file"),
    "upload above the size limit": (
        lambda: upload_file("x.npz", npz(embeddings=np.ones((MAX_UPLOAD // 16 + 10, 4), np.float32),
                                         losses=np.ones(MAX_UPLOAD // 16 + 10, np.float32))),
        413, "payload_too_large"),
    "n·d above the limit": (
        lambda: upload_file("x.npz", npz(embeddings=np.ones((MAX_ELEMENTS // 10 + 1, 10), np.float16),
                                         losses=np.ones(MAX_ELEMENTS // 10 + 1, np.float16))),
        413, "too_many_elements"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_dataset_input_is_refused_cleanly(stack: Stack, a: httpx.Client, case: str) -> None:
    make, status, code = CASES[case]
    expect_error(stack, a, make(), status, code)


def test_pickled_npy_is_refused_and_never_unpickled(stack: Stack, a: httpx.Client, tmp_path: Path) -> None:
    sentinel = tmp_path / SENTINEL_NAME
    evil = np.array([Evil(str(sentinel)), Evil(str(sentinel))], dtype=object)
    for send in (upload_parts(embeddings=npy(evil, allow_pickle=True), losses=npy(good()["losses"][:2])),
                 upload_file("x.npz", _npz_with_raw(embeddings=npy(evil, allow_pickle=True),
                                                    losses=npy(good()["losses"][:2])))):
        expect_error(stack, a, send, 400, "bad_file")
    assert not sentinel.exists(), "the server unpickled the upload"


def _npz_with_raw(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"{name}.npy", data)
    return buf.getvalue()


@pytest.mark.parametrize(
    "params",
    [{"spotlight_size": 120}, {"spotlight_size": 500}, {"spotlight_size": 0}, {"spotlight_size": -0.1},
     {"no_such_param": 1}, {"steps": "many"}, {"n_spotlights": [1]}, {"kernel": "square"}],
)
def test_bad_params_are_refused_cleanly(stack: Stack, a: httpx.Client, owned: dict[str, str],
                                        params: dict[str, Any]) -> None:
    err = expect_error(stack, a, post_json("/v1/jobs", {"dataset": owned["dataset"], "params": params}),
                       400, "validation_error")
    assert "params" in json.dumps(err["details"]) or "spotlight_size" in err["message"]


def test_unknown_ids_are_404(stack: Stack, a: httpx.Client) -> None:
    expect_error(stack, a, lambda c: c.get("/v1/datasets/ds_000000000000000000000000"), 404, "dataset_not_found")
    expect_error(stack, a, lambda c: c.get("/v1/jobs/job_000000000000000000000000"), 404, "job_not_found")
    expect_error(stack, a, post_json("/v1/jobs", {"dataset": "ds_000000000000000000000000", "params": QUICK_PARAMS}),
                 404, "dataset_not_found")
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


def test_missing_or_wrong_keys_are_401(stack: Stack) -> None:
    with stack.client() as anonymous:
        expect_error(stack, anonymous, lambda c: c.get("/v1/datasets"), 401, "unauthorized")
    with stack.client(headers={"Authorization": "Bearer not-a-key"}) as wrong:
        expect_error(stack, wrong, lambda c: c.get("/v1/jobs"), 401, "unauthorized")


def test_references_outside_the_sandbox_are_refused(stack: Stack, a: httpx.Client) -> None:
    for uri in ("file:///etc/passwd", "file:///proc/self/environ", "s3://bucket/key.npz",
                "http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:6379/"):
        expect_error(stack, a, post_json("/v1/datasets", {"uri": uri}), 400, "reference_refused")


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/", "http://169.254.169.254/", "http://0x7f.1/",
                                 "ftp://example.com/", "http://[::1]/"])
def test_private_callback_urls_are_refused_at_submission(stack: Stack, a: httpx.Client, owned: dict[str, str],
                                                         url: str) -> None:
    expect_error(stack, a, post_json("/v1/jobs", {"dataset": owned["dataset"], "params": QUICK_PARAMS,
                                                  "callback_url": url}), 400, "validation_error")


def test_a_hashed_key_from_the_keys_file_works_and_the_job_cap_answers_429(stack: Stack) -> None:
    with stack.client(headers={"Authorization": f"Bearer {KEY_C}"}) as c:
        ds = stack.upload(c, seed=9)
        jobs = [stack.submit(c, ds, {**QUICK_PARAMS, "seed": i}) for i in range(CAP)]
        before = snapshot(stack)
        r = c.post("/v1/jobs", json={"dataset": ds, "params": QUICK_PARAMS})
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "too_many_active_jobs"
        assert int(r.headers["Retry-After"]) > 0
        assert snapshot(stack) == before
        # a canceled job frees its slot
        assert c.delete(f"/v1/jobs/{jobs[0]}").json()["status"] == "canceled"
        assert c.post("/v1/jobs", json={"dataset": ds, "params": QUICK_PARAMS}).status_code == 202


def test_without_keys_the_api_refuses_a_public_bind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTLIGHT_API_KEYS")}
    env.update({"PYTHONPATH": str(REPO_ROOT), "SPOTLIGHT_DATA_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"})
    proc = subprocess.run([sys.executable, "-m", "spotlight.cli", "api", "--host", "0.0.0.0", "--port", "1"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "refusing to bind 0.0.0.0 without API keys" in proc.stdout + proc.stderr
