"""Fixtures for the security tests: a loopback HTTP server that serves files, redirects and lies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@contextmanager
def serve_on_loopback(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """Serves `handler` on 127.0.0.1 from a thread; yields the port; shuts down on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class LoopbackServer:
    port: int
    files: dict[str, bytes]
    redirects: dict[str, str]
    seen_hosts: list[str] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    """Serves `files` at their paths, 302s `redirects`, and at /endless sends bytes with no length."""
    state = LoopbackServer(port=0, files={}, redirects={})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.seen_hosts.append(self.headers.get("Host", ""))
            if self.path in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path in state.files:
                body = state.files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/endless":
                # No Content-Length: only counting the bytes can stop this one.
                self.send_response(200)
                self.end_headers()
                for _ in range(64):
                    self.wfile.write(b"x" * 4096)
            elif self.path == "/lies":
                self.send_response(200)
                self.send_header("Content-Length", str(10**12))
                self.end_headers()
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

    with serve_on_loopback(Handler) as state.port:
        yield state


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """An allowed root with files, symlinks in and out, a sibling whose name shares the root's prefix."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    evil = tmp_path / "rootevil"
    for d in (root / "sub", outside, evil):
        d.mkdir(parents=True)
    (root / "data.npz").write_bytes(b"inside-bytes")
    (root / "sub" / "inner.npy").write_bytes(b"inner")
    (outside / "secret.npz").write_bytes(b"SECRET")
    (evil / "x.npz").write_bytes(b"EVIL")
    (root / "link_in.npz").symlink_to(root / "data.npz")
    (root / "link_out.npz").symlink_to(outside / "secret.npz")
    (root / "rel_link_out.npz").symlink_to("../outside/secret.npz")
    (root / "dir_out").symlink_to(outside)
    return {"root": root, "outside": outside, "evil": evil, "tmp": tmp_path}
