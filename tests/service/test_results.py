"""Results endpoints read what a worker wrote to the store (written by hand here), 409 until finished."""

from __future__ import annotations

import io
import json
import os

import numpy as np

from spotlight.contract.protocol import (
    job_file,
    member_weights_file,
    members_by_contribution_file,
    members_file,
)
from tests.records import region_record
from tests.service.conftest import LiveApi, npz_bytes, toy

N = 30


def _finished_job(api: LiveApi, c, report: bool = True) -> tuple[str, np.ndarray, dict]:
    data = toy(N)
    ids = np.array([f"r{i}" for i in range(N)])
    meta = np.array([json.dumps({"row": i}) for i in range(N)])
    ds = c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(ids=ids, metadata=meta, **data))}).json()
    job_id = c.post("/v1/jobs", json={"dataset": ds["id"], "params": {"n_spotlights": 2}}).json()["id"]
    rng = np.random.default_rng(0)
    weights = rng.random((N, 2)).astype(np.float32)
    weights[weights < 0.3] = 0.0
    losses = data["losses"].astype(np.float64)
    reference = float(data["losses"].min())
    sets = []
    for k in range(2):
        order = np.argsort(-weights[:, k], kind="stable")
        members = order[weights[order, k] > 0].astype(np.int64)
        sets.append(members)
        api.store.save_npy(job_file(job_id, members_file(k)), members)
        c = weights[members, k] * (losses[members] - reference)
        api.store.save_npy(job_file(job_id, members_by_contribution_file(k)), members[np.argsort(-c, kind="stable")])
    shared = int(np.isin(sets[1], sets[0]).sum())
    regions = [
        region_record(
            k,
            center=[0.1, 0.2, 0.3],
            precision=2.0,
            kernel="flat",
            size_requested=3.0,
            total_weight=float(weights[:, k].sum()),
            weighted_loss=0.9,
            dataset_mean_loss=0.5,
            weighted_lift=1.8,
            n_members=int(sets[k].size),
            effective_size=float(weights[:, k].sum()),
            overlap=[] if k == 0 else [{"region": 0, "shared": shared, "share": shared / sets[1].size}],
            member_min_weight=0.0,
        )
        for k in range(2)
    ]
    api.store.save_npy(job_file(job_id, "weights.npy"), weights)
    if report:
        api.store.write_bytes(job_file(job_id, "report.html"), b"<html><body>report</body></html>")
    return job_id, weights, {"regions": regions, "data": data, "reference": reference}


def test_results_are_409_until_finished_then_served(api: LiveApi) -> None:
    with api.client() as c:
        job_id, weights, extra = _finished_job(api, c)
        base = f"/v1/jobs/{job_id}"
        for path in ("/regions", "/regions/0/members", "/weights", "/report"):
            r = c.get(base + path)
            assert r.status_code == 409, (path, r.text)
            assert (
                r.json()["error"]["code"] == "job_not_finished" and r.json()["error"]["details"]["status"] == "queued"
            )
        api.finish_with(job_id, extra["regions"], loss_reference=extra["reference"])

        assert c.get(base).json()["status"] == "finished"
        assert c.get(base).json()["progress"]["fraction"] == 1.0
        served = c.get(base + "/regions").json()
        assert served["weak_spot_found"] is False and served["summary"].startswith("No weak spot found")
        for got, want in zip(served["regions"], extra["regions"], strict=True):
            assert got == want.model_dump(mode="json")  # the record, as the worker wrote it
            assert got["description"] is None  # none was stored
        assert served["regions"][1]["overlap"][0]["region"] == 0

        page = c.get(base + "/regions/1/members", params={"limit": 5}).json()
        expected = np.argsort(-weights[:, 1], kind="stable")
        expected = expected[weights[expected, 1] > 0]
        assert page["total"] == len(expected)
        got = [m["index"] for m in page["members"]]
        assert got == expected[:5].tolist()
        ws = [m["weight"] for m in page["members"]]
        assert ws == sorted(ws, reverse=True) and all(0 <= w <= 1 for w in ws)
        first = page["members"][0]
        i = first["index"]
        assert first["id"] == f"r{i}" and first["metadata"] == {"row": i}
        assert first["label"] == int(extra["data"]["labels"][i]) and first["prediction"] == int(
            extra["data"]["predictions"][i]
        )
        assert abs(first["loss"] - float(extra["data"]["losses"][i])) < 1e-6
        assert abs(first["weight"] - float(weights[i, 1])) < 1e-6
        rest = c.get(base + "/regions/1/members", params={"limit": 1000, "offset": 5}).json()
        assert [m["index"] for m in rest["members"]] == expected[5:].tolist()

        r = c.get(base + "/weights")
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
        back = np.load(io.BytesIO(r.content), allow_pickle=False)
        assert back.dtype == np.float32 and np.array_equal(back, weights)

        r = c.get(base + "/report")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and "report" in r.text
        # Served under the report's own policy: inline styles and data: images, nothing remote.
        assert "img-src data:;" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"

        r = c.get(base + "/regions/2/members")
        assert r.status_code == 404 and r.json()["error"]["code"] == "region_not_found"
        assert c.get(base + "/regions/-1/members").status_code == 400


