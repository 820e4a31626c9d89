"""References that fight back, served by a real HTTP server on loopback: a body trickled a byte at
a time, headers trickled, gzip bombs (one and two encodings deep), and many slow references at
once. Each download ends at its total deadline, counts bytes as they arrive on the wire, and
never decodes; slow references take a bounded number of the API's threads, so its other
endpoints keep answering every tenant."""

from __future__ import annotations

import gzip
import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from spotlight.server.refs import ReferenceRefused, ReferenceUnreadable, open_reference
from spotlight.server.settings import Settings
from tests.security.conftest import serve_on_loopback
from tests.service.conftest import _Servers

TRICKLE_FOR_S = 30.0  # how long the server would keep trickling; every deadline here is far shorter


def _npz() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buf, embeddings=rng.normal(size=(30, 3)), losses=rng.random(30))
    return buf.getvalue()


@dataclass
class Hostile:
    port: int
    started: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    stop: threading.Event = field(default_factory=threading.Event)
    sent: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    state = Hostile(port=0)
    bomb_inner = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    bomb2 = gzip.compress(bomb_inner, compresslevel=9)  # ~64 MiB of zeros in a few KB, gzip twice
    good = _npz()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _trickle(self, data: bytes) -> None:
            """Send `data` one byte at a time until told to stop or TRICKLE_FOR_S passes, then hang up."""
            self.close_connection = True
            end = time.monotonic() + TRICKLE_FOR_S
            for i in range(len(data)):
                if state.stop.wait(0.05) or time.monotonic() > end:
                    return
                try:
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    return
                state.sent[self.path] = state.sent.get(self.path, 0) + 1

        def do_GET(self) -> None:
            state.started.release()
            if self.path == "/trickle-body.npz":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self._trickle(b"x" * 100000)
            elif self.path == "/trickle-headers.npz":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                self._trickle(b"X-Slow: " + b"a" * 100000)
            elif self.path in ("/bomb2.npz", "/bomb1.npz", "/bomb-chunked.npz"):
                body = bomb2 if self.path == "/bomb2.npz" else bomb_inner
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip, gzip" if self.path == "/bomb2.npz" else "gzip")
                if self.path == "/bomb-chunked.npz":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
            elif self.path == "/good.npz":
                self.send_response(200)
                self.send_header("Content-Length", str(len(good)))
                self.end_headers()
                self.wfile.write(good)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

    with serve_on_loopback(Handler) as state.port:
        try:
            yield state
        finally:
            state.stop.set()  # trickling handlers stop before the server waits for them


def _settings(tmp_path: Path, **over: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": None,
        "data_dir": tmp_path,
        "allowed_schemes": ["http"],
        "allowed_hosts": ["127.0.0.1"],
        "allow_private_addresses": True,
        "reference_timeout_s": 1.5,
        "api_keys": None,
        "api_keys_file": None,
    }
    values.update(over)
    return Settings(**values)


@pytest.mark.parametrize("path", ["/trickle-body.npz", "/trickle-headers.npz"])
def test_a_trickling_reference_ends_at_its_total_deadline(hostile: Hostile, tmp_path: Path, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(ReferenceUnreadable) as info:
        open_reference(hostile.url(path), _settings(tmp_path))
    assert info.value.reason == "timeout"
    assert info.value.details["limit_s"] == 1.5
    # It gave up long before the server would have stopped sending (each byte resets a read timeout).
    assert time.monotonic() - started < TRICKLE_FOR_S / 2


@pytest.mark.parametrize("path", ["/bomb2.npz", "/bomb1.npz", "/bomb-chunked.npz"])
def test_encoded_bodies_are_refused_not_inflated(hostile: Hostile, tmp_path: Path, path: str) -> None:
    with pytest.raises(ReferenceRefused) as info:
        open_reference(hostile.url(path), _settings(tmp_path, max_upload_bytes=1024 * 1024))
    assert info.value.reason == "content_encoding"
    assert "gzip" in info.value.details["content_encoding"]


def test_the_byte_budget_counts_wire_bytes(hostile: Hostile, tmp_path: Path) -> None:
    """A plain reference within the budget is read whole; the same under a smaller budget is 413."""
    ref = open_reference(hostile.url("/good.npz"), _settings(tmp_path))
    with ref:
        assert ref.file.read() == _npz()
    from spotlight.server.refs import ReferenceTooLarge

    with pytest.raises(ReferenceTooLarge):
        open_reference(hostile.url("/good.npz"), _settings(tmp_path, max_upload_bytes=len(_npz()) - 1))


# ----- through the API -----
KEYS = {"a": "key-a", "b": "key-b", "c": "key-c"}


@pytest.fixture
def api(redis_url: str, tmp_path: Path) -> Iterator[Any]:
    servers = _Servers(redis_url, tmp_path)
    yield servers.start(
        api_keys=",".join(f"{t}:{k}" for t, k in KEYS.items()),
        allowed_schemes=["http"],
        allowed_hosts=["127.0.0.1"],
        allow_private_addresses=True,
        reference_timeout_s=20,
        max_reference_fetches=2,
        max_reference_fetches_per_tenant=1,
    )
    servers.stop_all()


def _client(api: Any, tenant: str) -> httpx.Client:
    return api.client(KEYS[tenant])


def test_slow_references_are_bounded_and_the_api_keeps_answering(api: Any, hostile: Hostile) -> None:
    slow = {"uri": hostile.url("/trickle-body.npz")}
    with ThreadPoolExecutor(4) as pool, _client(api, "a") as a, _client(api, "b") as b, _client(api, "c") as c:
        first = pool.submit(a.post, "/v1/datasets", json=slow)
        assert hostile.started.acquire(timeout=30)  # tenant a's reference is being read
        # Tenant a's share (1) is used: its next reference is refused at once, not queued.
        r = a.post("/v1/datasets", json=slow)
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_reference_fetches", r.text
        assert "retry-after" in r.headers
        # A job naming a reference counts against the same share.
        r = a.post("/v1/jobs", json={"dataset": slow, "params": {"device": "cpu"}})
        assert r.status_code == 429, r.text
        second = pool.submit(b.post, "/v1/datasets", json=slow)
        assert hostile.started.acquire(timeout=30)
        # The server's total (2) is used: tenant c is told to come back, nothing hangs.
        r = c.post("/v1/datasets", json=slow)
        assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable", r.text
        assert r.json()["error"]["details"]["reason"] == "reference_fetches"
        # Everything else still answers, for everyone.
        for client in (a, b, c):
            assert client.get("/healthz").status_code == 200
            assert client.get("/v1/jobs").status_code == 200
            assert client.get("/v1/datasets").status_code == 200
        hostile.stop.set()  # the slow server stops sending: both reads end, as unreadable
        assert first.result(timeout=60).status_code == 400
        assert second.result(timeout=60).status_code == 400
        # Slots are given back: a good reference is read.
        hostile.stop.clear()
        r = c.post("/v1/datasets", json={"uri": hostile.url("/good.npz")})
        assert r.status_code == 201, r.text


def test_an_encoded_reference_through_the_api_is_400_and_stores_nothing(api: Any, hostile: Hostile) -> None:
    with _client(api, "a") as a:
        r = a.post("/v1/datasets", json={"uri": hostile.url("/bomb2.npz")})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "reference_refused"
        assert r.json()["error"]["details"]["reason"] == "content_encoding"
        assert a.get("/v1/datasets").json()["total"] == 0
    assert api.leftovers() == []
