"""Scoring other rows against a finished job's regions: the domain side of POST /v1/jobs/{id}/score.

Each row's weight in each region is the engine's kernel from the region's centre and precision
(spotlight/contract/kernel.py — the same function the client's `Region.weights(X)` runs). Membership follows
the member rule of spotlight/contract/members.py carried over to other data: a row is a member when its
weight is above 0 and at least the region's `member_min_weight`, which the worker stored in
the typed region record (spotlight/contract/records.py) (flat kernel: 0, the support; gaussian: the smallest weight among the region's members
on the data it was found on).

A region found with label evidence (`evidence_weight` > 0; spotlight/contract/evidence.py) weighs a row by
its label (and prediction) too: a stored dataset's own labels/predictions are used, bare embeddings
bring them alongside, and rows without what a region needs are refused with a message that says so.

A region found with `pca_components` (``precision_space: "pca"``) measures distance along the job's
principal axes, which the worker stores beside the regions (`protocol.BASIS_FILE`): they are loaded
once per request. Results written before the worker stored the basis are a `Conflict`
(`pca_basis_missing`) that says so.

Domain errors only (spotlight/contract/errors.py); service/errors.py maps them to HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.dataset_source import DatasetSource
from service.ingest.inline_json import parse_dataset_body
from service.ingest.sources import Sources
from service.job_registry import JobRegistry
from service.job_results import finished_regions
from service.schemas import DatasetSpec
from spotlight.contract import classes, kernel
from spotlight.contract.errors import Conflict, Gone, InvalidInput, NotFound, TooLarge
from spotlight.contract.members import members_at_or_above
from spotlight.contract.protocol import BASIS_FILE, DatasetRecord, ErrorCode, job_file
from spotlight.contract.records import RegionRecord
from spotlight.server.dataset_files import DatasetFiles, DatasetMissing
from spotlight.server.store import ArtifactStore

# A score body up to this size is parsed whole by its model (service/routers/score.py); a larger one can
# only be bare embeddings (with labels/predictions), read in slices into arrays
# (service/ingest/inline_json.py), so neither its memory (one Python object per number) nor the
# interpreter lock is held by one big parse.
WHOLE_PARSE_BYTES = 256 * 1024
_BARE_FIELDS = ("embeddings", "labels", "predictions")

# weights travel as JSON: past this many (rows x regions), use the job's own weights or score in parts
MAX_SCORE_VALUES = 2_000_000


@dataclass
class Scored:
    """Each row's weight in each region (n x k), and per region its threshold and member rows."""

    n: int
    member_min_weight: list[float | None]
    weights: np.ndarray
    members: list[list[int]]
    ids: list[str | int] | None


def needs_basis(regions: list[RegionRecord]) -> bool:
    return any(region.precision_space == "pca" for region in regions)


def basis_missing(job_id: str) -> Conflict:
    return Conflict(
        ErrorCode.BASIS_MISSING,
        "This job's regions were found with pca_components, and its results were stored without the PCA "
        "basis their distance is measured along (a worker older than the one that stores it), so other "
        "rows cannot be scored against them. Its own rows' weights are in GET /v1/jobs/{id}/weights; "
        "submit the search again to score new rows.",
        {"job": job_id, "file": BASIS_FILE},
    )


def basis_path(store: ArtifactStore, job_id: str, regions: list[RegionRecord]) -> str:
    """Where the job's PCA basis is stored: NotFound when its regions need none, Conflict when it is missing."""
    if not needs_basis(regions):
        raise NotFound(
            ErrorCode.NOT_FOUND,
            "This job's regions were found without pca_components: their distance is measured in the "
            "embedding space itself, so there is no basis; centre and precision are all a region needs.",
            {"job": job_id},
        )
    path = job_file(job_id, BASIS_FILE)
    if not store.exists(path):
        raise basis_missing(job_id)
    return path


def load_basis(store: ArtifactStore, job_id: str, regions: list[RegionRecord]) -> np.ndarray | None:
    """The job's PCA basis when a region needs it (read once for all regions), else None."""
    if not needs_basis(regions):
        return None
    try:
        return np.asarray(store.load_npy(job_file(job_id, BASIS_FILE), mmap=False), dtype=np.float64)
    except FileNotFoundError:
        raise basis_missing(job_id) from None


