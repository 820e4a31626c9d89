"""GET /v1/jobs?status= filters; unknown query parameters are refused, not ignored."""

from __future__ import annotations

from tests.service.conftest import LiveApi, npz_bytes, toy


def _dataset(c) -> str:
    data = toy(20)
    r = c.post(
        "/v1/datasets", files={"file": ("d.npz", npz_bytes(embeddings=data["embeddings"], losses=data["losses"]))}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_status_filter_on_the_job_list(api: LiveApi) -> None:
    with api.client() as c:
        ds = _dataset(c)
        ids = [c.post("/v1/jobs", json={"dataset": ds, "params": {"seed": i}}).json()["id"] for i in range(4)]
        assert c.delete(f"/v1/jobs/{ids[1]}").json()["status"] == "canceled"
        assert c.delete(f"/v1/jobs/{ids[3]}").json()["status"] == "canceled"
        page = c.get("/v1/jobs", params={"status": "canceled"}).json()
        assert page["total"] == 2 and [j["id"] for j in page["jobs"]] == [ids[3], ids[1]]
        page = c.get("/v1/jobs", params={"status": "canceled", "limit": 1, "offset": 1}).json()
        assert page["total"] == 2 and [j["id"] for j in page["jobs"]] == [ids[1]]
        queued = c.get("/v1/jobs", params={"status": "queued"}).json()
        assert queued["total"] == 2 and {j["id"] for j in queued["jobs"]} == {ids[0], ids[2]}
        assert c.get("/v1/jobs", params={"status": "finished"}).json() == {"jobs": [], "total": 0}
        bad = c.get("/v1/jobs", params={"status": "done"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "validation_error"


def test_unknown_query_parameters_are_refused_with_what_is_accepted(api: LiveApi) -> None:
    with api.client() as c:
        r = c.get("/v1/jobs", params={"stauts": "failed"})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["details"]["unknown"] == ["stauts"] and "status" in err["details"]["allowed"]
        assert "stauts" in err["message"] and "status" in err["message"]
        assert c.get("/v1/datasets", params={"limit": 5}).status_code == 200
        assert c.get("/v1/datasets", params={"page": 2}).status_code == 400
        assert c.get("/healthz", params={"x": 1}).status_code == 400


def test_name_and_tags_on_datasets_and_jobs(api: LiveApi) -> None:
    from spotlight.client import SpotlightClient

    data = toy(20)
    with SpotlightClient(api.url) as sc:
        job = sc.submit(data["embeddings"], data["losses"], name="resnet nightly", tags=["nightly", "resnet50"])
        status = job.status()
        assert status["name"] == "resnet nightly" and status["tags"] == ["nightly", "resnet50"]
        ds = sc.dataset(status["dataset"])
        assert ds["name"] == "resnet nightly" and ds["tags"] == ["nightly", "resnet50"]
        assert sc.jobs()[0]["tags"] == ["nightly", "resnet50"]
    with api.client() as c:
        bad = c.post("/v1/jobs", json={"dataset": ds["id"], "tags": ["has space"]})
        assert bad.status_code == 400
        bad = c.post(
            "/v1/datasets",
            params={"tags": "a,b"},
            files={"file": ("d.npz", npz_bytes(embeddings=data["embeddings"], losses=data["losses"]))},
        )
        assert bad.status_code == 400 and "tags" in bad.json()["error"]["message"]
