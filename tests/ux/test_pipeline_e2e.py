"""DataFrames in, tables out, a CLI in a pipeline: a live API, a real Redis, a real worker, real pandas files.

A planted weak spot (text labels, ids, an image column) goes in as a DataFrame through the client
and as a Parquet file through `spotlight submit`; a clean model's data goes in too. The regions come
back as DataFrames with class names, the report shows thumbnails, `spotlight regions --json` parses,
the `--fail-if` gate exits 1 on the weak spot and 0 on the clean model, and scoring new rows on the
server equals `Region.weights(X)` computed locally.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from spotlight.client import SpotlightClient, SpotlightError
from spotlight.ops.redis_server import EmbeddedRedis

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.e2e
REPO_ROOT = Path(__file__).resolve().parents[2]
# evidence_weight 0: this pipeline scores new, unlabelled rows, which only regions of embedding space
# alone can weigh (label-evidence regions and their scoring: tests/service/test_score_evidence.py)
PARAMS = {
    "n_spotlights": 2,
    "steps": 60,
    "restarts": 2,
    "spotlight_size": 0.05,
    "device": "cpu",
    "evidence_weight": 0.0,
}
CLI_PARAMS = [arg for k, v in PARAMS.items() for arg in ("--param", f"{k}={json.dumps(v)}")]
GATE = "significant and lift > 2"
N = 400


def _png(shade: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _frame(planted: bool, seed: int) -> tuple[Any, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 4)).astype(np.float32)
    dist = np.linalg.norm(x - x[0], axis=1)
    pocket = dist <= np.quantile(dist, 0.06) if planted else np.zeros(N, dtype=bool)
    loss = rng.random(N) + 3.0 * pocket
    label = np.where(pocket, "eight", rng.choice(["one", "two", "three"], size=N))
    pred = np.where(pocket, "three", label)
    df = pd.DataFrame(
        {
            "embedding": list(x),
            "loss": loss,
            "label": label,
            "pred": pred,
            "id": [f"r{i}" for i in range(N)],
            "site": rng.choice(["north", "south"], size=N),
            "image": [_png(int(i) % 256) for i in range(N)],
        }
    )
    return df, pocket


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.service.conftest import _Servers

    url = redis_server.url.rsplit("/", 1)[0] + "/12"
    redis.Redis.from_url(url).flushdb()
    root = tmp_path_factory.mktemp("pipeline-e2e")
    servers = _Servers(url, root)
    api = servers.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTLIGHT_")}
    env.update(
        {
            "REDIS_URL": url,
            "SPOTLIGHT_STORE_URL": str(root / "store"),
            "SPOTLIGHT_DATA_DIR": str(root / "data"),
            "SPOTLIGHT_PROGRESS_INTERVAL_S": "0.1",
            "SPOTLIGHT_LOG_JSON": "false",
            "PYTHONPATH": str(REPO_ROOT),
            "SPOTLIGHT_SERVER": api.url,
            "COLUMNS": "200",
        }
    )
    log = (root / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "spotlight.client.cli", "worker", "--no-callbacks"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield {"url": api.url, "env": env, "root": root, "worker_log": root / "worker.log"}
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        servers.stop_all()
        redis.Redis.from_url(url).flushdb()


def _cli(stack: dict[str, Any], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spotlight.client.cli", *args],
        cwd=REPO_ROOT,
        env=stack["env"],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def planted_job(stack: dict[str, Any]) -> Iterator[dict[str, Any]]:
    df, pocket = _frame(planted=True, seed=0)
    with SpotlightClient(stack["url"]) as sc:
        job = sc.submit(
            df, embeddings="embedding", losses="loss", labels="label", predictions="pred", ids="id", **PARAMS
        )
        try:
            job.wait(progress=False, timeout=150, poll=0.2)
        except SpotlightError:
            print(stack["worker_log"].read_text()[-3000:])
            raise
        yield {"client": sc, "job": job, "df": df, "pocket": pocket}


def test_regions_and_members_come_back_as_dataframes_with_class_names(planted_job: dict[str, Any]) -> None:
    job, pocket = planted_job["job"], planted_job["pocket"]
    regions = job.regions_df()
    assert list(regions["index"]) == [0, 1]
    first = regions.iloc[0]
    # one lift: the held-out members' in the DataFrame, the typed Region, and the JSON the API serves
    assert first["lift"] > 2 and first["lift"] == job.regions()[0].lift
    assert first["lift"] == job.client._json("GET", f"/v1/jobs/{job.id}/regions")["regions"][0]["lift"]
    assert bool(first["significant"]) and regions.attrs["weak_spot_found"]
    assert first["top_label"] == "eight" and first["top_prediction"] == "three"
    assert "label=eight" in first["stands_out"]
    members = job.members_df(0, limit=10, order="contribution")
    assert set(members["label"]) == {"eight"} and set(members["prediction"]) == {"three"}
    assert all(pocket[int(i[1:])] for i in members["id"])  # the caller's ids, pointing at pocket rows
    assert {"site", "image"} <= set(members.columns)  # metadata as columns
    membership = job.membership_df()
    assert {"id", "region", "weight"} <= set(membership.columns)
    in_first = membership[membership["region"] == 0]
    assert len(in_first) == job.regions()[0].n_members


def test_the_report_shows_class_names_and_image_thumbnails(planted_job: dict[str, Any]) -> None:
    html = planted_job["job"].report()
    assert "data:image/" in html
    assert "eight" in html


def test_scoring_new_rows_on_the_server_equals_region_weights_locally(planted_job: dict[str, Any]) -> None:
    job = planted_job["job"]
    rng = np.random.default_rng(7)
    new_x = rng.normal(size=(50, 4)).astype(np.float32)
    anchor = planted_job["df"]["embedding"][0]
    new_x[:10] = anchor + 0.05 * new_x[:10]  # ten new rows inside the weak spot
    answer = job.score(new_x)
    regions = job.regions()
    local = np.stack([r.weights(new_x) for r in regions], axis=1)
    served = np.asarray(answer["weights"])
    assert served.shape == (50, 2)
    np.testing.assert_allclose(served, local, rtol=0, atol=1e-6)
    # the member rule of spotlight/contract/members.py carried over: weight > 0 and at least the smallest weight
    # among the region's members on the job's own data (gaussian, the default kernel)
    thresholds = answer["member_min_weight"]
    assert thresholds == [r.member_min_weight for r in regions]
    first = job.member_indices(0)
    own_weights = job.weights()
    assert thresholds[0] == pytest.approx(float(own_weights[first, 0].min()), rel=1e-6)
    members = set(answer["members"][0])
    assert members == set(np.flatnonzero(local[:, 0] >= thresholds[0] * (1 - 1e-4)).tolist())
    assert len(members & set(range(10))) >= 8  # the planted rows are found
    assert answer["dataset"] is None and answer["ids"] is None  # bare embeddings: nothing stored
    # a stored dataset (with ids) scores the same, and names its rows
    sc = planted_job["client"]
    stored = sc.upload(new_x, np.zeros(50), ids=[f"new-{i}" for i in range(50)])
    by_id = job.score(stored["id"])
    assert by_id["dataset"] == stored["id"] and by_id["ids"][:2] == ["new-0", "new-1"]
    np.testing.assert_allclose(np.asarray(by_id["weights"]), local, rtol=0, atol=1e-5)  # stored as float32
    # the job's own rows score as its member set
    own = job.score(np.stack(planted_job["df"]["embedding"]))
    for k, region in enumerate(regions):
        assert own["members"][k] == job.member_indices(k).tolist()
        assert len(own["members"][k]) == region.n_members
    with pytest.raises(SpotlightError) as info:
        job.score(rng.normal(size=(5, 3)))
    assert info.value.code == "shape_mismatch"


def test_cli_regions_json_status_members_report_and_cancel(
    planted_job: dict[str, Any], stack: dict[str, Any], tmp_path: Path
) -> None:
    job_id = planted_job["job"].id
    out = _cli(stack, "regions", job_id, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["job"] == job_id and len(doc["regions"]) == 2
    out = _cli(stack, "status", job_id, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "finished"
    out = _cli(stack, "members", job_id, "0", "--json", "--limit", "5")
    assert out.returncode == 0 and len(json.loads(out.stdout)["members"]) == 5
    out = _cli(stack, "report", job_id, "-o", str(tmp_path / "r.html"))
    assert out.returncode == 0 and (tmp_path / "r.html").read_text().startswith("<!")
    out = _cli(stack, "cancel", job_id, "--json")  # a finished job cannot be canceled: the server says why
    assert out.returncode == 3
    assert json.loads(out.stdout)["error"]["code"] == "job_not_cancelable"
    out = _cli(stack, "regions", job_id, "--fail-if", "lift >")  # a bad gate: usage error, nothing asked
    assert out.returncode == 2 and "fail-if" in out.stderr


def test_the_gate_fails_on_a_weak_spot_and_passes_a_clean_model(
    planted_job: dict[str, Any], stack: dict[str, Any], tmp_path: Path
) -> None:
    out = _cli(stack, "regions", planted_job["job"].id, "--fail-if", GATE)
    assert out.returncode == 1, out.stderr
    assert "region 0 matches" in out.stderr
    clean, _ = _frame(planted=False, seed=1)
    clean.to_parquet(tmp_path / "clean.parquet")
    out = _cli(
        stack, "submit", str(tmp_path / "clean.parquet"), "--wait", "--quiet", "--json", "--fail-if", GATE, *CLI_PARAMS
    )
    assert out.returncode == 0, out.stderr + stack["worker_log"].read_text()[-2000:]
    doc = json.loads(out.stdout)
    assert doc["gate"] == {"expression": GATE, "failed": False, "regions": []}
    assert doc["weak_spot_found"] is False and doc["summary"].startswith("No weak spot found")
    assert not any(r["significant"] for r in doc["regions"])  # listed, each marked as noise


def test_cli_submit_checks_params_and_columns_before_uploading(stack: dict[str, Any], tmp_path: Path) -> None:
    df, _ = _frame(planted=True, seed=2)
    df.rename(columns={"embedding": "vector"}).to_parquet(tmp_path / "renamed.parquet")
    out = _cli(stack, "submit", str(tmp_path / "renamed.parquet"), "--param", "n_spotlights=0")
    assert out.returncode == 2 and "n_spotlights" in out.stderr
    out = _cli(stack, "submit", str(tmp_path / "renamed.parquet"), "--json")  # found from the schema, not uploaded
    assert out.returncode == 2
    err = json.loads(out.stdout)["error"]
    assert err["code"] == "usage_error" and "'vector'" in err["message"] and "--column embeddings=" in err["message"]
    out = _cli(stack, "submit", str(tmp_path / "renamed.parquet"), "--param", "n_spotlight=2")
    assert out.returncode == 2 and "did you mean n_spotlights?" in out.stderr
    out = _cli(
        stack, "submit", str(tmp_path / "renamed.parquet"), "--column", "embeddings=vector", "--json", *CLI_PARAMS
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["job"]["status"] in ("queued", "running", "finished")