def test_a_members_page_reads_the_member_files_weights_not_the_whole_weights_file(api: LiveApi) -> None:
    """With each member file's weights beside it, a page never needs weights.npy (n x k): removed here,
    the pages still carry every member's weight, in both orders."""
    with api.client() as c:
        job_id, weights, extra = _finished_job(api, c)
        for k in range(2):
            for name in (members_file(k), members_by_contribution_file(k)):
                rows = api.store.load_npy(job_file(job_id, name))
                api.store.save_npy(job_file(job_id, member_weights_file(name)), weights[rows, k])
        os.remove(api.store.local_path(job_file(job_id, "weights.npy")))
        api.finish_with(job_id, extra["regions"], loss_reference=extra["reference"])
        for order in ("weight", "contribution"):
            page = c.get(f"/v1/jobs/{job_id}/regions/1/members", params={"limit": 4, "offset": 2, "order": order})
            assert page.status_code == 200, page.text
            members = page.json()["members"]
            assert len(members) == 4
            assert all(abs(m["weight"] - float(weights[m["index"], 1])) < 1e-6 for m in members)


def test_members_after_dataset_deleted_is_410(api: LiveApi) -> None:
    with api.client() as c:
        job_id, _, extra = _finished_job(api, c)
        api.finish_with(job_id, extra["regions"], loss_reference=extra["reference"])
        ds = c.get(f"/v1/jobs/{job_id}").json()["dataset"]
        assert c.delete(f"/v1/datasets/{ds}").status_code == 204
        r = c.get(f"/v1/jobs/{job_id}/regions/0/members")
        assert r.status_code == 410 and r.json()["error"]["code"] == "dataset_gone"
        # the regions (centres and descriptions drawn from the rows) went with the dataset too
        assert c.get(f"/v1/jobs/{job_id}/regions").status_code == 410


def test_corrupt_result_file_is_a_500_in_the_error_format(api: LiveApi) -> None:
    with api.client() as c:
        job_id, _, _ = _finished_job(api, c)
        api.store.write_bytes(job_file(job_id, "regions.json"), b"{not json")
        api.mark_finished(job_id)
        r = c.get(f"/v1/jobs/{job_id}/regions", headers={"X-Request-ID": "req-123"})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error" and r.json()["error"]["details"]["request_id"] == "req-123"


def test_members_by_contribution_page_the_stored_order_with_each_rows_contribution(api: LiveApi) -> None:
    """order=contribution: the same members in the order the worker stored, each row carrying
    weight x (loss - the stored loss floor)."""
    with api.client() as c:
        job_id, weights, extra = _finished_job(api, c)
        api.finish_with(job_id, extra["regions"], loss_reference=extra["reference"])
        base = f"/v1/jobs/{job_id}/regions/1/members"
        by_weight = c.get(base, params={"limit": 1000}).json()
        by_contrib = c.get(base, params={"limit": 1000, "order": "contribution"}).json()
    losses = extra["data"]["losses"].astype(np.float64)
    expected = weights[:, 1].astype(np.float64) * (losses - losses.min())
    assert by_contrib["total"] == by_weight["total"] == extra["regions"][1].n_members > 0
    assert sorted(m["index"] for m in by_contrib["members"]) == sorted(m["index"] for m in by_weight["members"])
    got = [m["contribution"] for m in by_contrib["members"]]
    assert got == sorted(got, reverse=True)
    for m in by_contrib["members"] + by_weight["members"]:
        assert abs(m["contribution"] - expected[m["index"]]) < 1e-5
    # the two orders differ on this data (random weights and losses), so the parameter is not ignored
    assert [m["index"] for m in by_contrib["members"]] != [m["index"] for m in by_weight["members"]]


