"""Submitting a search: the checks a job passes before it is queued, then the queueing.

Each check is one rule, refused with a domain error (400 `validation_error` or `job_too_costly` at the
edge, service/errors.py) before the job costs a worker anything. The tenant's active-job cap and
cost budget are checked again when the job is queued, under the tenant's lock (JobRegistry.submit).
"""

from __future__ import annotations

import contextlib
import logging

from rq.job import Job

from service import idempotency
from service.dataset_source import DatasetSource
from service.job_registry import JobRegistry
from service.schemas import JobCreate
from spotlight.contract import evidence, verdict
from spotlight.contract.errors import InvalidInput
from spotlight.contract.params import GROW_MAX_SHARE, GROW_RING_SHARE, GROW_ROOM_BELOW, SearchParams
from spotlight.contract.protocol import DatasetRecord, ErrorCode, job_prefix, new_job_id
from spotlight.server import capabilities
from spotlight.server import cost as cost_lib
from spotlight.server.netguard import URLRefused, check_callback_url
from spotlight.server.refusal_hints import hinted
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore

log = logging.getLogger("spotlight.api.jobs")


def submit_once(
    jobs: JobRegistry,
    settings: Settings,
    tenant: str,
    body: JobCreate,
    idempotency_key: str | None,
    source: DatasetSource,
) -> tuple[Job, bool]:
    """The job `body` makes, queued now, or (True) the one an earlier request with the same
    `Idempotency-Key` and body made (service/idempotency.py)."""
    job_id = new_job_id()
    return idempotency.once(
        jobs,
        tenant,
        idempotency_key,
        body.model_dump(mode="json"),
        job_id,
        replay=lambda earlier: jobs.fetch(tenant, earlier),
        create=lambda: submit_job(jobs, settings, tenant, job_id, body, source),
    )


def submit_job(
    jobs: JobRegistry,
    settings: Settings,
    tenant: str,
    job_id: str,
    body: JobCreate,
    source: DatasetSource,
) -> Job:
    """Queue `body` as job `job_id`, or refuse it. The body's dataset becomes a stored record
    (`source`, service/dataset_source.py) after the cheap checks, so a job that cannot be queued
    never spends an upload."""
    jobs.check_capacity(tenant)
    if body.callback_url:
        check_callback(body.callback_url, settings)
    check_params_act(body.params)
    record = source.record(tenant, body.dataset)
    check_params_fit(body.params, record)
    check_device(body.params, jobs, settings)
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
    log.info("job queued", extra={"job": job_id, "dataset": record.id, "tenant": tenant})
    return job


def cancel_job(jobs: JobRegistry, store: ArtifactStore, tenant: str, job_id: str) -> tuple[Job, bool]:
    """JobRegistry.cancel, and a job canceled at once (True) loses what it stored: a queued job that
    already ran part of its search (it yielded its worker, worker/task.py) has a checkpoint under its
    prefix, and nothing else; should the store fail, expiry removes it."""
    job, done = jobs.cancel(tenant, job_id)
    if done:
        with contextlib.suppress(Exception):
            store.delete_prefix(job_prefix(job_id))
    return job, done


def check_params_act(params: SearchParams) -> None:
    """A setting the other parameters leave without effect, or a removed combination
    (`SearchParams.refusals`), is refused, not ignored (400 validation_error naming the field), before
    the dataset is stored."""
    refusals = params.refusals()
    if refusals:
        name, why = refusals[0]
        raise InvalidInput(ErrorCode.VALIDATION, f"{why}.", {"field": f"params.{name}"})


