"""Comparisons: computed inline in the API from stored results, stored beside the old job, found by id.
The domain side of POST /v1/jobs/{id}/compare and GET /v1/comparisons/{id}: domain errors only
(spotlight/contract/errors.py); service/errors.py maps them to HTTP.

Why inline and not an RQ job: a comparison reads what the worker already stored — two loss
vectors, the ids, each region's member indices (and, against a dataset, its weights) — and does
numpy arithmetic on them (spotlight/contract/compare.py): no search, no torch, bounded work (the bootstrap's
draws are capped), a 50 000-row pair in well under a second. Queuing it would add a worker
round-trip and a job state to a request that answers at once. Scoring a *dataset* against the
regions runs the score route's kernel (spotlight/contract/kernel.py) on its rows and is capped the same way
(``MAX_SCORE_ELEMENTS``).

Storage: the result is ``jobs/<old job>/comparisons/<id>.json``, so it expires with the job it
compares (service/expiry.py deletes the job's folder, as does deleting the job's dataset), and a
Redis key per tenant (``Keys.comparison``) names that job for ``GET /v1/comparisons/{id}``; the key lives as long as
results do (``result_ttl_s``). Another tenant's id has no key: 404, like a job of theirs.

A comparison shows rows of every dataset it read (the old job's, the new job's or the new rows'):
once any of them is deleted the comparison is `Gone` (410 dataset_gone), like the jobs' own results;
one stored under the deleted dataset's job goes with that job's folder.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np

from service import idempotency
from service.dataset_registry import DatasetRegistry
from service.job_registry import JobRegistry
from service.job_results import expired, finished_spec, read_regions
from service.scoring import load_basis
from spotlight.contract import classes, compare, kernel, verdict
from spotlight.contract.errors import Gone, InvalidInput, NotFound, TooLarge
from spotlight.contract.members import members_at_or_above
from spotlight.contract.protocol import WEIGHTS_FILE, DatasetRecord, ErrorCode, job_file, members_file, utcnow
from spotlight.server.dataset_files import DatasetFiles, DatasetMissing
from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore

# rows x dim x regions scored against a dataset in one request
MAX_SCORE_ELEMENTS = 2_000_000_000
_ID = re.compile(r"^cmp_[0-9a-f]{24}$")
# metadata kept per example for the report: text cut to this, images only as data: URIs this long
_TEXT_CHARS = 300
_IMAGE_CHARS = 200_000
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|jpg|gif|webp|bmp|avif)(;[a-z0-9=.+-]+)*,[A-Za-z0-9+/=%._~-]*$")


def new_comparison_id() -> str:
    return "cmp_" + secrets.token_hex(12)


def valid_comparison_id(value: str) -> bool:
    return bool(_ID.match(value))


def comparison_file(comparison_id: str) -> str:
    return f"comparisons/{comparison_id}.json"


def _job_rows(
    store: ArtifactStore, jobs: JobRegistry, tenant: str, job_id: str
) -> tuple[compare.JobRows, DatasetFiles, str]:
    spec = finished_spec(jobs, tenant, job_id)
    regions = [r.model_dump(mode="json") for r in read_regions(store, job_id).regions]
    files = DatasetFiles(store, spec.dataset_sha256)
    try:
        members = [
            np.asarray(store.load_npy(job_file(job_id, members_file(k)), mmap=False)) for k in range(len(regions))
        ]
    except FileNotFoundError:
        raise expired(job_id) from None
    try:
        losses = np.asarray(files.losses(), dtype=np.float64)
        # a job with the verdict searched a seeded half (spotlight/contract/verdict.py): the other half is untouched
        tested = any(r.get("verdict") is not None for r in regions)
        held_out = verdict.split(losses.size, spec.params.seed).held_out if tested else None
        rows = compare.JobRows(job_id, files.ids(), losses, regions, members, held_out)
    except DatasetMissing:
        raise Gone(
            ErrorCode.DATASET_GONE,
            "The dataset this job searched has been deleted; its rows can no longer be compared.",
            {"job": job_id, "dataset": spec.dataset_id},
        ) from None
    return rows, files, spec.dataset_id


def compare_two_jobs(
    store: ArtifactStore, jobs: JobRegistry, tenant: str, old_job: str, new_job: str, level: float
) -> dict[str, Any]:
    """The comparison document of two finished jobs of this tenant (see spotlight/contract/compare.py)."""
    if old_job == new_job:
        raise InvalidInput(
            ErrorCode.VALIDATION, "A job compared with itself shows nothing; name another job.", {"job": new_job}
        )
    old, old_files, old_dataset = _job_rows(store, jobs, tenant, old_job)
    new, new_files, new_dataset = _job_rows(store, jobs, tenant, new_job)
    try:
        result = compare.compare_jobs(old, new, level=level)
    except compare.CompareRefused as exc:
        raise InvalidInput(
            ErrorCode.ROWS_DO_NOT_MATCH, str(exc), {"old_job": old_job, "new_job": new_job, **exc.details}
        ) from None
    _attach_metadata(result, old_files, new_files)
    result["datasets"] = sorted({old_dataset, new_dataset})
    return result


def _attach_metadata(result: dict[str, Any], old_files: DatasetFiles, new_files: DatasetFiles) -> None:
    """Each example's metadata (text cut short, images as data: URIs only), from the old dataset or else the new."""
    for spot in result["weak_spots"]:
        examples = spot["examples"]
        meta: list[dict[str, Any]] | None = None
        for files, key in ((old_files, "old_row"), (new_files, "new_row")):
            try:
                meta = files.metadata([e[key] for e in examples]) if examples else None
            except DatasetMissing:
                meta = None
            if meta is not None:
                break
        rows: list[Any] = list(meta) if meta is not None else [None] * len(examples)
        for e, row in zip(examples, rows, strict=True):
            e["metadata"], e["images"] = _shown(row) if isinstance(row, Mapping) else (None, None)


