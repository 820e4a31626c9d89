"""POST /v1/jobs/{id}/compare and GET /v1/comparisons/{id}: planted weak spots classed, bad input 4xx."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from service.comparing import comparison_file
from spotlight.contract import verdict
from spotlight.contract.protocol import WEIGHTS_FILE, job_file, members_file
from spotlight.contract.records import RegionRecord, Verdict
from tests.records import region_record
from tests.service.conftest import LiveApi, npz_bytes

N = 300
PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
OLD_ONLY, BOTH, NEW_ONLY = np.arange(0, 40), np.arange(40, 80), np.arange(80, 120)


def _region(k: int, **extra: Any) -> RegionRecord:
    fields: dict[str, Any] = {"center": [0.0, 0.0], "kernel": "flat", "member_min_weight": 0.0, **extra}
    return region_record(k, **fields)


def _dataset(c: httpx.Client, losses: np.ndarray, ids: list[str], order: np.ndarray, **extra: Any) -> str:
    rng = np.random.default_rng(1)
    arrays = {
        "embeddings": rng.normal(size=(len(order), 2)).astype(np.float32),
        "losses": losses[order].astype(np.float32),
        "ids": np.array([ids[i] for i in order]),
        **extra,
    }
    r = c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**arrays))})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _finished(api: LiveApi, c: httpx.Client, dataset: str, member_sets: list[np.ndarray], p: float = 0.01) -> str:
    job_id = str(c.post("/v1/jobs", json={"dataset": dataset, "params": {"n_spotlights": 2}}).json()["id"])
    for k, members in enumerate(member_sets):
        api.store.save_npy(job_file(job_id, members_file(k)), np.asarray(members, dtype=np.int64))
    api.finish_with(job_id, [_region(k, p_value=p, significant=p < 0.05) for k in range(len(member_sets))])
    return job_id


def _planted(api: LiveApi, c: httpx.Client, new_ids: list[str] | None = None) -> tuple[str, str]:
    """Old model bad on OLD_ONLY and BOTH; new model bad on BOTH and NEW_ONLY; rows in another order."""
    rng = np.random.default_rng(0)
    ids = [f"r{i}" for i in range(N)]
    old_loss, new_loss = rng.exponential(1.0, N), rng.exponential(1.0, N)
    old_loss[OLD_ONLY] += 3
    old_loss[BOTH] += 3
    new_loss[BOTH] += 3
    new_loss[NEW_ONLY] += 3
    order = rng.permutation(N)
    where = np.argsort(order)  # row of each original index in the new dataset
    meta = np.array([json.dumps({"text": f"<script>row {i}</script>", "thumb": PIXEL}) for i in range(N)])
    old_ds = _dataset(c, old_loss, ids, np.arange(N), metadata=meta)
    new_ds = _dataset(c, new_loss, new_ids or ids, order)
    old_job = _finished(api, c, old_ds, [OLD_ONLY, BOTH])
    new_job = _finished(api, c, new_ds, [where[BOTH], where[NEW_ONLY]])
    return old_job, new_job


def test_planted_fixed_still_there_and_new_are_classed_and_stored(api: LiveApi) -> None:
    with api.client() as c:
        old_job, new_job = _planted(api, c)
        r = c.post(f"/v1/jobs/{old_job}/compare", json={"job": new_job})
        assert r.status_code == 201, r.text
        doc = r.json()
        assert doc["rows"]["matched"] == N and doc["rows"]["only_old"] == 0
        by = {(s["old_region"], s["new_region"]): s for s in doc["weak_spots"]}
        assert by[(0, None)]["status"] == "fixed"
        assert by[(1, 0)]["status"] == "still_there" and by[(1, 0)]["overlap"] == 1.0
        assert by[(None, 1)]["status"] == "new" and by[(None, 1)]["significant"] is True
        assert len(doc["weak_spots"]) == 3  # the paired weak spot is shown once
        # the honest side carries the interval, the selected side says it is selected
        fixed = by[(0, None)]
        assert fixed["after"]["lift_ci"][0] < 1 and fixed["before"]["selected"] is True
        assert c.get(f"/v1/comparisons/{doc['id']}").json() == doc
        page = c.get(f"/v1/comparisons/{doc['id']}/report")
        assert page.status_code == 200 and "img-src data:" in page.headers["content-security-policy"]
        assert "Before (old model)" in page.text and "After (new model)" in page.text
        assert "&lt;script&gt;row" in page.text and "<script>" not in page.text
        assert f'src="{PIXEL}"' in page.text  # the members' thumbnails
        # both sides' losses of one example appear on the page
        example = fixed["examples"][0]
        assert f"{example['loss_before']:.3g}" in page.text and f"{example['loss_after']:.3g}" in page.text


def test_not_significant_regions_are_unconfirmed_not_fixed(api: LiveApi) -> None:
    with api.client() as c:
        rng = np.random.default_rng(2)
        ids = [f"r{i}" for i in range(N)]
        ds_a = _dataset(c, rng.exponential(1.0, N), ids, np.arange(N))
        ds_b = _dataset(c, rng.exponential(1.0, N), ids, np.arange(N))
        old_job = _finished(api, c, ds_a, [np.arange(30)], p=0.4)
        new_job = _finished(api, c, ds_b, [np.arange(200, 230)], p=0.4)
        doc = c.post(f"/v1/jobs/{old_job}/compare", json={"job": new_job}).json()
        assert sorted(s["status"] for s in doc["weak_spots"]) == ["unconfirmed", "unconfirmed"]


def test_ids_that_do_not_match_are_refused_and_nothing_is_stored(api: LiveApi) -> None:
    with api.client() as c:
        old_job, new_job = _planted(api, c, new_ids=[f"other{i}" for i in range(N)])
        before = api.store.list(f"jobs/{old_job}")
        r = c.post(f"/v1/jobs/{old_job}/compare", json={"job": new_job})
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["code"] == "rows_do_not_match" and "only 0 rows" in error["message"]
        assert error["details"]["examples_only_old"][:2] == ["r0", "r1"]
        assert api.store.list(f"jobs/{old_job}") == before


@pytest.mark.parametrize(
    "body,status",
    [
        ({}, 400),
        ({"job": "job_x", "dataset": "ds_x"}, 400),
        ({"job": "job_" + "0" * 24}, 404),
        ({"dataset": "ds_nope"}, 404),
        ({"job": "job_" + "0" * 24, "level": 0.7}, 400),
    ],
)
def test_bad_bodies_get_4xx(api: LiveApi, body: dict[str, Any], status: int) -> None:
    with api.client() as c:
        old_job, _ = _planted(api, c)
        assert c.post(f"/v1/jobs/{old_job}/compare", json=body).status_code == status


def test_unfinished_job_is_409_and_itself_is_400(api: LiveApi) -> None:
    with api.client() as c:
        old_job, _ = _planted(api, c)
        ds = c.get(f"/v1/jobs/{old_job}").json()["dataset"]
        queued = c.post("/v1/jobs", json={"dataset": ds}).json()["id"]
        r = c.post(f"/v1/jobs/{old_job}/compare", json={"job": queued})
        assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_finished"
        assert c.post(f"/v1/jobs/{queued}/compare", json={"job": old_job}).status_code == 409
        assert c.post(f"/v1/jobs/{old_job}/compare", json={"job": old_job}).status_code == 400


@pytest.mark.parametrize("side", ["old", "new"])
def test_deleting_either_dataset_takes_its_comparisons(api: LiveApi, side: str) -> None:
    """A comparison shows rows of both jobs' datasets: deleting either answers 410 dataset_gone for the
    stored comparison, its page and a new comparison; the old job's folder (and the file in it) goes
    when the old job's dataset is deleted."""
    with api.client() as c:
        old_job, new_job = _planted(api, c)
        doc = c.post(f"/v1/jobs/{old_job}/compare", json={"job": new_job}).json()
        path = job_file(old_job, comparison_file(doc["id"]))
        assert api.store.exists(path) and sorted(doc["datasets"]) == doc["datasets"] and len(doc["datasets"]) == 2
        dataset = c.get(f"/v1/jobs/{old_job if side == 'old' else new_job}").json()["dataset"]
        assert c.delete(f"/v1/datasets/{dataset}").status_code in (200, 204)
        for url in (f"/v1/comparisons/{doc['id']}", f"/v1/comparisons/{doc['id']}/report"):
            r = c.get(url)
            assert r.status_code == 410 and r.json()["error"]["code"] == "dataset_gone", (url, r.text)
        r = c.post(f"/v1/jobs/{old_job}/compare", json={"job": new_job})
        assert r.status_code == 410 and r.json()["error"]["code"] == "dataset_gone"
        assert api.store.exists(path) is (side == "new")


