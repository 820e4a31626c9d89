"""/v1/jobs: submit a search (202), watch it, list them, cancel it."""

from __future__ import annotations

import contextlib
import logging
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Header, Query, Request, Response

from service.deps import DatasetsDep, JobIdDep, JobsDep, SettingsDep, StoreDep, TenantDep, dataset_record
from service.errors import error_responses
from service.job_registry import JobRegistry, body_hash
from service.schemas import MAX_OFFSET, JobCreate, JobList, JobOut
from spotlight import capabilities, evidence
from spotlight import cost as cost_lib
from spotlight.errors import InvalidInput, NotFound
from spotlight.jobstate import JobStatus
from spotlight.netguard import URLRefused, check_callback_url
from spotlight.params import SearchParams
from spotlight.protocol import DatasetRecord, ErrorCode, job_prefix, new_job_id
from spotlight.refusal_hints import hinted
from spotlight.settings import Settings

log = logging.getLogger("spotlight.api.jobs")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 503))


def check_params_fit(params: SearchParams, dataset: DatasetRecord) -> None:
    """Parameters that are valid alone but impossible for this dataset (400 validation_error)."""
    if params.spotlight_size >= 1 and params.spotlight_size >= dataset.n:
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f"spotlight_size {params.spotlight_size:g} (a count) must be below n={dataset.n}; "
            "use a fraction in (0, 1) or a smaller count",
            {"field": "params.spotlight_size", "n": dataset.n},
        )
    for coeff, needs in (("label_entropy_coeff", "labels"), ("prediction_entropy_coeff", "predictions")):
        if getattr(params, coeff) > 0 and needs not in dataset.fields:
            raise _lacks_fields(
                dataset,
                coeff,
                f"{coeff} > 0 needs {needs}, and dataset {dataset.id} has none; upload {needs} with it or set "
                f"{coeff} to 0",
            )
    # label evidence is on by default and used when the dataset has what it needs; asked for by name, it
    # must be usable (spotlight/evidence.py)
    asked = {"evidence", "evidence_weight"} & params.model_fields_set | (
        {"evidence_check"} if params.evidence_check else set()
    )
    if asked and params.evidence_weight > 0:
        need_labels, need_predictions = evidence.needs(params.evidence)
        required = [f for f, needed in (("labels", need_labels), ("predictions", need_predictions)) if needed]
        missing = [f for f in required if f not in dataset.fields]
        if missing:
            raise _lacks_fields(
                dataset,
                sorted(asked)[0],
                f"evidence {params.evidence!r} needs {' and '.join(required)}, and dataset {dataset.id} has no "
                f"{' or '.join(missing)}; upload them with it, choose another evidence, or set evidence_weight to 0",
            )
    if params.pca_components is not None and params.pca_components > min(dataset.n, dataset.dim):
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f"pca_components {params.pca_components} must be at most min(n, dim) = {min(dataset.n, dataset.dim)}",
            {"field": "params.pca_components", "n": dataset.n, "dim": dataset.dim},
        )


def _lacks_fields(dataset: DatasetRecord, param: str, message: str) -> InvalidInput:
    """The 400 for a parameter that needs dataset fields (labels, predictions) the dataset lacks."""
    return InvalidInput(
        ErrorCode.VALIDATION, message, {"field": f"params.{param}", "dataset_fields": list(dataset.fields)}
    )


def check_device(params: SearchParams, r: redis.Redis, settings: Settings) -> None:
    """400 when the job asks for a CUDA device that no live worker has (workers publish theirs)."""
    if not params.device.startswith("cuda"):
        return
    index = int(params.device.split(":", 1)[1]) if ":" in params.device else 0
    most = capabilities.max_cuda_devices(r, settings)
    if most is None or most <= index:
        have = "no running worker has a GPU" if not most else f"the running workers have at most {most} GPU(s)"
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f'device {params.device!r} cannot run here: {have}; use "auto" (a GPU when one is free) or "cpu"',
            {"field": "params.device", "cuda_devices": most or 0},
        )


def check_cost(cost: int, settings: Settings) -> None:
    """400 for a job whose estimated cost is over `max_job_cost` (spotlight/cost.py). The tenant's
    budget (`max_active_cost_per_tenant`) is checked when the job is queued, under the tenant's
    submission lock (JobRegistry.submit)."""
    if cost > settings.max_job_cost:
        raise InvalidInput(
            ErrorCode.JOB_TOO_COSTLY,
            f"This job would cost up to {cost:.3g} element-steps (n·(d + label evidence columns) x restarts x "
            f"steps x (regions + permutations)); this server runs at most {settings.max_job_cost:.3g} per job "
            "(SPOTLIGHT_MAX_JOB_COST). Lower steps, restarts, n_spotlights or n_permutations, use pca_components, "
            "or set evidence_weight to 0.",
            {"cost": cost, "limit": settings.max_job_cost, "setting": "SPOTLIGHT_MAX_JOB_COST"},
        )


