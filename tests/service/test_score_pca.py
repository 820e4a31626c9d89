"""Regions found with `pca_components` scored on new rows, end to end: a live API on a real Redis and
a directory store, the worker's own task (in this process) running the search, then the score route,
`GET /v1/jobs/{id}/basis` and the client's `Region.weights` / `Job.score`.

Scoring the job's own rows must give back the worker's weights up to float32 rounding (the engine
computes in float32, spotlight/contract/kernel.py in float64: `float32_tolerance` says how far apart that
lets them be). Results stored without the basis (by a worker older than the one that stores it) get
a 409 that says so, never a 5xx or a wrong answer.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from rq.job import Job

from spotlight.client import SpotlightClient, SpotlightError
from spotlight.contract.protocol import BASIS_FILE, META_SPEC, WEIGHTS_FILE, JobSpec, job_file, members_file
from tests.engine.conftest import float32_tolerance, planted_problem
from tests.service.conftest import LiveApi, npz_bytes
from worker.task import execute

N, D, K = 400, 8, 3
PARAMS = {"n_spotlights": 2, "steps": 60, "restarts": 2, "spotlight_size": 0.05, "device": "cpu"}


def _run_job(api: LiveApi, c: httpx.Client, params: dict[str, Any]) -> tuple[str, np.ndarray]:
    """Upload through the API, submit, and run the queued job with the worker's task; (job id, rows)."""
    x, loss, _ = planted_problem(n=N, d=D)
    x = x * 3.0 + 5.0  # the caller's units are not the engine's standardised ones
    ds = c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(embeddings=x, losses=loss))})
    assert ds.status_code == 201, ds.text
    submitted = c.post("/v1/jobs", json={"dataset": ds.json()["id"], "params": params})
    assert submitted.status_code in (200, 201, 202), submitted.text
    job_id = submitted.json()["id"]
    job = Job.fetch(job_id, connection=api.redis)
    summary = execute(JobSpec.model_validate(job.meta[META_SPEC]), job, api.settings, api.store)
    assert summary["status"] == "finished", summary
    return job_id, x


def _stored(api: LiveApi, job_id: str) -> tuple[list[dict[str, Any]], np.ndarray]:
    regions = api.store.read_json(job_file(job_id, "regions.json"))["regions"]
    return regions, np.asarray(api.store.load_npy(job_file(job_id, WEIGHTS_FILE)), dtype=np.float64)


class _Counting(httpx.HTTPTransport):
    """The client's real transport, counting the requests it sends per path."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


@pytest.mark.parametrize("kernel_name", ["gaussian", "ball"])
def test_pca_regions_score_new_rows_like_the_worker_weighed_its_own(api: LiveApi, kernel_name: str) -> None:
    with api.client() as c:
        job_id, x = _run_job(api, c, {**PARAMS, "kernel": kernel_name, "pca_components": K})
        regions, stored = _stored(api, job_id)
        assert [r["precision_space"] for r in regions] == ["pca", "pca"]
        basis = api.store.load_npy(job_file(job_id, BASIS_FILE))
        assert basis.shape == (D, K) and np.allclose(basis.T @ basis, np.eye(K), atol=1e-10)

        # through the route: the training rows score as the worker weighed them
        answer = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": x.tolist()})
        assert answer.status_code == 200, answer.text
        served = np.asarray(answer.json()["weights"])
        assert served.shape == (N, 2)
        for k, region in enumerate(regions):
            assert np.max(np.abs(served[:, k] - stored[:, k])) <= float32_tolerance(region)
            assert (stored[:, k] > 0.5).sum() >= 3  # regions that weigh rows, not columns of zeros
            # membership carries over: the worker's member set, up to rows within rounding of the threshold
            members = api.store.load_npy(job_file(job_id, members_file(k)))
            edge = np.abs(stored[:, k] - answer.json()["member_min_weight"][k]) <= float32_tolerance(region)
            assert set(answer.json()["members"][k]) - set(np.flatnonzero(edge)) == set(members) - set(
                np.flatnonzero(edge)
            )

        # bad input is still the caller's 400, PCA or not
        short = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": x[:, :-1].tolist()})
        assert short.status_code == 400 and short.json()["error"]["code"] == "shape_mismatch"
        ragged = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": [[1.0] * D, [1.0]]})
        assert ragged.status_code == 400, ragged.text

    # through the client: Region.weights fetches the basis once per Job and keeps it
    transport = _Counting()
    with SpotlightClient(api.url, transport=transport) as sc:
        job = sc.job(job_id)
        found = job.regions()
        for k, region in enumerate(found):
            local = region.weights(x)
            assert np.max(np.abs(local - stored[:, k])) <= float32_tolerance(region)
        assert transport.paths.count(f"/v1/jobs/{job_id}/basis") == 1
        assert np.array_equal(job.basis(), basis)  # the served basis is the stored one, bit for bit
        assert transport.paths.count(f"/v1/jobs/{job_id}/basis") == 1
        scored = np.asarray(job.score(x[:50])["weights"])
        assert np.allclose(scored, np.stack([r.weights(x[:50]) for r in found], axis=1), rtol=0, atol=1e-12)


def test_results_stored_without_the_basis_get_a_409_that_says_so(api: LiveApi) -> None:
    with api.client() as c:
        job_id, x = _run_job(api, c, {**PARAMS, "kernel": "gaussian", "pca_components": K})
        api.store.fs.rm(api.store.full(job_file(job_id, BASIS_FILE)))  # as a worker before the basis wrote them
        datasets_before = c.get("/v1/datasets").json()

        refused = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": x[:5].tolist()})
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "pca_basis_missing" and "pca_components" in error["message"]
        assert "weights" in error["message"]  # and where the job's own rows' weights still are
        inline = {"embeddings": x[:5].tolist(), "losses": [0.0] * 5}
        again = c.post(f"/v1/jobs/{job_id}/score", json={"dataset": inline})
        assert again.status_code == 409
        assert c.get("/v1/datasets").json() == datasets_before  # refused before anything was stored
        assert c.get(f"/v1/jobs/{job_id}/basis").status_code == 409
        assert c.get(f"/v1/jobs/{job_id}/weights").status_code == 200  # the job's own results still serve

    with SpotlightClient(api.url) as sc:
        region = sc.job(job_id).regions()[0]
        with pytest.raises(SpotlightError) as caught:
            region.weights(x)
        assert caught.value.code == "pca_basis_missing" and caught.value.status_code == 409


def test_a_job_without_pca_has_no_basis_and_scores_as_before(api: LiveApi) -> None:
    with api.client() as c:
        job_id, x = _run_job(api, c, {**PARAMS, "kernel": "gaussian"})
        assert not api.store.exists(job_file(job_id, BASIS_FILE))
        missing = c.get(f"/v1/jobs/{job_id}/basis")
        assert missing.status_code == 404 and "without pca_components" in missing.json()["error"]["message"]
        regions, stored = _stored(api, job_id)
        answer = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": x.tolist()})
        assert answer.status_code == 200, answer.text
        served = np.asarray(answer.json()["weights"])
        for k, region in enumerate(regions):
            assert np.max(np.abs(served[:, k] - stored[:, k])) <= float32_tolerance(region)