def test_other_tenants_jobs_and_comparisons_are_404(make_api: Callable[..., LiveApi]) -> None:
    api = make_api(api_keys="alice:ka, bob:kb")
    with api.client("ka") as alice, api.client("kb") as bob:
        old_job, new_job = _planted(api, alice)
        bob_old, _ = _planted(api, bob)
        assert bob.post(f"/v1/jobs/{old_job}/compare", json={"job": new_job}).status_code == 404
        assert bob.post(f"/v1/jobs/{bob_old}/compare", json={"job": new_job}).status_code == 404
        doc = alice.post(f"/v1/jobs/{old_job}/compare", json={"job": new_job}).json()
        assert bob.get(f"/v1/comparisons/{doc['id']}").status_code == 404
        assert bob.get(f"/v1/comparisons/{doc['id']}/report").status_code == 404
        assert alice.get("/v1/comparisons/cmp_" + "0" * 24).status_code == 404


def test_new_data_drifting_into_a_weak_spot_is_the_alarm(api: LiveApi) -> None:
    """A flat region (a ball of radius 1 around the origin) holds 10 % of the original rows and
    40 % of the new ones: drift; the region's share interval is reported."""
    rng = np.random.default_rng(3)
    with api.client() as c:

        def rows(n: int, inside: int) -> np.ndarray:
            x = rng.normal(size=(n, 2)) * 0.2 + 3.0
            x[:inside] = rng.normal(size=(inside, 2)) * 0.2
            return x.astype(np.float32)

        x0, x1 = rows(1000, 100), rows(500, 200)
        ds0 = c.post("/v1/datasets", files={"file": ("a.npz", npz_bytes(embeddings=x0, losses=rng.random(1000)))})
        ds1 = c.post("/v1/datasets", files={"file": ("b.npz", npz_bytes(embeddings=x1, losses=rng.random(500)))})
        job = c.post("/v1/jobs", json={"dataset": ds0.json()["id"]}).json()["id"]
        weights = np.zeros((1000, 1), dtype=np.float32)
        weights[:100, 0] = np.maximum(0.0, 1 - (x0[:100] ** 2).sum(1))
        api.store.save_npy(job_file(job, WEIGHTS_FILE), weights)
        api.store.save_npy(job_file(job, members_file(0)), np.arange(100))
        api.finish_with(job, [_region(0, member_min_weight=0.0)])
        r = c.post(f"/v1/jobs/{job}/compare", json={"dataset": ds1.json()["id"]})
        assert r.status_code == 201, r.text
        (region,) = r.json()["regions"]
        assert region["members_original"] == 100 and region["members_new"] == 200
        assert region["drift"] is True and region["ratio_ci"][0] > 1
        assert region["share_new_ci"][0] < 0.4 < region["share_new_ci"][1]
        page = c.get(f"/v1/comparisons/{r.json()['id']}/report").text
        assert "share of new rows" in page and "40.0 %" in page and "10.0 %" in page
        other = c.post(
            "/v1/datasets",
            files={"file": ("c.npz", npz_bytes(embeddings=np.zeros((5, 3), np.float32), losses=np.ones(5)))},
        )
        bad = c.post(f"/v1/jobs/{job}/compare", json={"dataset": other.json()["id"]})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "shape_mismatch"


