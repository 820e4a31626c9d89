"""Jobs over real HTTP and a real Redis: submit, read, list, cancel, idempotency, the per-tenant cap."""

from __future__ import annotations

from rq import Queue
from rq.job import Job, JobStatus

from spotlight.contract.params import SearchParams
from spotlight.contract.protocol import TASK_PATH
from spotlight.server.keys import Keys
from tests.service.conftest import LiveApi, npz_bytes, toy


def _dataset(c, n: int = 20) -> str:
    data = toy(n)
    r = c.post(
        "/v1/datasets", files={"file": ("d.npz", npz_bytes(embeddings=data["embeddings"], losses=data["losses"]))}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_submit_enqueues_rq_job_by_import_path(api: LiveApi) -> None:
    with api.client() as c:
        ds = _dataset(c)
        r = c.post(
            "/v1/jobs", json={"dataset": ds, "params": {"n_spotlights": 3, "kernel": "flat", "spotlight_size": 5}}
        )
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["id"].startswith("job_") and job["status"] == "queued" and job["dataset"] == ds
        assert job["params"]["n_spotlights"] == 3 and job["params"]["kernel"] == "flat"
        assert job["progress"] == {
            "spotlight": 0,
            "n_spotlights": 3,
            "step": 0,
            "steps": SearchParams().steps,
            "fraction": 0.0,
        }
        assert job["error"] is None and job["started_at"] is None and job["ended_at"] is None
        assert c.get(f"/v1/jobs/{job['id']}").json() == job
    rq_job = Job.fetch(job["id"], connection=api.redis)
    assert rq_job.func_name == TASK_PATH
    spec = rq_job.args[0]
    assert spec["job_id"] == job["id"] and spec["dataset_id"] == ds and spec["params"]["spotlight_size"] == 5
    assert "embeddings" not in str(spec)  # ids and params only, never arrays
    assert rq_job.timeout == api.settings.job_timeout_s and rq_job.result_ttl == api.settings.result_ttl_s
    assert rq_job.retries_left == api.settings.job_retries
    assert job["id"] in Queue(api.settings.queue_name, connection=api.redis).job_ids


def test_inline_and_reference_datasets_are_ingested_first(api: LiveApi) -> None:
    path = api.refs_dir / "d.npz"
    data = toy(15)
    path.write_bytes(npz_bytes(embeddings=data["embeddings"], losses=data["losses"]))
    with api.client() as c:
        inline = c.post(
            "/v1/jobs", json={"dataset": {"embeddings": [[0.0, 1.0]] * 4 + [[2.0, 2.0]], "losses": [1, 2, 3, 4, 5]}}
        )
        ref = c.post("/v1/jobs", json={"dataset": {"uri": path.as_uri()}})
        assert inline.status_code == 202 and ref.status_code == 202, (inline.text, ref.text)
        datasets = {d["id"]: d for d in c.get("/v1/datasets").json()["datasets"]}
        assert set(datasets) == {inline.json()["dataset"], ref.json()["dataset"]}
        assert datasets[ref.json()["dataset"]]["n"] == 15
        # NaN is not JSON, but Python's parser (and many clients) accept it: it must still be refused
        bad = c.post(
            "/v1/jobs",
            content=b'{"dataset": {"embeddings": [[1.0, NaN]], "losses": [1]}}',
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "non_finite_values"
        assert c.get("/v1/jobs").json()["total"] == 2


def test_params_are_checked_against_the_dataset(api: LiveApi) -> None:
    with api.client() as c:
        ds = _dataset(c, n=20)
        for params, field in [
            ({"spotlight_size": 20}, "params.spotlight_size"),
            ({"spotlight_size": 0}, "params.spotlight_size"),
            ({"spotlight_size": -3}, "params.spotlight_size"),
            ({"spotlight_size": 2.5}, "params.spotlight_size"),
            ({"pca_components": 4}, "params.pca_components"),
            ({"kernel": "triangle"}, "params.kernel"),
            ({"n_spotlights": "many"}, "params.n_spotlights"),
            ({"wat": 1}, "params.wat"),
            ({"device": "tpu"}, "params.device"),
            ({"level": 0}, "params.level"),  # the verdict's level lies in (0, 1)
            ({"level": 1}, "params.level"),
            ({"level": 1.5}, "params.level"),
            ({"level": "0.05"}, "params.level"),
        ]:
            r = c.post("/v1/jobs", json={"dataset": ds, "params": params})
            assert r.status_code == 400, (params, r.text)
            err = r.json()["error"]
            assert err["code"] == "validation_error", err
            assert field in err["message"] or field == err["details"].get("field"), err
        assert c.post("/v1/jobs", json={"dataset": ds, "params": {"spotlight_size": 19}}).status_code == 202
        r = c.post("/v1/jobs", json={"dataset": "ds_nope"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "dataset_not_found"
        r = c.post("/v1/jobs", json={"dataset": ds, "callback_url": "ftp://x"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
        r = c.post("/v1/jobs", json={"params": {}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
        assert c.get("/v1/jobs").json()["total"] == 1


def test_list_is_newest_first_and_paged(api: LiveApi) -> None:
    with api.client() as c:
        ds = _dataset(c)
        ids = [c.post("/v1/jobs", json={"dataset": ds, "params": {"seed": i}}).json()["id"] for i in range(4)]
        page = c.get("/v1/jobs", params={"limit": 2}).json()
        assert page["total"] == 4 and [j["id"] for j in page["jobs"]] == ids[::-1][:2]
        assert [j["id"] for j in c.get("/v1/jobs", params={"limit": 2, "offset": 2}).json()["jobs"]] == ids[::-1][2:]
        assert c.get("/v1/jobs", params={"limit": 0}).status_code == 400


def test_cancel_queued_running_and_finished(api: LiveApi) -> None:
    queue = Queue(api.settings.queue_name, connection=api.redis)
    with api.client() as c:
        ds = _dataset(c)
        queued, running, finished = (c.post("/v1/jobs", json={"dataset": ds}).json()["id"] for _ in range(3))

        r = c.delete(f"/v1/jobs/{queued}")
        assert r.status_code == 200 and r.json()["status"] == "canceled"
        assert r.json()["error"]["code"] == "canceled" and r.json()["ended_at"] is not None
        assert queued not in queue.job_ids
        assert c.get(f"/v1/jobs/{queued}").json()["status"] == "canceled"
        again = c.delete(f"/v1/jobs/{queued}")
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_cancelable"

        Job.fetch(running, connection=api.redis).set_status(JobStatus.STARTED)
        r = c.delete(f"/v1/jobs/{running}")
        assert r.status_code == 202 and r.json()["status"] == "running" and r.json()["cancel_requested"] is True
        assert api.redis.exists(Keys.of(api.settings).cancel(running))

        api.mark_finished(finished)
        r = c.delete(f"/v1/jobs/{finished}")
        assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_cancelable"
        assert not api.redis.exists(Keys.of(api.settings).cancel(finished))
        assert c.delete("/v1/jobs/job_nope").status_code == 404


def test_failed_job_without_worker_error_reports_worker_lost(api: LiveApi) -> None:
    with api.client() as c:
        job_id = c.post("/v1/jobs", json={"dataset": _dataset(c)}).json()["id"]
        Job.fetch(job_id, connection=api.redis).set_status(JobStatus.FAILED)
        body = c.get(f"/v1/jobs/{job_id}").json()
    assert body["status"] == "failed" and body["error"]["code"] == "worker_lost"


def test_idempotency_key(api: LiveApi) -> None:
    queue = Queue(api.settings.queue_name, connection=api.redis)
    with api.client() as c:
        ds = _dataset(c)
        body = {"dataset": ds, "params": {"seed": 3}}
        first = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        second = c.post("/v1/jobs", json={"params": {"seed": 3}, "dataset": ds}, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 202 and second.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        assert second.headers.get("Idempotent-Replayed") == "true"
        assert len(queue.job_ids) == 1
        conflict = c.post("/v1/jobs", json={**body, "params": {"seed": 4}}, headers={"Idempotency-Key": "k-1"})
        assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_conflict"
        other = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-2"})
        plain = c.post("/v1/jobs", json=body)
        assert len({first.json()["id"], other.json()["id"], plain.json()["id"]}) == 3
        # a request that failed does not burn its key
        bad = c.post("/v1/jobs", json={"dataset": "ds_missing"}, headers={"Idempotency-Key": "k-3"})
        assert bad.status_code == 404
        ok = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-3"})
        assert ok.status_code == 202


def test_per_tenant_cap_is_429_with_retry_after(make_api) -> None:
    api = make_api(max_active_jobs_per_tenant=2, api_keys="a:key-a,b:key-b")
    with api.client("key-a") as a, api.client("key-b") as b:
        ds = _dataset(a)
        j1 = a.post("/v1/jobs", json={"dataset": ds}).json()["id"]
        a.post("/v1/jobs", json={"dataset": ds})
        r = a.post("/v1/jobs", json={"dataset": ds}, headers={"Idempotency-Key": "again"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_active_jobs"
        assert int(r.headers["Retry-After"]) > 0
        r = a.post("/v1/jobs", json={"dataset": {"embeddings": [[1.0]] * 3, "losses": [1, 2, 3]}})
        assert r.status_code == 429
        assert a.get("/v1/datasets").json()["total"] == 1  # refused before ingesting the inline dataset
        assert b.post("/v1/jobs", json={"dataset": _dataset(b)}).status_code == 202  # the cap is per tenant
        assert a.delete(f"/v1/jobs/{j1}").status_code == 200
        assert a.post("/v1/jobs", json={"dataset": ds}, headers={"Idempotency-Key": "again"}).status_code == 202
        job = Job.fetch(a.get("/v1/jobs").json()["jobs"][0]["id"], connection=api.redis)
        job.set_status(JobStatus.FINISHED)  # ended jobs leave the count on the next submit
        assert a.post("/v1/jobs", json={"dataset": ds}).status_code == 202
