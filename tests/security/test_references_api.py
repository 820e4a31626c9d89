"""`{"uri": ...}` datasets through the live API: the sandbox of spotlight/server/refs.py, end to end,
with each refusal's own status and code, and nothing stored when refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .stack import Stack, npz_bytes

pytestmark = pytest.mark.e2e

LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("refs-api")
    refs, outside = root / "refs", root / "outside"
    refs.mkdir()
    outside.mkdir()
    (refs / "good.npz").write_bytes(npz_bytes(seed=3))
    (refs / "big.npz").write_bytes(npz_bytes(n=LIMIT // 16, seed=4))
    (outside / "secret.npz").write_bytes(npz_bytes(seed=5))
    (refs / "escape.npz").symlink_to(outside / "secret.npz")
    s = Stack(
        root,
        SPOTLIGHT_ALLOWED_ROOTS=json.dumps([str(refs)]),
        SPOTLIGHT_ALLOWED_SCHEMES='["file", "http"]',
        SPOTLIGHT_ALLOWED_HOSTS='["127.0.0.1"]',
        SPOTLIGHT_ALLOW_PRIVATE_ADDRESSES="true",  # so that the loopback test server can be reached
        SPOTLIGHT_MAX_UPLOAD_BYTES=LIMIT,
    )
    s.start_redis()
    try:
        s.start_api()
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as c:
        yield c


def datasets_in_store(stack: Stack) -> set[str]:
    base = stack.store_dir / "datasets"
    return {p.name for p in base.iterdir()} if base.exists() else set()


def refs_dir(stack: Stack) -> Path:
    return stack.root / "refs"


def test_a_file_inside_the_root_is_ingested(stack: Stack, client: httpx.Client) -> None:
    r = client.post("/v1/datasets", json={"uri": f"file://{refs_dir(stack)}/good.npz"})
    assert r.status_code == 201, r.text
    assert r.json()["n"] == 120


@pytest.mark.parametrize(
    "path, status, code",
    [
        ("{refs}/escape.npz", 400, "reference_refused"),
        ("{refs}/../outside/secret.npz", 400, "reference_refused"),
        ("{root}/outside/secret.npz", 400, "reference_refused"),
        ("{refs}/missing.npz", 400, "reference_unreadable"),
        ("{refs}", 400, "reference_unreadable"),
        ("{refs}/big.npz", 413, "payload_too_large"),
    ],
)
def test_file_references_outside_missing_or_too_big(
    stack: Stack, client: httpx.Client, path: str, status: int, code: str
) -> None:
    before = datasets_in_store(stack)
    uri = "file://" + path.format(refs=refs_dir(stack), root=stack.root)
    r = client.post("/v1/datasets", json={"uri": uri})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert "SECRET" not in r.text
    assert datasets_in_store(stack) == before


def test_http_references_go_through_the_guard(stack: Stack, client: httpx.Client, http_server) -> None:
    http_server.files["/d.npz"] = npz_bytes(seed=6)
    http_server.redirects["/elsewhere"] = f"http://localhost:{http_server.port}/d.npz"
    ok = client.post("/v1/datasets", json={"uri": http_server.url("/d.npz")})
    assert ok.status_code == 201, ok.text
    # a redirect to a host off the allow-list is not followed
    r = client.post("/v1/datasets", json={"uri": http_server.url("/elsewhere")})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "reference_refused")
    assert http_server.seen_hosts.count(f"localhost:{http_server.port}") == 0
    r = client.post("/v1/datasets", json={"uri": http_server.url("/nope.npz")})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "reference_unreadable")


def test_a_job_on_a_referenced_dataset(stack: Stack, client: httpx.Client) -> None:
    r = client.post("/v1/jobs", json={"dataset": {"uri": f"file://{refs_dir(stack)}/escape.npz"}})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "reference_refused")
    r = client.post(
        "/v1/jobs", json={"dataset": {"uri": f"file://{refs_dir(stack)}/good.npz"}, "params": {"spotlight_size": 0.1}}
    )
    assert r.status_code == 202, r.text