def inline_embeddings(rows: list[list[float]]) -> np.ndarray:
    """Bare embeddings from JSON: equal-length rows of finite numbers (InvalidInput otherwise)."""
    try:
        x = np.asarray(rows, dtype=np.float64)
    except ValueError:
        raise InvalidInput(
            ErrorCode.SHAPE_MISMATCH, "embeddings: rows differ in length", {"field": "embeddings"}
        ) from None
    return checked_embeddings(x)


def large_body_rows(raw: bytes, work_dir: str) -> Rows:
    """The bare rows of a score body over WHOLE_PARSE_BYTES, read in slices under `work_dir`; any other
    field (a dataset, ids, metadata, a uri) is refused with the way to score that much data."""
    try:
        src = parse_dataset_body(raw, work_dir)
    except InvalidInput as exc:
        field = next(iter(exc.details.get("errors") or [{}])).get("field", "")
        if field in ("", *_BARE_FIELDS) or "." in field:
            raise
        raise _bare_rows_only(field) from None
    if not isinstance(src, Sources):
        raise _bare_rows_only("uri")
    extra = sorted({*src.arrays, *(["ids"] if src.ids else []), *(["metadata"] if src.metadata else [])})
    extra = [f for f in extra if f not in _BARE_FIELDS]
    if extra:
        raise _bare_rows_only(extra[0])
    x = checked_embeddings(np.load(src.arrays["embeddings"], allow_pickle=False))
    labels, predictions = (
        np.load(src.arrays[f], allow_pickle=False).tolist() if f in src.arrays else None
        for f in ("labels", "predictions")
    )
    return Rows(x, labels, predictions)


def _bare_rows_only(field: str) -> InvalidInput:
    return InvalidInput(
        ErrorCode.VALIDATION,
        f"{field}: a score body over {WHOLE_PARSE_BYTES // 1024} KiB holds bare rows only "
        f"({', '.join(_BARE_FIELDS)}); to score a larger dataset, upload it (POST /v1/datasets) and score its id",
        {"field": field, "limit_bytes": WHOLE_PARSE_BYTES},
    )


def checked_embeddings(x: np.ndarray) -> np.ndarray:
    """n x d (d >= 1) finite embeddings, however they were read (InvalidInput otherwise)."""
    if x.ndim != 2 or x.shape[1] == 0:
        raise InvalidInput(ErrorCode.VALIDATION, "embeddings must be n x d with d >= 1", {"field": "embeddings"})
    if not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise InvalidInput(
            ErrorCode.NON_FINITE,
            f"embeddings has NaN or infinite values (first at row {row})",
            {"field": "embeddings", "row": row},
        )
    return x


def check_codes(regions: list[RegionRecord], labels: Any, predictions: Any) -> None:
    """Integer codes the caller gave must be classes the job's search saw (0 to its count - 1): a
    code past them, or a negative one, would silently weigh as no class at all."""
    for region in regions:
        found = region.evidence
        if found is None:
            continue
        for name, given, width in (
            ("labels", labels, found.n_labels),
            ("predictions", predictions, found.n_predictions),
        ):
            codes = np.asarray(given if given is not None else [])
            if width and codes.size and np.issubdtype(codes.dtype, np.integer):
                bad = codes[(codes < 0) | (codes >= width)]
                if bad.size:
                    raise InvalidInput(
                        ErrorCode.VALIDATION,
                        f"{name}: code {int(bad[0])} is not one of the classes the job's search saw (codes 0 to "
                        f"{width - 1}); rows of a class it never saw can be weighed only by class name, when the "
                        "job's labels were names",
                        {"field": name, "code": int(bad[0]), "classes": width},
                    )


