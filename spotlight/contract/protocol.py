"""What the API and the worker agree on: queue task, job spec, job meta, store layout (Redis keys: spotlight/server/keys.py).

Data flows one way: caller -> API -> store (+ an RQ job holding ids only) -> worker -> store -> API
-> caller. Neither side imports the other; both import this module (pydantic only).

Store layout (paths relative to the store root)::

    datasets/<sha256>/manifest.json        n, dim, fields, sha256 (content-addressed: stored once)
    datasets/<sha256>/embeddings.npy       float32, n x d
    datasets/<sha256>/losses.npy           float32, n        (computed from logits+labels when absent)
    datasets/<sha256>/labels.npy           int64, n          (optional)
    datasets/<sha256>/predictions.npy      int64, n          (optional)
    datasets/<sha256>/sample_weights.npy   float32, n        (optional; the authors' `counts`)
    datasets/<sha256>/ids.json             list of n str|int (optional)
    datasets/<sha256>/metadata.jsonl       n JSON objects    (optional)
    datasets/<sha256>/metadata.offsets.npy int64, n + 1      byte offsets of each metadata.jsonl row (with metadata)
    datasets/<sha256>/texts.jsonl          n JSON strings    (optional) the rows' texts: regions described in words
    datasets/<sha256>/texts.offsets.npy    int64, n + 1      byte offsets of each texts.jsonl row (with texts)
    jobs/<job_id>/regions.json             {"regions": [...], "objective", "loss_reference"}  written last of the
                                           search's results: its presence means done
    jobs/<job_id>/weights.npy              float32, n x k
    jobs/<job_id>/members_<k>.npy          int64 indices of region k's members, highest weight first
    jobs/<job_id>/members_<k>_by_contribution.npy  the same members, highest weight x (loss - loss_reference)
                                           first (spotlight/contract/contribution.py)
    jobs/<job_id>/report.html              self-contained report, rendered after the job finished by a
                                           follow-on job (its status: the job's meta, jobstate.report_of)
    jobs/<job_id>/pca_basis.npy            float64, d x k: the principal axes (orthonormal columns) a search with
                                           pca_components measured distance along (only such jobs; the score
                                           route and the client's Region.weights need it, spotlight/contract/kernel.py)

Every result file is written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, model_validator

from spotlight.contract.params import REMOVED, SearchParams

# The RQ task, named by import path so the API never imports the worker (or torch).
TASK_PATH = "worker.task.run_job"
# The follow-on RQ task that renders a finished job's report.html (worker/task.py `run_report`).
REPORT_TASK_PATH = "worker.task.run_report"

DATASET_ARRAYS = ("embeddings", "losses", "logits", "labels", "predictions", "sample_weights")
DATASET_FIELDS = DATASET_ARRAYS + ("ids", "texts", "metadata")


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_time(value: Any) -> datetime | None:
    """A timezone-aware datetime from a datetime, an ISO-8601 string or epoch seconds; None if absent.

    RQ stores naive UTC datetimes and object stores report mtimes in several shapes; naive values
    are taken as UTC.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, (int, float)):
        parsed = datetime.fromtimestamp(float(value), UTC)
    else:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def new_job_id() -> str:
    import secrets

    return "job_" + secrets.token_hex(12)


# ----- store layout -----
def dataset_prefix(sha256: str) -> str:
    return f"datasets/{sha256}"


def dataset_file(sha256: str, name: str) -> str:
    return f"{dataset_prefix(sha256)}/{name}"


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}"


def job_file(job_id: str, name: str) -> str:
    return f"{job_prefix(job_id)}/{name}"


def report_job_id(job_id: str) -> str:
    """The RQ id of the job that renders `job_id`'s report: one per search, so the API can ask RQ about it."""
    return f"{job_id}-report"


REGIONS_FILE = "regions.json"
WEIGHTS_FILE = "weights.npy"
REPORT_FILE = "report.html"
BASIS_FILE = "pca_basis.npy"


def members_file(k: int) -> str:
    return f"members_{k}.npy"


def members_by_contribution_file(k: int) -> str:
    return f"members_{k}_by_contribution.npy"


def member_weights_file(ordered: str) -> str:
    """The kernel weights of a member file's rows, in its order: a members page reads a slice of these
    (a few bytes per member) instead of the whole n x k weights.npy, which on an object store is a
    download of every row."""
    return ordered.removesuffix(".npy") + "_weights.npy"


# ----- Redis (every key of ours: spotlight/server/keys.py) -----
def redis_text(value: Any) -> str:
    """A Redis reply as text: connections RQ uses answer bytes (``decode_responses=False``)."""
    return value.decode() if isinstance(value, bytes) else str(value)


