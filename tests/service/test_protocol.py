"""The contract's job states as the API reports them (spotlight/contract/jobstate.py), from RQ's status and
what the worker wrote; and job ids a caller cannot guess."""

from __future__ import annotations

import re

import pytest

from spotlight.contract.jobstate import status_from
from spotlight.contract.protocol import META_STATUS, new_job_id


@pytest.mark.parametrize(
    ("rq_status", "expected"),
    [
        ("queued", "queued"),
        ("deferred", "queued"),
        ("scheduled", "queued"),
        ("started", "running"),
        ("finished", "finished"),
        ("failed", "failed"),
        ("stopped", "canceled"),
        ("canceled", "canceled"),
        (None, "queued"),
        ("a-status-rq-adds-later", "queued"),  # unknown: not yet running, nothing to read
    ],
)
def test_rq_statuses_map_onto_the_five_of_the_contract(rq_status: str | None, expected: str) -> None:
    assert status_from(rq_status, {}) == expected


@pytest.mark.parametrize("own", ["finished", "failed", "canceled"])
@pytest.mark.parametrize("rq_status", ["started", "finished", "failed", None])
def test_how_the_worker_says_a_job_ended_wins_over_rq(own: str, rq_status: str | None) -> None:
    """A search the worker canceled returns normally, so RQ says `finished`; the job is `canceled`."""
    assert status_from(rq_status, {META_STATUS: own}) == own


def test_running_written_by_the_worker_does_not_hide_rq_ending_the_job() -> None:
    assert status_from("failed", {META_STATUS: "running"}) == "failed"  # its horse was killed


def test_job_ids_are_unguessable() -> None:
    ids = {new_job_id() for _ in range(20_000)}
    assert len(ids) == 20_000
    for job_id in list(ids)[:100]:
        suffix = job_id.removeprefix("job_")
        assert job_id.startswith("job_") and re.fullmatch(r"[0-9a-f]+", suffix) and len(suffix) * 4 >= 96
