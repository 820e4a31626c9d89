"""POST /v1/jobs/{id}/score on a finished job whose region record a test built: membership by its own threshold.

A gaussian region's member set is the ceil(Σk) heaviest rows of the data it was found on
(spotlight/contract/members.py); rows of other data are members when their weight reaches the smallest
weight among those members, the `member_min_weight` the record carries.
"""

from __future__ import annotations

import numpy as np
import pytest

from spotlight.contract import kernel
from spotlight.contract.members import member_set
from spotlight.contract.protocol import job_file, members_by_contribution_file, members_file
from tests.records import region_record
from tests.service.conftest import LiveApi, npz_bytes, toy

N = 60


def _finished_gaussian_job(api: LiveApi, c) -> tuple[str, dict, np.ndarray]:
    data = toy(N)
    ds = c.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**data))}).json()
    job_id = c.post("/v1/jobs", json={"dataset": ds["id"], "params": {"n_spotlights": 1}}).json()["id"]
    region = region_record(center=[0.2, -0.1, 0.3], precision=1.5, size_requested=6.0)
    w = kernel.region_weights(data["embeddings"], region).astype(np.float32)
    members = member_set(w, "gaussian")
    region = region.model_copy(
        update={
            "total_weight": float(w.sum()),
            "effective_size": float(w.sum()),
            "n_members": int(members.size),
            "member_min_weight": float(w[members].min()),
        }
    )
    api.store.save_npy(job_file(job_id, "weights.npy"), w[:, None])
    api.store.save_npy(job_file(job_id, members_file(0)), members)
    api.store.save_npy(job_file(job_id, members_by_contribution_file(0)), members)
    api.finish_with(job_id, [region])
    return job_id, data, members


def test_rows_of_other_data_are_members_by_the_regions_own_threshold(api: LiveApi) -> None:
    with api.client() as c:
        job_id, data, members = _finished_gaussian_job(api, c)
        own = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": data["embeddings"].tolist()})
        assert own.status_code == 200, own.text
        # the job's own rows score as its member set (the ceil(Σk) heaviest), in the same order
        assert own.json()["members"][0] == members.tolist()
        assert len(members) < N  # a real cut, not "every row"
        threshold = own.json()["member_min_weight"][0]
        served = np.asarray(own.json()["weights"])[:, 0]
        assert threshold == pytest.approx(float(served[members].min()), rel=1e-6)

        rng = np.random.default_rng(1)
        new = rng.normal(size=(40, 3))
        answer = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": new.tolist()}).json()
        w_new = np.asarray(answer["weights"])[:, 0]
        want = np.flatnonzero(w_new >= threshold * (1 - 1e-4))
        assert sorted(answer["members"][0]) == want.tolist()
        assert 0 < len(want) < 40  # some new rows are in, some out
        assert all(
            w_new[i] >= w_new[j] for i, j in zip(answer["members"][0], answer["members"][0][1:], strict=False)
        )  # deepest first


def test_a_region_without_members_takes_no_rows_of_other_data(api: LiveApi) -> None:
    with api.client() as c:
        job_id, data, _ = _finished_gaussian_job(api, c)
        region = region_record(center=[0.2, -0.1, 0.3], precision=1.5, n_members=0, member_min_weight=None)
        api.finish_with(job_id, [region])
        answer = c.post(f"/v1/jobs/{job_id}/score", json={"embeddings": data["embeddings"].tolist()}).json()
        assert answer["member_min_weight"] == [None] and answer["members"] == [[]]
        assert np.max(answer["weights"]) > 0  # the weights are still there