def _shown(row: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A row's metadata as (short values, images): only data:image URIs of bounded size are images."""
    values: dict[str, Any] = {}
    images: dict[str, str] = {}
    for key, value in list(row.items())[:12]:
        name = str(key)[:60]
        if isinstance(value, str) and len(value) <= _IMAGE_CHARS and _DATA_IMAGE.match(value):
            images[name] = value
        elif isinstance(value, str):
            values[name] = value[:_TEXT_CHARS]
        elif isinstance(value, (int, float, bool)) or value is None:
            values[name] = value
    return values, images


def compare_with_dataset(
    store: ArtifactStore, jobs: JobRegistry, tenant: str, job_id: str, record: DatasetRecord, level: float
) -> dict[str, Any]:
    """Drift of a dataset (same model, new rows) into the job's regions (spotlight/contract/compare.py `drift`)."""
    spec = finished_spec(jobs, tenant, job_id)
    records = read_regions(store, job_id).regions
    regions = [r.model_dump(mode="json") for r in records]
    basis = load_basis(store, job_id, records)
    dim = len(records[0].center) if records else record.dim
    if record.dim != dim:
        raise InvalidInput(
            ErrorCode.SHAPE_MISMATCH,
            f"The dataset's rows have dimension {record.dim}; this job's regions have {dim}: compare data "
            "embedded by the same model.",
            {"dim": record.dim, "expected": dim, "dataset": record.id},
        )
    if record.n * record.dim * max(1, len(regions)) > MAX_SCORE_ELEMENTS:
        raise TooLarge(
            ErrorCode.TOO_LARGE,
            f"{record.n} rows x {record.dim} dimensions x {len(regions)} regions is over {MAX_SCORE_ELEMENTS} "
            "to score in one request; compare a sample of the new rows",
            {"n": record.n, "dim": record.dim, "regions": len(regions), "limit": MAX_SCORE_ELEMENTS},
        )
    files = DatasetFiles(store, record.sha256)
    try:
        stored = store.load_npy(job_file(job_id, WEIGHTS_FILE))
    except FileNotFoundError:
        raise expired(job_id) from None
    thresholds = [r.member_min_weight for r in records]
    n_original = int(stored.shape[0])
    original = [members_at_or_above(np.asarray(stored[:, k]), thresholds[k]).size for k in range(len(regions))]
    try:
        x = files.embeddings()
        labels, predictions = files.labels(), files.predictions()
        names = files.manifest().get(classes.MANIFEST_KEY)
        if names:
            labels, predictions = classes.names_of(labels, names), classes.names_of(predictions, names)
        rows = [
            members_at_or_above(
                kernel.region_weights(x, r, basis, labels=labels, predictions=predictions), thresholds[k]
            )
            for k, r in enumerate(records)
        ]
        losses = np.asarray(files.losses(), dtype=np.float64) if files.has("losses") else None
    except kernel.RegionSpaceError as exc:
        raise InvalidInput(ErrorCode.VALIDATION, str(exc), {"job": job_id, "dataset": record.id}) from None
    except DatasetMissing:
        raise Gone(
            ErrorCode.DATASET_GONE, "The dataset's files are no longer stored.", {"dataset": record.id}
        ) from None
    spots = compare.drift(regions, original, n_original, [r.size for r in rows], record.n, losses, rows, level)
    return {
        "kind": "dataset",
        "old_job": job_id,
        "dataset": record.id,
        "original_dataset": spec.dataset_id,
        "datasets": sorted({spec.dataset_id, record.id}),
        "level": level,
        "rows": {"original": n_original, "new": record.n},
        "counts": {"drift": sum(s["drift"] for s in spots)},
        "regions": spots,
    }


def create_comparison(
    store: ArtifactStore,
    jobs: JobRegistry,
    datasets: DatasetRegistry,
    settings: Settings,
    tenant: str,
    job_id: str,
    body: dict[str, Any],
    idempotency_key: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Compare the tenant's finished job `job_id` with ``body["job"]`` (same rows) or ``body["dataset"]``
    (new rows) at ``body["level"]``, store the result beside `job_id` and return the stored document;
    or (True) the comparison an earlier request with the same `Idempotency-Key` stored. The keys share
    the jobs' claims (service/idempotency.py) in their own namespace, ``compare:<key>``."""
    new_job, dataset, level = body.get("job"), body.get("dataset"), body.get("level", compare.DEFAULT_LEVEL)
    if (new_job is None) == (dataset is None):
        raise InvalidInput(ErrorCode.VALIDATION, "Give either a job or a dataset to compare with.", {"job": job_id})
    comparison_id = new_comparison_id()

    def create() -> dict[str, Any]:
        if new_job is not None:
            result = compare_two_jobs(store, jobs, tenant, job_id, new_job, level)
        else:
            result = compare_with_dataset(store, jobs, tenant, job_id, datasets.get(tenant, str(dataset)), level)
        return store_comparison(store, jobs, settings, tenant, job_id, result, comparison_id)

    return idempotency.once(
        jobs,
        tenant,
        f"compare:{idempotency_key}" if idempotency_key else None,
        {**body, "old_job": job_id},  # the path's job too: the body's "job" is the other side
        comparison_id,
        replay=lambda earlier: load_comparison(store, jobs, tenant, earlier),
        create=create,
    )


def store_comparison(
    store: ArtifactStore,
    jobs: JobRegistry,
    settings: Settings,
    tenant: str,
    job_id: str,
    result: dict[str, Any],
    comparison_id: str | None = None,
) -> dict[str, Any]:
    """Give the result an id, write it beside the job and index it for the tenant; returns the document."""
    comparison_id = comparison_id or new_comparison_id()
    document = {"id": comparison_id, "created_at": utcnow().isoformat(), **result}
    store.write_json(job_file(job_id, comparison_file(comparison_id)), document)
    jobs.r.set(jobs.keys.comparison(tenant, comparison_id), job_id, ex=settings.result_ttl_s)
    return document


def load_comparison(store: ArtifactStore, jobs: JobRegistry, tenant: str, comparison_id: str) -> dict[str, Any]:
    """The tenant's stored comparison: NotFound for an unknown, expired or another tenant's id, Gone
    once a dataset whose rows it shows has been deleted."""
    missing = NotFound(
        ErrorCode.NOT_FOUND, f"No comparison {comparison_id!r} for this caller.", {"comparison": comparison_id}
    )
    if not valid_comparison_id(comparison_id):
        raise missing
    raw = jobs.r.get(jobs.keys.comparison(tenant, comparison_id))
    if raw is None:
        raise missing
    job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        finished_spec(jobs, tenant, job_id)  # Gone once the old job's dataset (and with it this file) is deleted
    except NotFound:
        raise missing from None
    try:
        document = dict(store.read_json(job_file(job_id, comparison_file(comparison_id))))
    except FileNotFoundError:
        raise missing from None
    gone = [d for d in document.get("datasets", []) if not jobs.r.exists(jobs.keys.dataset(str(d)))]
    if gone:
        raise Gone(
            ErrorCode.DATASET_GONE,
            "A dataset this comparison shows rows of has been deleted, and the comparison with it.",
            {"comparison": comparison_id, "dataset": gone[0]},
        )
    return document
