"""A live API over real HTTP: uvicorn in a background thread, the session's real Redis, a tmp store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from service.app import create_app
from spotlight.redis_server import free_port
from spotlight.settings import Settings
from spotlight.store import ArtifactStore


@dataclass
class LiveApi:
    url: str
    settings: Settings
    store: ArtifactStore
    redis: redis.Redis
    refs_dir: Path

    def client(self, key: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers, **kw)

    def stored_datasets(self) -> list[str]:
        return [p.rsplit("/", 1)[1] for p in self.store.list("datasets")]

    def leftovers(self) -> list[str]:
        """Anything left in the ingest work area (must be empty after every request)."""
        return self.store.list(".ingest")


@pytest.fixture
def make_api(redis_url: str, store_dir: Path, tmp_path: Path) -> Iterator[Callable[..., LiveApi]]:
    running: list[tuple[uvicorn.Server, threading.Thread]] = []
    refs = tmp_path / "refs"
    refs.mkdir()

    def start(**overrides: Any) -> LiveApi:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "data_dir": tmp_path / "data",
            "store_url": str(store_dir),
            "allowed_roots": [str(refs)],
            "log_level": "WARNING",
            "api_keys": None,
            "api_keys_file": None,
        }
        values.update(overrides)
        settings = Settings(**values)
        app = create_app(settings)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        running.append((server, thread))
        return LiveApi(
            url=f"http://127.0.0.1:{port}",
            settings=settings,
            store=app.state.store,
            redis=redis.Redis.from_url(redis_url),
            refs_dir=refs,
        )

    yield start
    for server, thread in running:
        server.should_exit = True
    for server, thread in running:
        thread.join(10)


@pytest.fixture
def api(make_api: Callable[..., LiveApi]) -> LiveApi:
    return make_api()
