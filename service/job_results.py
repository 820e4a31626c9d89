"""A finished job's stored results, as the result routes read them: domain errors only, no HTTP.

A job's results exist once it has finished (`Conflict` job_not_finished before), and go when they
expire (`NotFound` not_found after) or when the job's dataset is deleted (`Gone` dataset_gone: results
are rows of that dataset, and service/dataset_deletion.py deletes their files too): every route that
reads them starts here.
"""

from __future__ import annotations

import numpy as np
from pydantic import ValidationError

from service.job_registry import JobRegistry
from service.schemas import Member, MemberOrder, MembersOut
from spotlight.contract import classes
from spotlight.contract.contribution import contributions
from spotlight.contract.errors import Conflict, DomainError, Gone, NotFound
from spotlight.contract.jobstate import JobStatus, ReportStatus, status_of
from spotlight.contract.protocol import (
    META_SPEC,
    REGIONS_FILE,
    REPORT_FILE,
    WEIGHTS_FILE,
    ErrorCode,
    JobSpec,
    job_file,
    member_weights_file,
    members_by_contribution_file,
    members_file,
)
from spotlight.contract.records import RegionsDocument
from spotlight.server.dataset_files import DatasetFiles, DatasetMissing
from spotlight.server.store import ArtifactStore


def finished_spec(jobs: JobRegistry, tenant: str, job_id: str) -> JobSpec:
    """The spec of the caller's job `job_id`, once it has finished and while its dataset exists."""
    job = jobs.fetch(tenant, job_id)
    status = status_of(job)
    if status != JobStatus.FINISHED:
        ended = {
            JobStatus.CANCELED: "it was canceled, so it has no results; submit it again to get them",
            JobStatus.FAILED: "it failed, so it has no results (GET /v1/jobs/{id} says why)",
        }
        raise Conflict(
            ErrorCode.JOB_NOT_FINISHED,
            f"The job is {status}; " + ended.get(status, "results exist once it has finished."),
            {"job": job_id, "status": status},
        )
    spec = JobSpec.model_validate(job.meta[META_SPEC])
    if not jobs.r.exists(jobs.keys.dataset(spec.dataset_id)):
        raise dataset_gone(job_id, spec)
    return spec


def dataset_gone(job_id: str, spec: JobSpec) -> Gone:
    return Gone(
        ErrorCode.DATASET_GONE,
        "The dataset this job searched has been deleted, and its results (rows, weights, report) with it.",
        {"job": job_id, "dataset": spec.dataset_id},
    )


def expired(job_id: str) -> NotFound:
    return NotFound(ErrorCode.NOT_FOUND, "The job's results are no longer stored (expired).", {"job": job_id})


def read_regions(store: ArtifactStore, job_id: str) -> RegionsDocument:
    """The job's regions.json as the typed record the worker wrote (spotlight/contract/records.py).

    A document written before the record existed (no verdict, no held-out figures) is a clear
    not_found asking for a new search, not a 500.
    """
    try:
        raw = store.read_json(job_file(job_id, REGIONS_FILE))
    except FileNotFoundError:
        raise expired(job_id) from None
    try:
        return RegionsDocument.model_validate(raw)
    except ValidationError:
        raise NotFound(
            ErrorCode.NOT_FOUND,
            "The job's results were written by an older worker, without the regions' verdict; submit the search again.",
            {"job": job_id},
        ) from None


# What a caller waiting for a report is told to wait: a small job's report takes about a second.
REPORT_RETRY_AFTER_S = 2


def report_missing(jobs: JobRegistry, tenant: str, job_id: str) -> DomainError:
    """Why finished job `job_id` has no report.html (yet): still being rendered (`Conflict`
    report_not_ready, with Retry-After), failed (`Conflict` report_failed, with the reason), or
    expired (`NotFound`).

    The follow-on job that renders it (worker/task.py `run_report`) records failures it sees; one
    that vanished without a word (its RQ record gone, RQ saying it failed or stopped) is a failure too
    (`JobRegistry.report_state`), so a report is never pending for good.
    """
    status, reason, rendering = jobs.report_state(jobs.fetch(tenant, job_id))
    if status == ReportStatus.PENDING and rendering != "finished":
        return Conflict(
            ErrorCode.REPORT_NOT_READY,
            "The job has finished and its results can be read now; its report is still being rendered. "
            f"Retry in {REPORT_RETRY_AFTER_S} s.",
            {"job": job_id, "report": ReportStatus.PENDING.value, "rendering": rendering},
            retry_after_s=REPORT_RETRY_AFTER_S,
        )
    if status == ReportStatus.FAILED:
        return Conflict(
            ErrorCode.REPORT_FAILED,
            f"The job's report could not be made ({reason}). Its results (regions, members, weights) are "
            "not affected; submit the job again for a report.",
            {"job": job_id, "report": ReportStatus.FAILED.value, "reason": reason},
        )
    return NotFound(ErrorCode.NOT_FOUND, "This job has no report (it expired).", {"job": job_id})


