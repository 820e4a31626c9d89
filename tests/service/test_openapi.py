"""The committed openapi/openapi.json is the live app's spec (regenerate: python -m service.openapi_export)."""

from __future__ import annotations

import json

from service.openapi_export import DEFAULT_PATH, openapi_json


def test_committed_spec_matches_the_live_app() -> None:
    live = openapi_json()
    assert DEFAULT_PATH.exists(), "openapi/openapi.json missing: run `python -m service.openapi_export`"
    assert DEFAULT_PATH.read_text() == live, "openapi/openapi.json is stale: run `python -m service.openapi_export`"


def test_spec_documents_the_contract() -> None:
    spec = json.loads(openapi_json())
    paths = spec["paths"]
    assert {
        "/v1/datasets",
        "/v1/datasets/{dataset_id}",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/regions",
        "/v1/jobs/{job_id}/regions/{k}/members",
        "/v1/jobs/{job_id}/weights",
        "/v1/jobs/{job_id}/basis",
        "/v1/jobs/{job_id}/score",
        "/v1/jobs/{job_id}/report",
        "/healthz",
        "/readyz",
    } <= set(paths)
    for path, item in paths.items():
        for method, op in item.items():
            assert "422" not in op["responses"], (path, method)
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert resp["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorResponse"
                    }
    params = spec["components"]["schemas"]["SearchParams"]["properties"]
    assert {
        "spotlight_size",
        "n_spotlights",
        "kernel",
        "shape",
        "objective",
        "steps",
        "learning_rate",
        "barrier_scale",
        "restarts",
        "seed",
        "pca_components",
        "label_entropy_coeff",
        "prediction_entropy_coeff",
        "evidence_weight",
        "evidence",
        "device",
    } <= set(params)
    upload = paths["/v1/datasets"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(upload)