# ----- records -----
NAME_MAX = 200
TAG_MAX = 64
TAGS_MAX = 20
# Characters a caller's label may not hold: control characters (NUL, newlines, escapes) and the
# bidirectional overrides and isolates that make text display as something else (Trojan Source).
_HIDDEN = frozenset(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def plain_text(value: str) -> str:
    """A name or tag as shown to people: refused when it holds control or bidi-override characters."""
    bad = next((c for c in value if c in _HIDDEN), None)
    if bad is not None:
        raise ValueError(f"must not contain control or bidirectional-override characters (found U+{ord(bad):04X})")
    return value


Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX), AfterValidator(plain_text)]
TagText = Annotated[str, Field(min_length=1, max_length=TAG_MAX, pattern=r"^[^\s,]+$"), AfterValidator(plain_text)]


class DatasetRecord(BaseModel):
    """A tenant's dataset: a name for stored content. Two tenants uploading the same bytes share
    the blob, never the record."""

    id: str
    tenant: str
    sha256: str
    n: int
    dim: int
    fields: list[str]
    created_at: datetime
    name: str | None = None  # the caller's own label and tags (not unique; for finding things again)
    tags: list[str] = Field(default_factory=list)
    stored_bytes: int = 0  # counted against the tenant's storage quota (0: a record from before quotas)


class Progress(BaseModel):
    spotlight: int = 0
    n_spotlights: int = 0
    step: int = 0
    steps: int = 0
    fraction: float = Field(0.0, ge=0.0, le=1.0)


class JobError(BaseModel):
    code: str
    message: str


class JobSpec(BaseModel):
    """The one argument of the RQ task: ids and parameters only, never arrays."""

    job_id: str
    tenant: str
    dataset_id: str
    dataset_sha256: str
    params: SearchParams
    callback_url: str | None = None
    created_at: datetime
    name: str | None = None
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _stored_before_a_removal(cls, data: Any) -> Any:
        """A spec stored before a parameter was removed (`params.REMOVED`) still reads, without it: the
        job was accepted when it was made, and only a new request is refused for it. A job queued with
        a removed value runs as the engine now searches (for evidence_precision 'tied': 'learned')."""
        if isinstance(data, dict) and isinstance(data.get("params"), dict) and REMOVED.keys() & data["params"]:
            params = {k: v for k, v in data["params"].items() if k not in REMOVED}
            return {**data, "params": params}
        return data


# Keys of the RQ job's meta dict (small state only).
META_TENANT = "tenant"
META_PROGRESS = "progress"  # Progress.model_dump()
META_ERROR = "error"  # JobError.model_dump() when the job failed or was canceled
META_STATUS = "spotlight_status"  # jobstate.JobStatus our code last recorded (spotlight/contract/jobstate.py reads it)
META_STARTED_AT = "started_at"
META_ENDED_AT = "ended_at"
META_DEVICE = "device"
META_SPEC = "spec"  # JobSpec.model_dump(mode="json")
META_YIELDED = "yielded"  # jobqueue.YieldState of a search that gave its worker to another tenant
META_REPORT = "report"  # jobstate.report_fields: whether the finished job's report is pending, ready or failed


# Error codes shared by the API and the worker (the contract's `error.code`).
class ErrorCode:
    VALIDATION = "validation_error"
    MALFORMED_JSON = "malformed_json"
    BAD_FILE = "bad_file"
    NON_FINITE = "non_finite_values"
    SHAPE_MISMATCH = "shape_mismatch"
    TOO_LARGE = "payload_too_large"
    TOO_MANY_ELEMENTS = "too_many_elements"
    QUOTA_EXCEEDED = "storage_quota_exceeded"
    UNSUPPORTED_MEDIA = "unsupported_media_type"
    REFERENCE_REFUSED = "reference_refused"
    REFERENCE_UNREADABLE = "reference_unreadable"
    DATASET_NOT_FOUND = "dataset_not_found"
    JOB_NOT_FOUND = "job_not_found"
    REGION_NOT_FOUND = "region_not_found"
    JOB_NOT_FINISHED = "job_not_finished"
    JOB_NOT_CANCELABLE = "job_not_cancelable"
    BASIS_MISSING = "pca_basis_missing"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    TOO_MANY_JOBS = "too_many_active_jobs"
    TOO_MANY_FETCHES = "too_many_reference_fetches"
    TOO_MANY_REQUESTS = "too_many_requests"
    JOB_TOO_COSTLY = "job_too_costly"
    TOO_MUCH_ACTIVE_COST = "too_much_active_cost"
    UNAUTHORIZED = "unauthorized"
    HOST_NOT_ALLOWED = "host_not_allowed"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL = "internal_error"
    UNAVAILABLE = "service_unavailable"
    # set by the worker on a job
    WORKER_LOST = "worker_lost"
    JOB_TIMEOUT = "job_timeout"
    STORE_ERROR = "store_error"
    CANCELED = "canceled"
    SEARCH_FAILED = "search_failed"
    DATASET_GONE = "dataset_gone"
    ROWS_DO_NOT_MATCH = "rows_do_not_match"
    REPORT_NOT_READY = "report_not_ready"
    REPORT_FAILED = "report_failed"