def test_members_order_uses_the_stored_file_and_bad_order_is_400(api: LiveApi) -> None:
    with api.client() as c:
        job_id, weights, extra = _finished_job(api, c)
        stored_order = np.array([int(i) for i in np.flatnonzero(weights[:, 0] > 0)[::-1]], dtype=np.int64)
        api.store.save_npy(job_file(job_id, members_by_contribution_file(0)), stored_order)
        api.finish_with(job_id, extra["regions"], loss_reference=0.0)
        base = f"/v1/jobs/{job_id}/regions/0/members"
        page = c.get(base, params={"limit": 1000, "order": "contribution"}).json()
        assert [m["index"] for m in page["members"]] == stored_order.tolist()
        i = page["members"][0]["index"]  # loss_reference 0: contribution is weight x loss
        assert abs(page["members"][0]["contribution"] - float(weights[i, 0]) * float(extra["data"]["losses"][i])) < 1e-5
        r = c.get(base, params={"order": "loss"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
        assert "order" in r.text


def test_results_of_an_older_worker_are_a_clear_404_not_a_500(api: LiveApi) -> None:
    """regions.json written before the region record (no verdict): the API says so instead of failing."""
    with api.client() as c:
        job_id, _, _ = _finished_job(api, c)
        old = {"regions": [{"index": 0, "center": [0.0], "lift": 2.0}], "objective": "max_loss", "loss_reference": 0}
        api.store.write_json(job_file(job_id, "regions.json"), old)
        api.mark_finished(job_id)
        r = c.get(f"/v1/jobs/{job_id}/regions")
    assert r.status_code == 404 and "older worker" in r.json()["error"]["message"]


def test_a_report_rendered_after_the_job_is_pending_then_served_and_a_lost_or_failed_one_says_why(
    api: LiveApi,
) -> None:
    """The report follows a finished job (a report job on the reports queue): until it is stored the
    route answers 409 report_not_ready with Retry-After, never a 5xx nor a hang; a rendering that
    failed, or whose job vanished, is report_failed with the reason."""
    from rq.job import Job

    from spotlight.contract.jobstate import ReportStatus, report_fields
    from spotlight.contract.protocol import report_job_id
    from spotlight.server.jobqueue import enqueue_report, record_report_failed, report_queue

    with api.client() as c:
        job_id, _, extra = _finished_job(api, c, report=False)
        api.finish_with(job_id, extra["regions"], loss_reference=extra["reference"])
        job = Job.fetch(job_id, connection=api.redis)
        job.meta.update(report_fields(ReportStatus.PENDING))
        job.save_meta()
        queued = enqueue_report(api.redis, api.settings, job_id, {"id": job_id})
        assert queued.id == report_job_id(job_id) and queued.origin == report_queue(api.redis, api.settings).name
        base = f"/v1/jobs/{job_id}"

        assert c.get(base + "/regions").status_code == 200  # the results do not wait for the report
        assert c.get(base).json()["report"] == "pending"
        r = c.get(base + "/report")
        assert r.status_code == 409 and int(r.headers["Retry-After"]) >= 1
        error = r.json()["error"]
        assert error["code"] == "report_not_ready" and error["details"] == {
            "job": job_id,
            "report": "pending",
            "rendering": "queued",
        }

        queued.delete()  # the rendering job vanished (expired, or its Redis entry lost): not pending for good
        r = c.get(base + "/report")
        assert r.status_code == 409 and "Retry-After" not in r.headers
        assert r.json()["error"]["code"] == "report_failed" and "without a trace" in r.json()["error"]["message"]
        assert c.get(base).json()["report"] == "failed"  # the job's view says the same

        record_report_failed(api.redis, job_id, "rendering it ran past its time limit")
        r = c.get(base + "/report")
        error = r.json()["error"]
        assert r.status_code == 409 and error["code"] == "report_failed"
        assert error["details"]["reason"] == "rendering it ran past its time limit"
        assert "regions, members, weights" in error["message"]

        api.store.write_bytes(job_file(job_id, "report.html"), b"<html><body>late report</body></html>")
        r = c.get(base + "/report")
        assert r.status_code == 200 and "late report" in r.text
