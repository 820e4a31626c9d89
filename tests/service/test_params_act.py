"""No parameter accepted and then ignored: a setting the others leave without effect is a 400 at submit,
a removed parameter or combination is a 400 that says what to use instead, and a job's full params
resubmitted pass."""

from __future__ import annotations

import pytest
from rq.job import Job

from spotlight.contract.params import SearchParams
from spotlight.contract.protocol import META_SPEC
from tests.service.conftest import LiveApi, npz_bytes, toy


def _dataset(c, n: int) -> str:
    data = toy(n)
    r = c.post(
        "/v1/datasets",
        files={
            "file": ("d.npz", npz_bytes(embeddings=data["embeddings"], losses=data["losses"], labels=data["labels"]))
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _refused(c, ds: str, params: dict) -> dict:
    r = c.post("/v1/jobs", json={"dataset": ds, "params": {"device": "cpu", **params}})
    assert r.status_code == 400, (params, r.text)
    error = r.json()["error"]
    assert error["code"] == "validation_error", error
    return error


def _accepted(c, ds: str, params: dict) -> dict:
    r = c.post("/v1/jobs", json={"dataset": ds, "params": {"device": "cpu", **params}})
    assert r.status_code == 202, (params, r.text)
    return r.json()


@pytest.mark.parametrize("value", ["tied", "learned"])
def test_evidence_precision_is_refused_with_what_to_do_instead(api: LiveApi, value: str) -> None:
    with api.client() as c:
        ds = _dataset(c, 40)
        error = _refused(c, ds, {"evidence_precision": value})
        assert "evidence_precision was removed" in error["message"], error
        assert "Leave the field out" in error["message"] and "evidence_weight to 0" in error["message"]
        assert error["details"]["errors"][0]["type"] == "removed_parameter"
        assert "evidence_precision" not in SearchParams.model_fields


@pytest.mark.parametrize(
    ("params", "field", "says", "fixed"),
    [
        # the ball has no barrier; 'auto' may run it
        ({"kernel": "ball", "barrier_scale": 2.0}, "barrier_scale", "has no barrier", {"kernel": "gaussian"}),
        ({"barrier_scale": 2.0}, "barrier_scale", "may run", {"kernel": "flat"}),
        # the evidence kind chooses columns that evidence_weight 0 never appends
        ({"evidence": "mismatch", "evidence_weight": 0.0}, "evidence", "appends none", {"evidence": "labels"}),
        # deflation acts between regions: one region has no next
        ({"deflation": "paper", "n_spotlights": 1}, "deflation", "no next one", {"n_spotlights": 2}),
        # 'grow' adds rings of 0.5 S up to half the rows: above a third of the rows none fits
        ({"sizing": "grow", "spotlight_size": 0.34}, "sizing", "not one ring fits", {"spotlight_size": 0.33}),
        ({"sizing": "grow", "spotlight_size": 14}, "sizing", "room for none", {"spotlight_size": 13}),
        # the ball is spherical only (its diagonal variant lost everywhere measured)
        ({"kernel": "ball", "shape": "diagonal"}, "shape", "was removed", {"kernel": "gaussian"}),
    ],
)
def test_a_setting_without_effect_or_removed_is_refused_and_its_fix_accepted(
    api: LiveApi, params: dict, field: str, says: str, fixed: dict
) -> None:
    with api.client() as c:
        ds = _dataset(c, 40)
        error = _refused(c, ds, params)
        assert error["details"]["field"] == f"params.{field}", error
        assert says in error["message"], error
        assert ("would have no effect" in error["message"]) != ("was removed" in error["message"]), error
        _accepted(c, ds, {**params, **fixed})


def test_pca_on_every_dimension_is_refused(api: LiveApi) -> None:
    """The engine projects only on fewer components than dimensions: all of them would be no projection."""
    with api.client() as c:
        ds = _dataset(c, 40)  # dim 3
        error = _refused(c, ds, {"pca_components": 3})
        assert error["details"]["field"] == "params.pca_components" and "would have no effect" in error["message"]
        _accepted(c, ds, {"pca_components": 2})


def test_level_without_a_verdict_is_refused(api: LiveApi) -> None:
    """A dataset too small for the verdict (spotlight/contract/verdict.py too_few_rows) gets none: its level is idle."""
    with api.client() as c:
        small, large = _dataset(c, 15), _dataset(c, 400)
        error = _refused(c, small, {"level": 0.1})
        assert error["details"]["field"] == "params.level" and "needs at least" in error["message"], error
        _accepted(c, small, {})  # the default level asks for nothing
        _accepted(c, large, {"level": 0.1, "spotlight_size": 0.05})
        error = _refused(c, large, {"level": 0.1, "spotlight_size": 0.01})  # ~2 held-out rows per region
        assert "held-out rows" in error["message"], error


def test_a_jobs_full_params_resubmitted_are_accepted(api: LiveApi) -> None:
    """A default value is never idle: GET's params (every field) go back in as they came out."""
    with api.client() as c:
        ds = _dataset(c, 40)
        job = _accepted(c, ds, {"kernel": "ball", "n_spotlights": 1})
        assert job["params"]["barrier_scale"] == 1.0 and job["params"]["deflation"] == "tails"
        again = _accepted(c, ds, job["params"])
        assert again["params"] == job["params"]


def test_a_job_stored_with_a_removed_parameter_still_reads(api: LiveApi) -> None:
    """Jobs made before a parameter was removed carry it in their stored spec; reading them must not fail."""
    with api.client() as c:
        ds = _dataset(c, 40)
        job = _accepted(c, ds, {})
        rq_job = Job.fetch(job["id"], connection=api.redis)
        rq_job.meta[META_SPEC]["params"]["evidence_precision"] = "learned"
        rq_job.save_meta()
        r = c.get(f"/v1/jobs/{job['id']}")
        assert r.status_code == 200, r.text
        assert "evidence_precision" not in r.json()["params"]
