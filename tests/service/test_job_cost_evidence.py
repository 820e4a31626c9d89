"""A job's estimated cost counts the label evidence columns the engine appends (spotlight/server/cost.py):
with labels, a one-hot kind counts `evidence.MAX_COLUMNS` more coordinates per row (the class count is
not known at submission), 'mismatch' one, and nothing when evidence is off or cannot apply."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spotlight.contract import evidence
from spotlight.contract.params import SearchParams
from spotlight.server.cost import job_cost
from tests.conftest import api_client

N, D = 100, 10
PARAMS = {"n_spotlights": 2, "steps": 1000, "restarts": 10, "device": "cpu"}
PLAIN = N * D * 10 * 1000 * 2  # the cost without evidence: 2e7
WIDE = N * evidence.MAX_COLUMNS * 10 * 1000 * 2  # what 128 evidence columns add


def test_labels_add_the_evidence_width_to_each_row() -> None:
    p = SearchParams(**PARAMS, evidence_check=False)
    assert job_cost(p, N, D) == job_cost(p, N, D, ["predictions"]) == PLAIN
    assert job_cost(p, N, D, ["labels"]) == PLAIN + WIDE
    assert job_cost(p, N, D, ["labels", "predictions"]) == PLAIN + WIDE
    both = p.model_copy(update={"evidence": "labels_predictions"})
    assert job_cost(both, N, D, ["labels"]) == PLAIN  # it needs predictions too: no evidence
    assert job_cost(both, N, D, ["labels", "predictions"]) == PLAIN + WIDE  # at most 128 columns in all
    mismatch = p.model_copy(update={"evidence": "mismatch"})
    assert job_cost(mismatch, N, D, ["labels", "predictions"]) == PLAIN + N * 1 * 10 * 1000 * 2
    assert job_cost(p.model_copy(update={"evidence_weight": 0.0}), N, D, ["labels"]) == PLAIN
    with_pca = p.model_copy(update={"pca_components": 4})
    assert job_cost(with_pca, N, D, ["labels"]) == PLAIN // D * 4 + WIDE  # appended after the projection
    perms = p.model_copy(update={"n_permutations": 3})
    assert job_cost(perms, N, D, ["labels"]) == (PLAIN + WIDE) // 2 * 5  # the permutations search with them too


def test_the_evidence_check_counts_two_regions_more_whenever_it_runs() -> None:
    default = SearchParams(**PARAMS)  # evidence_check unset: on whenever evidence is used
    assert job_cost(default, N, D, ["labels"]) == (PLAIN + WIDE) // 2 * 4
    assert job_cost(default, N, D) == PLAIN  # no labels, no evidence, nothing to check
    assert job_cost(default.model_copy(update={"evidence_weight": 0.0}), N, D, ["labels"]) == PLAIN
    asked = SearchParams(**PARAMS, evidence_check=True)
    assert job_cost(asked, N, D, ["labels"]) == job_cost(default, N, D, ["labels"])


@pytest.fixture
def client(redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    # a job without evidence fits, the same job with it does not
    with api_client(redis_url, tmp_path, max_job_cost=(PLAIN + PLAIN + WIDE) / 2) as c:
        yield c


def _dataset(client: TestClient, labels: bool) -> str:
    body: dict = {"embeddings": [[float((i * 7 + j) % 5) for j in range(D)] for i in range(N)], "losses": [1.0] * N}
    if labels:
        body["labels"] = [i % 3 for i in range(N)]
    r = client.post("/v1/datasets", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_the_api_counts_the_evidence_of_a_labelled_dataset(client: TestClient) -> None:
    plain, labelled = _dataset(client, labels=False), _dataset(client, labels=True)
    assert client.post("/v1/jobs", json={"dataset": plain, "params": PARAMS}).status_code == 202
    r = client.post("/v1/jobs", json={"dataset": labelled, "params": PARAMS})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "job_too_costly" and err["details"]["cost"] == (PLAIN + WIDE) // 2 * 4  # with its check
    assert "evidence_weight" in err["message"]
    off = {**PARAMS, "evidence_weight": 0.0}  # what the message suggests: the same job without evidence fits
    assert client.post("/v1/jobs", json={"dataset": labelled, "params": off}).status_code == 202