def check_memory(need: int, settings: Settings) -> None:
    """400 for a job whose work-horse would need more memory than ``worker_memory_bytes`` (spotlight/cost.py):
    refused here, before it is queued, rather than killed in the worker or exhausting its machine."""
    if need > settings.worker_memory_bytes:
        raise InvalidInput(
            ErrorCode.JOB_TOO_COSTLY,
            f"This job would need up to {need / 2**30:.2f} GiB of memory in a worker (for its rows, their "
            f"coordinates and its regions); this server's workers have {settings.worker_memory_bytes / 2**30:.2f} "
            "GiB each (SPOTLIGHT_WORKER_MEMORY_BYTES). Lower n_spotlights, use fewer rows (a sample), or fewer "
            "dimensions.",
            {"memory_bytes": need, "limit": settings.worker_memory_bytes, "setting": "SPOTLIGHT_WORKER_MEMORY_BYTES"},
        )


def check_callback(url: str, settings: Settings) -> None:
    """400 unless the callback URL passes the SSRF guard (http(s), allow-listed host, public address)."""
    try:
        check_callback_url(url, settings)
    except URLRefused as exc:
        message, details = hinted(exc.message, {"field": "callback_url", **exc.details()})
        raise InvalidInput(ErrorCode.VALIDATION, message, details) from None


def _existing(jobs: JobRegistry, tenant: str, job_id: str, response: Response) -> JobOut:
    view = jobs.view(jobs.fetch(tenant, job_id))  # raises when the job expired: then nothing is replayed
    response.headers["Idempotent-Replayed"] = "true"
    return view


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    summary="Submit a search",
    responses=error_responses(400, 404, 409, 413, 429),
)
def create_job(
    body: JobCreate,
    request: Request,
    response: Response,
    tenant: TenantDep,
    settings: SettingsDep,
    store: StoreDep,
    datasets: DatasetsDep,
    jobs: JobsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Same key + same body: the same job, not a second one.",
        ),
    ] = None,
) -> JobOut:
    """Queue a spotlight search on a stored dataset (`"ds_…"`) or on one given inline / by `uri`."""
    digest = body_hash(body.model_dump(mode="json")) if idempotency_key else ""
    job_id = new_job_id()
    while idempotency_key:  # until this request holds the key, or replays the job it names
        earlier = jobs.claim_idempotency(tenant, idempotency_key, digest, job_id)
        if earlier is None:
            break
        try:
            return _existing(jobs, tenant, earlier, response)
        except NotFound:  # the job expired: the key is free again
            jobs.release_idempotency(tenant, idempotency_key, earlier, pending=False)
    try:
        jobs.check_capacity(tenant)  # before spending an upload on a job that cannot be queued
        if body.callback_url:
            check_callback(body.callback_url, settings)
        record = dataset_record(request, tenant, body.dataset, datasets, store, settings)
        check_params_fit(body.params, record)
        check_device(body.params, jobs.r, settings)
        cost = cost_lib.job_cost(body.params, record.n, record.dim, record.fields)
        check_cost(cost, settings)
        check_memory(cost_lib.job_memory_bytes(body.params, record.n, record.dim, record.fields), settings)
        job = jobs.submit(
            tenant,
            job_id,
            record,
            body.params,
            body.callback_url,
            body.name,
            body.tags,
            large=cost > settings.large_job_cost,
            cost=cost,
        )
    except BaseException:
        if idempotency_key:
            jobs.release_idempotency(tenant, idempotency_key, job_id)
        raise
    if idempotency_key:
        jobs.complete_idempotency(tenant, idempotency_key, digest, job_id)
    log.info("job queued", extra={"job": job_id, "dataset": record.id, "tenant": tenant})
    return jobs.view(job)


@router.get("", response_model=JobList, summary="List your jobs, newest first", responses=error_responses(429))
def list_jobs(
    request: Request,
    tenant: TenantDep,
    jobs: JobsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
) -> JobList:
    """A page reads only its own jobs (by status: an index per status, service/job_registry.py); a
    few listings per tenant run at once (429 `too_many_requests` past that, with Retry-After)."""
    with request.app.state.list_slots.take(tenant):
        items, total = jobs.list(tenant, limit, offset, status)
    return JobList(jobs=items, total=total)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404), summary="A job's status and progress")
def get_job(job_id: JobIdDep, tenant: TenantDep, jobs: JobsDep) -> JobOut:
    return jobs.view(jobs.fetch(tenant, job_id))


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    responses={**error_responses(404, 409), 202: {"model": JobOut, "description": "Running: the worker will stop"}},
    summary="Cancel a queued or running job",
)
def cancel_job(job_id: JobIdDep, response: Response, tenant: TenantDep, jobs: JobsDep, store: StoreDep) -> Any:
    """A queued job is canceled at once (200, status `canceled`); a running one is asked to stop
    (202, `cancel_requested: true`) and turns `canceled` at the worker's next step."""
    job, done = jobs.cancel(tenant, job_id)
    if not done:
        response.status_code = 202
    else:
        # A queued job that already ran part of its search (it yielded its worker, worker/task.py)
        # has a checkpoint under its prefix, and nothing else; should the store fail, expiry removes it.
        with contextlib.suppress(Exception):
            store.delete_prefix(job_prefix(job_id))
    return jobs.view(job)
