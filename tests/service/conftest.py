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
from rq.job import Job

from service.app import create_app
from spotlight.contract.protocol import META_STATUS, job_file
from spotlight.contract.records import RegionRecord
from spotlight.ops.redis_server import EmbeddedRedis, free_port
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore
from tests.records import regions_document


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

    def mark_finished(self, job_id: str) -> None:
        """The job's state as the worker leaves it on success (spotlight/contract/jobstate.py reads it)."""
        job = Job.fetch(job_id, connection=self.redis)
        job.meta[META_STATUS] = "finished"
        job.save_meta()

    def finish_with(self, job_id: str, regions: list[RegionRecord], loss_reference: float = 0.0) -> None:
        """Results written as the worker writes them (regions.json, through the record), then the job marked finished."""
        document = regions_document(regions, loss_reference=loss_reference)
        self.store.write_json(job_file(job_id, "regions.json"), document.model_dump(mode="json"))
        self.mark_finished(job_id)


class _Servers:
    """Starts uvicorn servers in threads and stops them all at teardown."""

    def __init__(self, redis_url: str, root: Path) -> None:
        self.redis_url = redis_url
        self.root = root
        self.running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(self, **overrides: Any) -> LiveApi:
        refs = self.root / "refs"
        refs.mkdir(exist_ok=True)
        store_dir = self.root / "store"
        values: dict[str, Any] = {
            "redis_url": self.redis_url,
            "data_dir": self.root / "data",
            "store_url": str(store_dir),
            "allowed_roots": [str(refs)],
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
        while not server.started:  # uvicorn offers only this flag to wait on
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.running.append((server, thread))
        return LiveApi(
            url=f"http://127.0.0.1:{port}",
            settings=settings,
            store=app.state.store,
            redis=redis.Redis.from_url(self.redis_url),
            refs_dir=refs,
        )

    def stop_all(self) -> None:
        for server, _ in self.running:
            server.should_exit = True
        for _, thread in self.running:
            thread.join(10)


@pytest.fixture
def make_api(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., LiveApi]]:
    """Start a live API (settings overridable) on a clean Redis db and a fresh store."""
    servers = _Servers(redis_url, tmp_path)
    yield servers.start
    servers.stop_all()


@pytest.fixture(scope="module")
def shared_api(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """One live API for a module whose tests store nothing (they check that), on its own Redis db."""
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(url).flushdb()
    servers = _Servers(url, tmp_path_factory.mktemp("shared-api"))
    yield servers.start()
    servers.stop_all()
    redis.Redis.from_url(url).flushdb()


@pytest.fixture
def api(make_api: Callable[..., LiveApi]) -> LiveApi:
    return make_api()


# ----- payload helpers -----
def npy_bytes(array: Any) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def npz_bytes(compressed: bool = False, **arrays: Any) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def parquet_bytes(table: Any) -> bytes:
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def toy(n: int = 20, d: int = 3, seed: int = 0) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        "embeddings": rng.normal(size=(n, d)).astype(np.float32),
        "losses": rng.random(n).astype(np.float32),
        "labels": rng.integers(0, 3, size=n),
        "predictions": rng.integers(0, 3, size=n),
    }