def members_page(
    store: ArtifactStore,
    jobs: JobRegistry,
    tenant: str,
    job_id: str,
    k: int,
    limit: int,
    offset: int,
    order: MemberOrder,
) -> MembersOut:
    """A page of region `k`'s member set in `order`, each member with its row's loss, contribution,
    label, prediction, id, text and metadata. The worker stored the member set in both orders and
    the loss floor: this only pages them and reads the rows' fields."""
    spec = finished_spec(jobs, tenant, job_id)
    stored = read_regions(store, job_id)
    n_regions = len(stored.regions)
    if k >= n_regions:
        raise NotFound(
            ErrorCode.REGION_NOT_FOUND,
            f"Region {k} does not exist; this job has {n_regions}.",
            {"job": job_id, "k": k, "regions": n_regions},
        )
    files = DatasetFiles(store, spec.dataset_sha256)
    ordered = members_file(k) if order == "weight" else members_by_contribution_file(k)
    try:
        members = store.load_npy(job_file(job_id, ordered))
        idx = np.asarray(members[offset : offset + limit], dtype=np.int64)
        w = _page_weights(store, job_id, ordered, k, idx, offset)
    except FileNotFoundError:
        raise expired(job_id) from None
    reference = stored.loss_reference
    total = int(members.shape[0])
    try:
        losses = np.asarray(files.losses()[idx], dtype=np.float64)
        contrib = contributions(np.clip(w, 0.0, 1.0), losses, spec.params.objective, reference)
        labels = files.labels()
        preds = files.predictions()
        names = files.manifest().get(classes.MANIFEST_KEY)
        ids = files.ids(idx)
        meta = files.metadata(idx)
        texts = files.texts(idx)
    except DatasetMissing:
        raise dataset_gone(job_id, spec) from None
    rows = [
        Member(
            index=int(i),
            id=ids[j] if ids is not None else None,
            weight=float(min(max(w[j], 0.0), 1.0)),
            loss=float(losses[j]),
            contribution=float(contrib[j]),
            label=classes.name_of(int(labels[i]), names) if labels is not None else None,
            prediction=classes.name_of(int(preds[i]), names) if preds is not None else None,
            text=texts[j] if texts is not None else None,
            metadata=meta[j] if meta is not None else None,
        )
        for j, i in enumerate(idx.tolist())
    ]
    return MembersOut(total=total, limit=limit, offset=offset, members=rows)


def _page_weights(store: ArtifactStore, job_id: str, ordered: str, k: int, idx: np.ndarray, offset: int) -> np.ndarray:
    """The page's kernel weights from the member file's own weights; results stored without them
    (written by an older worker) give their column of weights.npy instead."""
    try:
        weights = store.load_npy(job_file(job_id, member_weights_file(ordered)))
        return np.asarray(weights[offset : offset + idx.size], dtype=np.float64)
    except FileNotFoundError:
        if not idx.size:
            return np.empty(0)
        return np.asarray(store.load_npy(job_file(job_id, WEIGHTS_FILE))[idx, k], dtype=np.float64)


def weights_path(store: ArtifactStore, jobs: JobRegistry, tenant: str, job_id: str) -> str:
    """Where the finished job's n x k weights are stored (NotFound once they expired)."""
    finished_spec(jobs, tenant, job_id)
    path = job_file(job_id, WEIGHTS_FILE)
    if not store.exists(path):
        raise NotFound(ErrorCode.NOT_FOUND, "The job's weights are no longer stored (expired).", {"job": job_id})
    return path


def report_html(store: ArtifactStore, jobs: JobRegistry, tenant: str, job_id: str) -> bytes:
    """The finished job's rendered report, or why there is none yet (`report_missing`)."""
    finished_spec(jobs, tenant, job_id)
    path = job_file(job_id, REPORT_FILE)
    if not store.exists(path):
        raise report_missing(jobs, tenant, job_id)
    return store.read_bytes(path)


def finished_regions(store: ArtifactStore, jobs: JobRegistry, tenant: str, job_id: str) -> RegionsDocument:
    """The caller's finished job's regions (`finished_spec`, then `read_regions`)."""
    finished_spec(jobs, tenant, job_id)
    return read_regions(store, job_id)
