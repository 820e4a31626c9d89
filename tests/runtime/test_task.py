"""The RQ task run in-process against a real Redis and a temporary store."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import redis
import torch

from spotlight.contract import verdict
from spotlight.contract.members import member_set, members_at_or_above
from spotlight.contract.protocol import (
    META_ERROR,
    META_PROGRESS,
    META_STATUS,
    REGIONS_FILE,
    WEIGHTS_FILE,
    ErrorCode,
    dataset_file,
    job_file,
    member_weights_file,
    members_by_contribution_file,
    members_file,
)
from spotlight.server.keys import Keys
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore
from worker.progress import JobReporter
from worker.task import execute

from .gate import Gate, held_searches
from .helpers import enqueue, make_spec, write_dataset


@pytest.fixture
def settings(store_dir: Path, redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, store_url=str(store_dir), progress_interval_s=0.05)


@pytest.fixture
def store(store_dir: Path) -> ArtifactStore:
    return ArtifactStore(str(store_dir))


def test_finished_job_writes_regions_weights_and_members(settings, store, redis_url) -> None:
    sha = write_dataset(store, n=200)
    spec = make_spec(sha)
    job = enqueue(redis_url, spec, settings)

    summary = execute(spec, job, settings, store)

    assert summary["status"] == "finished" and summary["regions"] == 2
    meta = job.get_meta(refresh=True)
    assert meta[META_STATUS] == "finished" and meta[META_ERROR] is None
    assert meta[META_PROGRESS]["fraction"] == 1.0 and meta[META_PROGRESS]["spotlight"] == 2
    assert meta["ended_at"] and meta["started_at"] and meta["device"] == "cpu"
    stored = store.read_json(job_file(spec.job_id, REGIONS_FILE))
    regions = stored["regions"]
    assert [r["index"] for r in regions] == [0, 1]
    losses = np.asarray(store.load_npy(dataset_file(sha, "losses.npy")), dtype=np.float64)
    assert stored["objective"] == "max_loss" and stored["loss_reference"] == float(losses.astype(np.float32).min())
    weights = store.load_npy(job_file(spec.job_id, WEIGHTS_FILE))
    assert weights.dtype == np.float32 and weights.shape == (200, 2)
    assert np.isfinite(weights).all() and weights.min() >= 0 and weights.max() <= 1
    for k in range(2):
        members = store.load_npy(job_file(spec.job_id, members_file(k)))
        w = weights[members, k]
        assert members.dtype == np.int64
        assert (w > 0).all() and (np.diff(w) <= 0).all()
        # the member rule on the searched rows, plus the held-out rows at or above the threshold it drew
        searched = verdict.split(200, spec.params.seed).searched_mask()
        in_search = member_set(weights[:, k], regions[k]["kernel"], searched.astype(np.float64))
        assert set(members[searched[members]].tolist()) == set(in_search.tolist())
        held = members[~searched[members]]
        assert held.size == regions[k]["n_holdout_members"]
        at_least = members_at_or_above(weights[~searched, k], regions[k]["member_min_weight"])
        assert set(held.tolist()) == set(np.flatnonzero(~searched)[at_least].tolist())
        assert len(members) == regions[k]["n_members"]
        # the same members by contribution: weight x (loss - the loss floor recorded in regions.json)
        by_contribution = store.load_npy(job_file(spec.job_id, members_by_contribution_file(k)))
        assert sorted(by_contribution.tolist()) == sorted(members.tolist())
        c = weights[by_contribution, k].astype(np.float64) * (losses[by_contribution] - stored["loss_reference"])
        assert (np.diff(c) <= 1e-9).all() and (c >= 0).all()
        for name, rows in ((members_file(k), members), (members_by_contribution_file(k), by_contribution)):
            beside = store.load_npy(job_file(spec.job_id, member_weights_file(name)))
            assert np.array_equal(beside, weights[rows, k])  # what a members page reads
    # no temporary file left next to the results
    assert not [p for p in store.list(f"jobs/{spec.job_id}") if "/.tmp-" in p]


def test_progress_is_published_at_most_once_per_interval(settings, store, redis_url) -> None:
    job = enqueue(redis_url, make_spec(write_dataset(store)), settings)
    now = [0.0]
    reporter = JobReporter(job, Keys.of(settings), interval_s=0.3, clock=lambda: now[0])
    reporter.started(n_spotlights=2, steps=10)
    seen = []
    for t, step in [(0.1, 0), (0.2, 1), (0.35, 2), (0.4, 3), (0.7, 4)]:
        now[0] = t
        reporter.progress(0, step, 10)
        seen.append(job.get_meta(refresh=True)[META_PROGRESS]["step"])
    assert seen == [0, 0, 3, 3, 5]  # published at t=0.35 and t=0.7 only (1-based steps)
    assert job.get_meta(refresh=True)[META_PROGRESS]["fraction"] == pytest.approx(0.25)


def test_cancel_before_start_ends_canceled_without_results(settings, store, redis_url) -> None:
    spec = make_spec(write_dataset(store))
    job = enqueue(redis_url, spec, settings)
    redis.Redis.from_url(redis_url).set(Keys.of(settings).cancel(spec.job_id), 1)

    assert execute(spec, job, settings, store)["status"] == "canceled"
    meta = job.get_meta(refresh=True)
    assert meta[META_STATUS] == "canceled" and meta[META_ERROR]["code"] == ErrorCode.CANCELED
    assert not store.exists(job_file(spec.job_id, REGIONS_FILE))


def test_cancel_while_running_stops_the_search(settings, store, redis_url) -> None:
    """The search is held mid-run (tests/runtime/gate.py) until the cancel flag, read by the job's real
    reporter, ends it: no race against how fast this CPU runs the search."""
    spec = make_spec(write_dataset(store))
    job = enqueue(redis_url, spec, settings)
    conn = redis.Redis.from_url(redis_url)
    out: dict = {}
    with held_searches():
        thread = threading.Thread(target=lambda: out.update(execute(spec, job, settings, store)))
        thread.start()
        try:
            Gate(conn, spec.job_id).wait_held(30)
            assert job.get_meta(refresh=True)[META_STATUS] == "running"
            conn.set(Keys.of(settings).cancel(spec.job_id), 1)
            thread.join(30)
        finally:
            Gate(conn, spec.job_id).open()  # never leave the thread held if an assertion failed
            thread.join(30)
    assert not thread.is_alive()
    assert out["status"] == "canceled"
    meta = job.get_meta(refresh=True)
    assert meta[META_STATUS] == "canceled" and meta[META_ERROR]["code"] == "canceled"
    assert meta[META_PROGRESS]["fraction"] < 1.0
    assert not store.exists(job_file(spec.job_id, REGIONS_FILE))


def test_missing_dataset_fails_dataset_gone(settings, store, redis_url) -> None:
    spec = make_spec("0" * 64)
    job = enqueue(redis_url, spec, settings)
    assert execute(spec, job, settings, store)["status"] == "failed"
    assert job.get_meta(refresh=True)[META_ERROR]["code"] == ErrorCode.DATASET_GONE


def test_unwritable_result_folder_fails_store_error(settings, store, store_dir, redis_url) -> None:
    spec = make_spec(write_dataset(store))
    job = enqueue(redis_url, spec, settings)
    (store_dir / "jobs").mkdir()
    (store_dir / "jobs" / spec.job_id).write_bytes(b"a file where the job's folder should be")

    assert execute(spec, job, settings, store)["status"] == "failed"
    meta = job.get_meta(refresh=True)
    assert meta[META_STATUS] == "failed" and meta[META_ERROR]["code"] == ErrorCode.STORE_ERROR


def test_unreadable_dataset_fails_store_error(settings, store, store_dir, redis_url) -> None:
    sha = write_dataset(store)
    (store_dir / "datasets" / sha / "embeddings.npy").write_bytes(b"\x93NUMPY truncated")
    spec = make_spec(sha)
    job = enqueue(redis_url, spec, settings)
    assert execute(spec, job, settings, store)["status"] == "failed"
    assert job.get_meta(refresh=True)[META_ERROR]["code"] == ErrorCode.STORE_ERROR


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="needs a machine without a cuda:7")
def test_engine_error_fails_search_failed(settings, store, redis_url) -> None:
    spec = make_spec(write_dataset(store), {"n_spotlights": 1, "steps": 5, "device": "cuda:7"})
    job = enqueue(redis_url, spec, settings)
    assert execute(spec, job, settings, store)["status"] == "failed"
    err = job.get_meta(refresh=True)[META_ERROR]
    assert err["code"] == ErrorCode.SEARCH_FAILED and err["message"]


def test_the_search_writes_its_kernel_values_to_a_file_not_the_horse_s_memory(
    settings, store, redis_url, monkeypatch
) -> None:
    """The n x k weights grow with rows x regions: the task has the engine write them into a
    memory-mapped temporary file (file-backed pages the kernel can write back and drop), and the
    stored weights.npy is copied from it, equal to an in-memory search's."""
    import worker.task
    from worker.engine import search as engine_search

    sha = write_dataset(store, n=300, seed=4)
    spec = make_spec(sha)
    job = enqueue(redis_url, spec, settings)
    seen: list[np.ndarray] = []
    original = worker.task.scratch_weights

    def recorded(n: int, k: int) -> np.ndarray:
        seen.append(original(n, k))
        return seen[-1]

    monkeypatch.setattr(worker.task, "scratch_weights", recorded)
    assert execute(spec, job, settings, store)["status"] == "finished"
    assert len(seen) == 1 and isinstance(seen[0], np.memmap) and seen[0].shape == (300, 2)
    stored = store.load_npy(job_file(spec.job_id, WEIGHTS_FILE))
    # the same search in memory: the verdict's searched half, as the task gives it to the engine
    inputs = worker.task.load_inputs(store, sha)
    searched, params = worker.task.searched_part(inputs, spec.params, verdict.split(300, spec.params.seed))
    in_memory = engine_search(
        searched.embeddings,
        searched.losses,
        params,
        labels=searched.labels,
        predictions=searched.predictions,
        sample_weights=searched.sample_weights,
    )
    np.testing.assert_array_equal(stored, in_memory.weights)
    np.testing.assert_array_equal(np.asarray(seen[0]), in_memory.weights)
    with pytest.raises(ValueError, match="weights_out"):
        engine_search(
            store.load_npy(dataset_file(sha, "embeddings.npy")),
            store.load_npy(dataset_file(sha, "losses.npy")),
            spec.params,
            weights_out=np.zeros((300, 3), dtype=np.float32),
        )