def check_params_fit(params: SearchParams, dataset: DatasetRecord) -> None:
    """Parameters that are valid alone but impossible for this dataset, or without effect on it
    (400 validation_error)."""
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
    # must be usable (spotlight/contract/evidence.py)
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
    untested = verdict.too_few_rows(dataset.n, params.spotlight_size)
    if untested and params.level != SearchParams.model_fields["level"].default:
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f"params.level would have no effect: it is the level of the verdict, and this dataset gets none. "
            f"{untested}",
            {"field": "params.level", "n": dataset.n},
        )
    # a count's share of the rows (the verdict's split scales count and rows alike); with sample weights
    # the rows' total weight is the data's, not n, and the engine's own rule decides
    if (
        params.sizing == "grow"
        and params.spotlight_size >= 1
        and "sample_weights" not in dataset.fields
        and params.spotlight_size / dataset.n > GROW_ROOM_BELOW
    ):
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f"params.sizing would have no effect: 'grow' adds rings of {GROW_RING_SHARE:g} x spotlight_size while "
            f"the region stays within {GROW_MAX_SHARE:g} of the rows, and spotlight_size "
            f"{params.spotlight_size:g} of n={dataset.n} rows leaves room for none. Use a smaller spotlight_size, or "
            "sizing 'fixed'.",
            {"field": "params.sizing", "n": dataset.n},
        )
    if params.pca_components is not None and params.pca_components >= dataset.dim:
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f"params.pca_components would have no effect: the embeddings have dim {dataset.dim}, and "
            f"{params.pca_components} components keep every dimension, so the search runs unprojected. Use fewer "
            "components, or leave pca_components out.",
            {"field": "params.pca_components", "dim": dataset.dim},
        )
    if params.pca_components is not None and params.pca_components > min(dataset.n, dataset.dim):
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f"pca_components {params.pca_components} must be at most min(n, dim) = {min(dataset.n, dataset.dim)}",
            {"field": "params.pca_components", "n": dataset.n, "dim": dataset.dim},
        )


def _lacks_fields(dataset: DatasetRecord, param: str, message: str) -> InvalidInput:
    """The refusal of a parameter that needs dataset fields (labels, predictions) the dataset lacks."""
    return InvalidInput(
        ErrorCode.VALIDATION, message, {"field": f"params.{param}", "dataset_fields": list(dataset.fields)}
    )


def check_device(params: SearchParams, jobs: JobRegistry, settings: Settings) -> None:
    """Refused when the job asks for a CUDA device that no live worker has (workers publish theirs)."""
    if not params.device.startswith("cuda"):
        return
    index = int(params.device.split(":", 1)[1]) if ":" in params.device else 0
    most = capabilities.max_cuda_devices(jobs.r, settings)
    if most is None or most <= index:
        have = "no running worker has a GPU" if not most else f"the running workers have at most {most} GPU(s)"
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f'device {params.device!r} cannot run here: {have}; use "auto" (a GPU when one is free) or "cpu"',
            {"field": "params.device", "cuda_devices": most or 0},
        )


def _too_costly(need: float, limit: float, setting: str, message: str, figure: str) -> InvalidInput:
    """The refusal of a job over one of the operator's per-job limits, naming the setting that sets it."""
    return InvalidInput(ErrorCode.JOB_TOO_COSTLY, message, {figure: need, "limit": limit, "setting": setting})


def check_cost(cost: int, settings: Settings) -> None:
    """Refused when the job's estimated cost is over `max_job_cost` (spotlight/server/cost.py). The tenant's
    budget (`max_active_cost_per_tenant`) is checked when the job is queued, under the tenant's
    submission lock (JobRegistry.submit)."""
    if cost > settings.max_job_cost:
        raise _too_costly(
            cost,
            settings.max_job_cost,
            "SPOTLIGHT_MAX_JOB_COST",
            f"This job would cost up to {cost:.3g} element-steps (n·(d + label evidence columns) x restarts x "
            f"steps x (regions + permutations)); this server runs at most {settings.max_job_cost:.3g} per job "
            "(SPOTLIGHT_MAX_JOB_COST). Lower steps, restarts, n_spotlights or n_permutations, use pca_components, "
            "or set evidence_weight to 0.",
            "cost",
        )


def check_memory(need: int, settings: Settings) -> None:
    """Refused when the job's work-horse would need more memory than ``worker_memory_bytes``
    (spotlight/server/cost.py): here, before it is queued, rather than killed in the worker or exhausting its machine."""
    if need > settings.worker_memory_bytes:
        raise _too_costly(
            need,
            settings.worker_memory_bytes,
            "SPOTLIGHT_WORKER_MEMORY_BYTES",
            f"This job would need up to {need / 2**30:.2f} GiB of memory in a worker (for its rows, their "
            f"coordinates and its regions); this server's workers have {settings.worker_memory_bytes / 2**30:.2f} "
            "GiB each (SPOTLIGHT_WORKER_MEMORY_BYTES). Lower n_spotlights, use fewer rows (a sample), or fewer "
            "dimensions.",
            "memory_bytes",
        )


def check_callback(url: str, settings: Settings) -> None:
    """Refused unless the callback URL passes the SSRF guard (http(s), allow-listed host, public address)."""
    try:
        check_callback_url(url, settings)
    except URLRefused as exc:
        message, details = hinted(exc.message, {"field": "callback_url", **exc.details()})
        raise InvalidInput(ErrorCode.VALIDATION, message, details) from None