def _cli(*argv: str) -> int:
    from spotlight.client.cli import main

    try:
        return main(list(argv))
    except SystemExit as exc:  # CliExit
        return int(exc.code or 0)


def test_cli_compare_gate_exit_codes_table_and_json(
    api: LiveApi, capsys: pytest.CaptureFixture[str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    with api.client() as c:
        old_job, new_job = _planted(api, c)
    server = ("--server", api.url)
    assert _cli("compare", old_job, new_job, *server, "--fail-if", "new and significant") == 1
    out = capsys.readouterr()
    assert "fixed" in out.out and "still_there" in out.out and "matches 'new and significant'" in out.err
    assert _cli("compare", old_job, new_job, *server, "--fail-if", "worse", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gate"] == {"expression": "worse", "failed": False, "rows": []} and doc["counts"]["new"] == 1
    # the candidate against itself the other way round: the old job's weak spot is new there
    assert _cli("compare", new_job, old_job, *server, "--fail-if", "fixed", "--report", str(tmp_path / "c.html")) == 1
    assert "After (new model)" in (tmp_path / "c.html").read_text()
    capsys.readouterr()
    assert _cli("compare", old_job, new_job, *server, "--fail-if", "new >") == 2  # a bad gate: nothing asked
    assert _cli("compare", old_job, "job_" + "0" * 24, *server) == 3  # the server's 404


def test_client_compare_returns_dataframes(api: LiveApi) -> None:
    from spotlight.client import SpotlightClient

    with api.client() as c:
        old_job, new_job = _planted(api, c)
    with SpotlightClient(api.url) as client:
        comparison = client.compare(old_job, new_job)
        frame = comparison.frame()
        assert sorted(frame["status"]) == ["fixed", "new", "still_there"]
        assert set(comparison.examples_frame()["status"]) == {"fixed", "new", "still_there"}
        assert client.comparison(comparison.id).document == comparison.document


def test_idempotency_key_replays_the_stored_comparison_and_refuses_another_body(api: LiveApi) -> None:
    """A retried POST …/compare with the same key gets the same stored comparison, not a second one;
    the same key for another comparison (or another old job) is a 409; a job submission's key is not
    a comparison's."""
    with api.client() as c:
        old_job, new_job = _planted(api, c)
        headers = {"Idempotency-Key": "nightly-42"}
        first = c.post(f"/v1/jobs/{old_job}/compare", json={"job": new_job}, headers=headers)
        again = c.post(f"/v1/jobs/{old_job}/compare", json={"job": new_job}, headers=headers)
        assert first.status_code == 201 and again.status_code == 201
        assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
        assert "Idempotent-Replayed" not in first.headers
        stored = api.store.list(job_file(old_job, "comparisons"))
        assert len(stored) == 1
        other = c.post(f"/v1/jobs/{old_job}/compare", json={"job": new_job, "level": 0.1}, headers=headers)
        assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
        swapped = c.post(f"/v1/jobs/{new_job}/compare", json={"job": old_job}, headers=headers)
        assert swapped.status_code == 409
        # the path's job is part of what the key names: the same body on another old job is not a replay
        elsewhere = c.post(f"/v1/jobs/{new_job}/compare", json={"job": new_job}, headers=headers)
        assert elsewhere.status_code == 409 and elsewhere.json()["error"]["code"] == "idempotency_conflict"
        fresh = c.post(f"/v1/jobs/{old_job}/compare", json={"job": new_job})
        assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"]
        # a failed comparison frees its key: the same key works once the request is right
        bad = c.post(f"/v1/jobs/{old_job}/compare", json={"job": old_job}, headers={"Idempotency-Key": "k2"})
        assert bad.status_code == 400
        good = c.post(f"/v1/jobs/{old_job}/compare", json={"job": old_job}, headers={"Idempotency-Key": "k2"})
        assert good.status_code == 400  # same body, same refusal: nothing was stored under the key
        ok = c.post(f"/v1/jobs/{new_job}/compare", json={"job": old_job}, headers={"Idempotency-Key": "k2"})
        assert ok.status_code == 201


def test_a_job_with_the_verdict_is_compared_on_its_held_out_members(api: LiveApi) -> None:
    """The worker searched a seeded half of the rows (spotlight/contract/verdict.py); the comparison rebuilds
    that split from the job's seed and tests each weak spot on the members the search never used."""
    stamp = Verdict(
        method="holdout",
        level=0.05,
        n_tested=2,
        p_value_unadjusted=0.001,
        n_holdout_rows=N // 2,
        holdout_mean_loss=1.0,
        n_draws=1000,
    )
    with api.client() as c:
        old_job, new_job = _planted(api, c)
        for job_id in (old_job, new_job):
            regions = [_region(k, p_value=0.01, significant=True, verdict=stamp) for k in range(2)]
            api.finish_with(job_id, regions)
        seed = int(c.get(f"/v1/jobs/{old_job}").json()["params"]["seed"])
        held = verdict.split(N, seed).held_out
        doc = c.post(f"/v1/jobs/{old_job}/compare", json={"job": new_job}).json()
        spot = next(s for s in doc["weak_spots"] if s["old_region"] == 0)
        assert spot["tested_on"] == "held_out_members"
        assert spot["tested_members"] == np.isin(OLD_ONLY, held).sum() < spot["members"]
        assert spot["before"]["selected"] is False and spot["status"] == "fixed"
