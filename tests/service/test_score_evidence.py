"""POST /v1/jobs/{id}/score on a region found with label evidence (spotlight/contract/evidence.py): the rows'
labels are part of its distance, so bare embeddings without them get a 400 that says so, embeddings
with labels and a stored dataset (which brings its own) get the weights spotlight/contract/kernel.py gives."""

from __future__ import annotations

import numpy as np

from spotlight.contract import kernel
from tests.records import region_record
from tests.service.conftest import LiveApi, npz_bytes, toy

N = 40


def _finished_job_with_evidence(api: LiveApi, c) -> tuple[str, dict, dict]:
    data = toy(N)
    ds = c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**data))}).json()
    job_id = c.post("/v1/jobs", json={"dataset": ds["id"], "params": {"n_spotlights": 1}}).json()["id"]
    region = region_record(
        center=[0.2, -0.1, 0.3],
        precision=0.8,
        size_requested=4.0,
        member_min_weight=0.05,
        # label 2's rows: its column's centre is 1, the others' 0
        evidence={
            "kind": "labels",
            "weight": 1.0,
            "n_labels": 3,
            "n_predictions": 0,
            "center": [0.0, 0.0, 1.0],
            "precision": 3.0,
        },
    )
    api.finish_with(job_id, [region])
    return job_id, data, region


def test_bare_embeddings_need_the_labels_the_region_weighs(api: LiveApi) -> None:
    with api.client() as c:
        job_id, data, region = _finished_job_with_evidence(api, c)
        x = data["embeddings"].tolist()
        refused = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": x})
        assert refused.status_code == 400, refused.text
        assert "labels" in refused.json()["error"]["message"]
        assert "evidence_weight" in refused.json()["error"]["message"]

        answer = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": x, "labels": data["labels"].tolist()})
        assert answer.status_code == 200, answer.text
        served = np.asarray(answer.json()["weights"])[:, 0]
        want = kernel.region_weights(data["embeddings"], region, labels=data["labels"])
        assert np.allclose(served, want, rtol=1e-6)
        # the label term separates the rows: label-2 rows weigh more than the rest on average
        is_two = data["labels"] == 2
        assert served[is_two].mean() > 5 * served[~is_two].mean()

        short = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": x, "labels": [0, 1]})
        assert short.status_code == 400 and "labels" in short.json()["error"]["message"]


def test_a_stored_dataset_brings_its_own_labels(api: LiveApi) -> None:
    with api.client() as c:
        job_id, _, region = _finished_job_with_evidence(api, c)
        other = toy(N, seed=3)
        ds = c.post("/v1/datasets", files={"file": ("o.npz", npz_bytes(**other))}).json()
        answer = c.post(f"/v1/jobs/{job_id}/score", json={"dataset": ds["id"]})
        assert answer.status_code == 200, answer.text
        served = np.asarray(answer.json()["weights"])[:, 0]
        want = kernel.region_weights(other["embeddings"], region, labels=other["labels"])
        assert np.allclose(served, want, rtol=1e-5)
        both = c.post(f"/v1/jobs/{job_id}/score", json={"dataset": ds["id"], "labels": [0] * N})
        assert both.status_code in (400, 422)


def test_text_labels_are_matched_by_name_across_datasets(api: LiveApi) -> None:
    """Each dataset codes its text labels by its own vocabulary; the region's columns are the job's codes,
    so the route compares names (the worker stores the job's class names in the region's evidence)."""
    with api.client() as c:
        job_id, data, region = _finished_job_with_evidence(api, c)
        assert region.evidence is not None
        evidence = region.evidence.model_copy(update={"class_names": ["ant", "bee", "cat"]})  # the job's codes 0, 1, 2
        region = region.model_copy(update={"evidence": evidence})
        api.finish_with(job_id, [region])
        rng = np.random.default_rng(5)
        text = rng.choice(["bee", "cat", "cow"], size=N)  # this dataset's vocabulary: bee 0, cat 1, cow 2
        other = {**toy(N, seed=4), "labels": text}
        other.pop("predictions")
        ds = c.post("/v1/datasets", files={"file": ("t.npz", npz_bytes(**other))})
        assert ds.status_code == 201, ds.text
        answer = c.post(f"/v1/jobs/{job_id}/score", json={"dataset": ds.json()["id"]})
        assert answer.status_code == 200, answer.text
        served = np.asarray(answer.json()["weights"])[:, 0]
        job_codes = np.select([text == "ant", text == "bee", text == "cat"], [0, 1, 2], -1)
        want = kernel.region_weights(other["embeddings"], region, labels=job_codes)
        assert np.allclose(served, want, rtol=1e-5)
        assert served[text == "cat"].mean() > 5 * served[text != "cat"].mean()  # cat is the region's class
        inline = c.post(
            f"/v1/jobs/{job_id}/score", json={"embeddings": other["embeddings"].tolist(), "labels": text.tolist()}
        )
        assert inline.status_code == 200, inline.text
        assert np.allclose(np.asarray(inline.json()["weights"])[:, 0], want, rtol=1e-5)


def test_evidence_asked_for_by_name_must_have_its_fields(api: LiveApi) -> None:
    with api.client() as c:
        plain = toy(N)
        bare = c.post(
            "/v1/datasets",
            files={"file": ("b.npz", npz_bytes(embeddings=plain["embeddings"], losses=plain["losses"]))},
        ).json()["id"]
        labelled = c.post(
            "/v1/datasets",
            files={
                "file": (
                    "l.npz",
                    npz_bytes(embeddings=plain["embeddings"], losses=plain["losses"], labels=plain["labels"]),
                )
            },
        ).json()["id"]
        # the default uses labels when there are some: no labels, no evidence, no error
        assert c.post("/v1/jobs", json={"dataset": bare, "params": {"device": "cpu"}}).status_code == 202
        for dataset, params, missing in (
            (bare, {"evidence_weight": 1.0}, "labels"),
            (labelled, {"evidence": "mismatch"}, "predictions"),
            (labelled, {"evidence": "labels_predictions", "evidence_weight": 2.0}, "predictions"),
            (bare, {"evidence_check": True}, "labels"),
        ):
            r = c.post("/v1/jobs", json={"dataset": dataset, "params": {**params, "device": "cpu"}})
            assert r.status_code == 400, r.text
            assert missing in r.json()["error"]["message"] and "evidence_weight to 0" in r.json()["error"]["message"]
        ok = c.post("/v1/jobs", json={"dataset": labelled, "params": {"evidence": "labels", "device": "cpu"}})
        assert ok.status_code == 202, ok.text
        off = c.post("/v1/jobs", json={"dataset": bare, "params": {"evidence_weight": 0.0, "device": "cpu"}})
        assert off.status_code == 202, off.text