def test_a_finished_job_queues_its_report_and_is_finished_before_it_exists(settings, store, redis_url) -> None:
    """`finished` as soon as the results are stored: the report is queued for a search worker, its
    status pending in the meta, then ready once rendered."""
    from rq.job import Job

    from spotlight.contract.jobstate import ReportStatus, report_of
    from spotlight.contract.protocol import REPORT_FILE, report_job_id

    from .helpers import render_queued_report

    sha = write_dataset(store, n=200)
    spec = make_spec(sha)
    job = enqueue(redis_url, spec, settings)
    assert execute(spec, job, settings, store)["status"] == "finished"

    meta = job.get_meta(refresh=True)
    assert meta[META_STATUS] == "finished" and report_of(meta) == (ReportStatus.PENDING, None)
    assert store.exists(job_file(spec.job_id, REGIONS_FILE)) and not store.exists(job_file(spec.job_id, REPORT_FILE))
    queued = Job.fetch(report_job_id(spec.job_id), connection=job.connection)
    assert queued.args[0] == spec.job_id and queued.args[1]["id"] == spec.job_id
    assert queued.args[1]["device"] == "cpu" and queued.args[1]["verdict"]

    assert render_queued_report(settings, spec.job_id, store) == {
        "job_id": spec.job_id,
        "report": "ready",
        "error": None,
    }
    assert report_of(job.get_meta(refresh=True)) == (ReportStatus.READY, None)
    assert store.read_bytes(job_file(spec.job_id, REPORT_FILE)).decode().startswith("<!DOCTYPE html>")


