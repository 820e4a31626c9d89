"""A finished job's stored results, as the result routes read them: domain errors only, no HTTP.

A job's results exist once it has finished (`Conflict` job_not_finished before), and go when they
expire (`NotFound` not_found after) or when the job's dataset is deleted (`Gone` dataset_gone: results
are rows of that dataset, and service/routers/datasets.py deletes their files too): every route that
reads them starts here.
"""

from __future__ import annotations

from pydantic import ValidationError

from service.job_registry import JobRegistry
from spotlight.errors import Conflict, DomainError, Gone, NotFound
from spotlight.jobstate import JobStatus, ReportStatus, status_of
from spotlight.protocol import META_SPEC, REGIONS_FILE, ErrorCode, JobSpec, job_file
from spotlight.records import RegionsDocument
from spotlight.store import ArtifactStore


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
    """The job's regions.json as the typed record the worker wrote (spotlight/records.py).

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
