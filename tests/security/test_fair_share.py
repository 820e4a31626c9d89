"""Fair share between tenants: a job's cost is estimated at submission and capped per job and per
tenant (4xx naming the setting), and one worker does not make a small job of tenant B wait behind
a queue of tenant A's large jobs — the large lane and the normal one are served in turn."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spotlight.contract.params import SearchParams
from spotlight.server.cost import job_cost
from tests.conftest import api_client

from .stack import QUICK_PARAMS, Stack, wait_for

KEYS = {"a": "key-a", "b": "key-b"}
AUTH = {t: {"Authorization": f"Bearer {k}"} for t, k in KEYS.items()}


def test_the_cost_counts_every_factor() -> None:
    base = job_cost(SearchParams(steps=100, restarts=2, n_spotlights=3), 1000, 16)
    assert base == 1000 * 16 * 2 * 100 * 3
    assert job_cost(SearchParams(steps=100, restarts=2, n_spotlights=3, n_permutations=7), 1000, 16) == base // 3 * 10
    assert job_cost(SearchParams(steps=100, restarts=2, n_spotlights=3, pca_components=4), 1000, 16) == base // 4
    huge = SearchParams(n_spotlights=50, steps=100_000, restarts=256, n_permutations=1000, shape="diagonal")
    assert job_cost(huge, 20_000, 64) == 20_000 * 64 * 256 * 100_000 * 1050  # the hours-long job


@pytest.fixture
def client(redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    keys = ",".join(f"{t}:{k}" for t, k in KEYS.items())
    with api_client(
        redis_url, tmp_path, api_keys=keys, max_job_cost=1e9, max_active_cost_per_tenant=2.5e8, large_job_cost=5e7
    ) as c:
        yield c


def _dataset(client: TestClient, tenant: str, n: int = 100, d: int = 10) -> str:
    body = {"embeddings": [[float((i * 7 + j) % 5) for j in range(d)] for i in range(n)], "losses": [1.0] * n}
    r = client.post("/v1/datasets", json=body, headers=AUTH[tenant])
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_job_over_the_per_job_cap_is_400_naming_the_setting(client: TestClient) -> None:
    ds = _dataset(client, "a")
    huge = {"n_spotlights": 50, "steps": 100_000, "restarts": 256, "n_permutations": 1000, "device": "cpu"}
    r = client.post("/v1/jobs", json={"dataset": ds, "params": huge}, headers=AUTH["a"])
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "job_too_costly" and err["details"]["setting"] == "SPOTLIGHT_MAX_JOB_COST"
    assert err["details"]["cost"] == 100 * 10 * 256 * 100_000 * 1050
    assert client.get("/v1/jobs", headers=AUTH["a"]).json()["total"] == 0


def test_a_tenants_queued_work_is_capped_by_cost_and_others_are_unaffected(client: TestClient) -> None:
    # 100 x 10 coordinates x 100 restarts x 1000 steps x 1 region = 1e8: two fit under 2.5e8, a third does not.
    params = {"n_spotlights": 1, "steps": 1000, "restarts": 100, "device": "cpu"}
    ds_a, ds_b = _dataset(client, "a"), _dataset(client, "b")
    for _ in range(2):
        assert client.post("/v1/jobs", json={"dataset": ds_a, "params": params}, headers=AUTH["a"]).status_code == 202
    r = client.post("/v1/jobs", json={"dataset": ds_a, "params": params}, headers=AUTH["a"])
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "too_much_active_cost"
    assert r.json()["error"]["details"]["setting"] == "SPOTLIGHT_MAX_ACTIVE_COST_PER_TENANT"
    assert "retry-after" in r.headers
    # Tenant b has its own budget.
    assert client.post("/v1/jobs", json={"dataset": ds_b, "params": params}, headers=AUTH["b"]).status_code == 202
    # These jobs (1e8 > large_job_cost) wait on the large lane, and /metrics counts them.
    metrics = client.get("/metrics").text
    assert 'spotlight_jobs{status="queued"} 3.0' in metrics and "spotlight_queue_depth 3.0" in metrics, metrics
    # Canceling one of a's jobs gives its share back.
    first = client.get("/v1/jobs", headers=AUTH["a"]).json()["jobs"][0]["id"]
    assert client.delete(f"/v1/jobs/{first}", headers=AUTH["a"]).status_code == 200
    assert client.post("/v1/jobs", json={"dataset": ds_a, "params": params}, headers=AUTH["a"]).status_code == 202


def test_concurrent_submissions_cannot_both_take_the_last_of_the_budget(client: TestClient) -> None:
    """The budget is checked and the job counted against it in one step, under the tenant's lock:
    of eight submissions at once, each fitting alone, only as many as the budget holds are queued."""
    params = {"n_spotlights": 1, "steps": 1000, "restarts": 100, "device": "cpu"}  # 1e8 each, 2.5e8 allowed
    ds = _dataset(client, "a")
    start = threading.Barrier(8)

    def submit(_: int) -> int:
        start.wait()
        return client.post("/v1/jobs", json={"dataset": ds, "params": params}, headers=AUTH["a"]).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(submit, range(8)))
    assert codes == [202, 202] + [429] * 6, codes
    assert client.get("/v1/jobs", headers=AUTH["a"]).json()["total"] == 2


# ----- one worker, two tenants -----
LARGE = {"n_spotlights": 3, "steps": 600, "restarts": 4, "spotlight_size": 0.05, "device": "cpu"}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, SPOTLIGHT_API_KEYS=",".join(f"{t}:{k}" for t, k in KEYS.items()), SPOTLIGHT_LARGE_JOB_COST=1e6)
    s.start_redis()
    try:
        s.start_api()
        s.start_worker("w0")
        yield s
    finally:
        s.close()


def _started(status: dict) -> datetime:
    assert status["status"] == "finished", status
    return datetime.fromisoformat(status["started_at"])


@pytest.mark.e2e
def test_a_small_job_is_not_stuck_behind_another_tenants_large_jobs(stack: Stack) -> None:
    with stack.client(headers=AUTH["a"]) as a, stack.client(headers=AUTH["b"]) as b:
        ds_a, ds_b = stack.upload(a, seed=1, n=3000), stack.upload(b, seed=2, n=120)
        assert job_cost(SearchParams(**QUICK_PARAMS), 120, 4) < 1e6 < job_cost(SearchParams(**LARGE), 3000, 4)
        large = [stack.submit(a, ds_a, LARGE) for _ in range(4)]
        wait_for(lambda: stack.status(a, large[0])["status"] != "queued", 60, "a's first large job to start")
        waiting = [j for j in large if stack.status(a, j)["status"] == "queued"]
        small = stack.submit(b, ds_b, QUICK_PARAMS)
        small_started = _started(stack.wait_ended(b, small, 300))
        starts = {j: _started(stack.wait_ended(a, j, 300)) for j in large}
        ahead = [j for j in waiting if starts[j] < small_started]
        # First come first served would run every waiting large job first; served in turn, b's job
        # runs right after the large one running at its submission (one more may have been taken
        # between the look at the queue and b's submission).
        assert len(waiting) >= 2, "the large jobs ran too fast to queue up; make them larger"
        assert len(ahead) <= 1, (len(waiting), len(ahead))