def test_a_report_that_cannot_be_made_is_failed_with_its_reason_never_pending(
    settings, store, redis_url, monkeypatch
) -> None:
    """The dataset deleted before the report job ran, the report job raising, or its horse lost: each
    records report_failed with why (what the report route answers), and the job stays finished."""
    from rq.job import Job

    from spotlight.contract.jobstate import ReportStatus, report_fields, report_of
    from spotlight.contract.protocol import dataset_prefix, report_job_id
    from spotlight.server.jobqueue import on_report_failure, record_worker_lost

    from .helpers import render_queued_report

    sha = write_dataset(store, n=200)
    spec = make_spec(sha)
    job = enqueue(redis_url, spec, settings)
    assert execute(spec, job, settings, store)["status"] == "finished"
    store.delete_prefix(dataset_prefix(sha))

    summary = render_queued_report(settings, spec.job_id, store)
    assert summary["report"] == "failed" and "no longer stored" in summary["error"]
    meta = job.get_meta(refresh=True)
    assert meta[META_STATUS] == "finished"
    assert report_of(meta) == (ReportStatus.FAILED, summary["error"])

    queued = Job.fetch(report_job_id(spec.job_id), connection=job.connection)
    for fail, says in (
        (
            lambda: on_report_failure(queued, job.connection, MemoryError, MemoryError("out of memory"), None),
            "MemoryError",
        ),
        (lambda: record_worker_lost(queued, "its work-horse process died (signal 9)"), "signal 9"),
    ):
        job.meta.update(report_fields(ReportStatus.PENDING))
        job.save_meta()
        fail()
        status, reason = report_of(job.get_meta(refresh=True))
        assert status == ReportStatus.FAILED and reason is not None and says in reason

    # results deleted while the report renders (its dataset deleted): no stray report.html stays behind
    from spotlight.contract.protocol import REPORT_FILE, job_prefix

    other = make_spec(write_dataset(store, n=200, seed=1))
    other_job = enqueue(redis_url, other, settings)
    assert execute(other, other_job, settings, store)["status"] == "finished"
    import worker.report

    original = worker.report.job_report

    def deleted_meanwhile(*args, **kwargs):
        store.delete_prefix(job_prefix(other.job_id))
        return original(*args, **kwargs)

    monkeypatch.setattr(worker.report, "job_report", deleted_meanwhile)
    summary = render_queued_report(settings, other.job_id, store)
    assert summary["report"] == "failed" and "deleted while" in summary["error"]
    assert not store.exists(job_file(other.job_id, REPORT_FILE))

    # a report already rendered stays ready whatever a late hook says
    job.meta.update(report_fields(ReportStatus.READY))
    job.save_meta()
    record_worker_lost(queued, "late")
    assert report_of(job.get_meta(refresh=True))[0] == ReportStatus.READY
