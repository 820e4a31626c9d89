"""The client against the whole service: a live API, a real Redis, a real worker process running the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from spotlight.client import Job, SpotlightClient, SpotlightError
from spotlight.ops.redis_server import EmbeddedRedis
from tests.runtime.helpers import wait_for

pytestmark = pytest.mark.e2e
REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"n_spotlights": 2, "steps": 60, "restarts": 2, "spotlight_size": 0.05, "device": "cpu", "n_permutations": 3}
SECRET = "e2e-webhook-secret"


@pytest.fixture(scope="module")
def finished(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Upload with the client, submit, run one burst worker, wait with the progress bar."""
    from tests.service.conftest import _Servers

    url = redis_server.url.rsplit("/", 1)[0] + "/9"
    redis.Redis.from_url(url).flushdb()
    root = tmp_path_factory.mktemp("client-e2e")
    from tests.ux.test_webhook import Receiver

    receiver = Receiver([200])
    receiver.thread.start()
    servers = _Servers(url, root)
    # loopback callbacks are private addresses: allowed here, as an operator would for a local receiver
    api = servers.start(allow_private_addresses=True, allowed_hosts=["127.0.0.1"])
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=(n, 4)).astype(np.float32)
    pocket = x[:, 0] > 1.2
    losses = (rng.random(n) + 3.0 * pocket).astype(np.float32)
    data = {
        "embeddings": x,
        "losses": losses,
        "labels": np.where(pocket, 1, rng.integers(0, 3, n)),
        "ids": [f"row-{i}" for i in range(n)],
        "metadata": [{"site": "north" if p else str(rng.choice(["north", "south", "east"]))} for p in pocket],
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTLIGHT_")}
    env.update(
        {
            "REDIS_URL": url,
            "SPOTLIGHT_STORE_URL": str(root / "store"),
            "SPOTLIGHT_DATA_DIR": str(root / "data"),
            "SPOTLIGHT_PROGRESS_INTERVAL_S": "0.1",
            "SPOTLIGHT_LOG_JSON": "false",
            "PYTHONPATH": str(REPO_ROOT),
            "SPOTLIGHT_WEBHOOK_SECRET": SECRET,
            "SPOTLIGHT_ALLOW_PRIVATE_ADDRESSES": "true",
            "SPOTLIGHT_ALLOWED_HOSTS": '["127.0.0.1"]',
        }
    )
    sc = SpotlightClient(api.url)
    worker = None
    try:
        job = sc.submit(
            data["embeddings"],
            data["losses"],
            labels=data["labels"],
            ids=data["ids"],
            metadata=data["metadata"],
            callback_url=receiver.url,
            **PARAMS,
        )
        log = (root / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "spotlight.client.cli", "worker", "--burst"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            status = job.wait(progress=True, timeout=180, poll=0.2)
        except SpotlightError:
            print((root / "worker.log").read_text()[-3000:])
            raise
        yield {"client": sc, "job": job, "status": status, "data": data, "pocket": pocket, "receiver": receiver}
    finally:
        if worker is not None:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, 9)
                worker.wait(10)
        sc.close()
        servers.stop_all()
        receiver.server.shutdown()
        receiver.server.server_close()
        redis.Redis.from_url(url).flushdb()


def test_finished_job_results_through_the_client(finished: dict[str, Any]) -> None:
    job: Job = finished["job"]
    assert finished["status"]["status"] == "finished"
    assert finished["status"]["progress"]["fraction"] == 1.0
    regions = job.regions()
    assert [r.index for r in regions] == [0, 1]
    assert regions[0].significant and regions[0].lift is not None and regions[0].lift > 1.5  # the planted pocket
    members = job.members(0, limit=10)
    assert members["total"] >= 10 and len(members["members"]) == 10
    first = members["members"][0]
    assert first["id"].startswith("row-") and first["metadata"]["site"] in ("north", "south", "east")
    ws = [m["weight"] for m in members["members"]]
    assert ws == sorted(ws, reverse=True)
    assert sum(1 for m in members["members"] if finished["pocket"][m["index"]]) >= 8
    page2 = job.members(0, limit=10, offset=10)["members"]
    assert page2[0]["index"] not in {m["index"] for m in members["members"]}
    weights = job.weights()
    assert weights.shape == (400, 2) and weights.dtype == np.float32
    assert np.isclose(weights[first["index"], 0], first["weight"], atol=1e-6)
    assert len(list(job.iter_members(1, page=100))) == job.members(1, limit=1)["total"] == regions[1].n_members
    assert job.member_indices(1).tolist() == [m["index"] for m in job.iter_members(1)]
    overlaps = job.overlaps()
    assert overlaps.shape == (2, 2) and overlaps[1, 0] == regions[1].overlap[0].share
    by_contribution = list(job.iter_members(0, page=7, order="contribution"))
    contrib = [m["contribution"] for m in by_contribution]
    assert len(by_contribution) == members["total"] and contrib == sorted(contrib, reverse=True) and contrib[0] > 0
    assert {m["index"] for m in by_contribution} == {m["index"] for m in job.iter_members(0)}
    with pytest.raises(SpotlightError) as info:
        job.members(5)
    assert info.value.code == "region_not_found"


def test_finished_job_report_through_the_client(finished: dict[str, Any], tmp_path: Path) -> None:
    """The report is rendered after the job by a real worker; the client waits for it, and the job's
    status then says it is ready."""
    job: Job = finished["job"]
    assert job.status()["report"] in ("pending", "ready")
    html = job.report()
    assert "Spotlight report" in html and job.id in html
    # the page is stored a moment before the meta says ready (the rendering job writes, then records)
    wait_for(lambda: job.status()["report"] == "ready", 10, "the job's report status ready")
    path = job.save_report(tmp_path / "r.html")
    assert Path(path).read_text(encoding="utf-8") == html


def test_finished_job_regions_carry_their_verdict_descriptions_and_p_values(finished: dict[str, Any]) -> None:
    """The verdict survives API -> client -> DataFrame: the same significant, p-value and lift."""
    job: Job = finished["job"]
    regions = job.regions()
    first = regions[0]
    assert first.verdict is not None and first.verdict.method == "holdout" and first.n_holdout_members > 0
    assert first.mean_loss_ci is not None and first.mean_loss is not None
    lo, hi = first.mean_loss_ci  # the held-out members' mean loss and its interval
    assert lo <= first.mean_loss <= hi
    d = first.description
    assert d is not None and d.n_members == first.n_members
    assert d.labels is not None and d.labels.over_represented[0].value == 1  # every pocket row has label 1
    assert d.metadata["site"].over_represented[0].value == "north"
    assert first.permutation_p_value == pytest.approx(1 / 4)  # 3 shuffles, none as good as the pocket
    assert first.p_value is not None and first.p_value <= 0.05 and first.significant
    df = job.regions_df()
    assert df["significant"].tolist() == [r.significant for r in regions]
    assert df["lift"].tolist() == [r.lift for r in regions] and df["p_value"].tolist() == [r.p_value for r in regions]
    assert df.attrs["weak_spot_found"] is True and "significant" in df.attrs["summary"]


def test_finished_job_called_back_with_a_signed_summary(finished: dict[str, Any]) -> None:
    from worker.webhook import SIGNATURE_HEADER, verify_signature

    requests = finished["receiver"].wait_requests(1, 30)  # the callback follows the status change
    assert len(requests) == 1
    req = requests[0]
    assert verify_signature(req["body"], req["headers"][SIGNATURE_HEADER], SECRET)
    body = json.loads(req["body"])
    assert body["event"] == "job.finished" and body["job"]["id"] == finished["job"].id
    assert [r["index"] for r in body["regions"]] == [0, 1]
    assert body["weak_spot_found"] is True and body["regions"][0]["significant"] is True


def test_metrics_after_the_job_show_its_timing_and_the_workers_device(finished: dict[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> list[Any]:
        text = finished["client"]._http.get("/metrics").text
        return [s for fam in text_string_to_metric_families(text) for s in fam.samples]

    # timings are recorded just after the status turns finished; /metrics is only known by asking
    samples = wait_for(
        lambda: (got := scrape()) and any(s.name == "spotlight_jobs_ended_total" for s in got) and got,
        30,
        "the job's timings in /metrics",
        interval=0.1,
    )

    def one(name: str, **labels: str) -> float:
        found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, (name, labels)
        return found[0]

    assert one("spotlight_jobs", status="finished") == 1
    assert one("spotlight_jobs_ended_total", status="finished") == 1
    assert one("spotlight_job_duration_seconds_count", status="finished") == 1
    assert 0 < one("spotlight_job_duration_seconds_sum", status="finished") < 180
    assert one("spotlight_job_queue_wait_seconds_count") == 1