def score_rows(
    store: ArtifactStore,
    job_id: str,
    regions: list[RegionRecord],
    basis: np.ndarray | None,
    *,
    x: np.ndarray | None = None,
    record: DatasetRecord | None = None,
    labels: Any = None,
    predictions: Any = None,
) -> Scored:
    """Weights and membership of rows in `regions`: bare embeddings `x` (with their `labels` and
    `predictions` when given) or a stored dataset `record` (its own ids, labels and predictions)."""
    if record is not None:
        n, dim_in = record.n, record.dim
    elif x is not None:
        n, dim_in = x.shape
    else:
        raise ValueError("give x or record")
    dim = len(regions[0].center) if regions else dim_in
    if dim_in != dim:
        raise InvalidInput(
            ErrorCode.SHAPE_MISMATCH,
            f"The rows have dimension {dim_in}; this job's regions have {dim}.",
            {"dim": dim_in, "expected": dim, **({"dataset": record.id} if record else {})},
        )
    if n * max(1, len(regions)) > MAX_SCORE_VALUES:
        raise TooLarge(
            ErrorCode.TOO_LARGE,
            f"{n} rows x {len(regions)} regions is over {MAX_SCORE_VALUES} weights in one answer; "
            "score the rows in parts, or compute them locally with the client's Region.weights(X)",
            {"n": n, "regions": len(regions), "limit": MAX_SCORE_VALUES},
        )
    ids = None
    try:
        if record is not None:
            files = DatasetFiles(store, record.sha256)
            x = files.embeddings()
            ids = files.ids()
            labels, predictions = files.labels(), files.predictions()
            names = files.manifest().get(classes.MANIFEST_KEY)
            if names:  # this dataset's own codes: compare by name with the job's (spotlight/contract/evidence.py)
                labels, predictions = classes.names_of(labels, names), classes.names_of(predictions, names)
        else:
            check_codes(regions, labels, predictions)
        columns = [
            kernel.region_weights(x, region, basis, labels=labels, predictions=predictions) for region in regions
        ]
    except kernel.RegionSpaceError as exc:
        raise InvalidInput(ErrorCode.VALIDATION, str(exc), {"job": job_id}) from None
    except ValueError as exc:  # labels/predictions of the wrong length
        raise InvalidInput(ErrorCode.SHAPE_MISMATCH, str(exc), {"job": job_id}) from None
    except DatasetMissing:
        raise Gone(
            ErrorCode.DATASET_GONE,
            "The dataset's files are no longer stored.",
            {"dataset": record.id if record else None},
        ) from None
    w = np.stack(columns, axis=1) if columns else np.zeros((n, 0))
    thresholds = [region.member_min_weight for region in regions]
    members = [members_at_or_above(w[:, k], thresholds[k]).tolist() for k in range(w.shape[1])]
    return Scored(n=n, member_min_weight=thresholds, weights=w, members=members, ids=ids)


@dataclass
class Rows:
    """What a score request scores: bare rows (`x`, with their labels/predictions) or a `dataset` spec."""

    x: np.ndarray | None = None
    labels: Any = None
    predictions: Any = None
    dataset: DatasetSpec | None = None


def score_job(
    store: ArtifactStore,
    jobs: JobRegistry,
    tenant: str,
    job_id: str,
    rows: Rows,
    source: DatasetSource,
) -> tuple[str | None, Scored]:
    """The caller's finished job's regions applied to `rows`; with a dataset, also the id it is
    stored as (`source`, service/dataset_source.py: an upload is stored first). The job's basis is
    loaded before anything is stored, so a job that cannot be scored says so first."""
    regions = finished_regions(store, jobs, tenant, job_id).regions
    basis = load_basis(store, job_id, regions)
    if rows.x is not None:
        return None, score_rows(
            store, job_id, regions, basis, x=rows.x, labels=rows.labels, predictions=rows.predictions
        )
    if rows.dataset is None:
        raise ValueError("give x or dataset")
    record = source.record(tenant, rows.dataset)
    return record.id, score_rows(store, job_id, regions, basis, record=record)


def job_basis_path(store: ArtifactStore, jobs: JobRegistry, tenant: str, job_id: str) -> str:
    """Where the caller's finished job's PCA basis is stored (`basis_path`)."""
    return basis_path(store, job_id, finished_regions(store, jobs, tenant, job_id).regions)
