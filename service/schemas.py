"""The API's request and response bodies (pydantic v2); openapi/openapi.json is generated from them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from spotlight.contract.jobstate import JobStatus, ReportStatus
from spotlight.contract.params import SearchParams
from spotlight.contract.protocol import TAGS_MAX, JobError, Name, Progress, TagText
from spotlight.contract.records import RegionRecord, RegionsDocument

MAX_OFFSET = 10**9  # paging offsets past this are a caller's mistake, not a Redis error


# ----- datasets -----
class InlineDataset(BaseModel):
    """A dataset sent as JSON arrays (small data; bounded by the inline body limit)."""

    model_config = ConfigDict(extra="forbid")

    embeddings: list[Annotated[list[float], Field(min_length=1)]] = Field(min_length=1, description="n x d floats.")
    losses: list[float] | None = Field(None, description="n floats; or give logits + labels.")
    logits: list[list[float]] | None = Field(None, description="n x c floats; with labels, losses = cross-entropy.")
    labels: list[int] | list[str] | None = Field(None, description="n class indices, or n class names.")
    predictions: list[int] | list[str] | None = Field(
        None, description="n predicted classes (indices, or names like the labels')."
    )
    sample_weights: list[float] | None = Field(None, description="n non-negative weights.")
    ids: list[str | int] | None = Field(None, description="n ids, echoed in members.")
    texts: list[str | None] | None = Field(
        None, description="n texts (a sentence, a caption): regions are described by their over-represented words."
    )
    metadata: list[dict[str, Any]] | None = Field(None, description="n JSON objects, echoed in members.")


class DatasetReference(BaseModel):
    """A dataset the server reads itself, from roots and schemes its operator allows."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="e.g. file:///data/x.npz or s3://bucket/key.parquet", min_length=1, max_length=4096)
    columns: dict[str, Annotated[str, Field(min_length=1, max_length=1024)]] | None = Field(
        None,
        description='Which column (or .npz key) holds which field, e.g. {"embeddings": "emb", "labels": '
        '"target"}; fields not named are found by their common names (embedding, loss, label, pred, id, …).',
    )


def _dataset_kind(value: Any) -> str:
    """Which form of `dataset` a value is: validation sees dicts, serialisation sees models."""
    if isinstance(value, str):
        return "id"
    if isinstance(value, DatasetReference) or (isinstance(value, dict) and "uri" in value):
        return "uri"
    return "inline"


DatasetSpec = Annotated[
    Annotated[str, Tag("id")] | Annotated[DatasetReference, Tag("uri")] | Annotated[InlineDataset, Tag("inline")],
    Discriminator(_dataset_kind),
]


class DatasetOut(BaseModel):
    id: str = Field(description="ds_…")
    n: int
    dim: int
    fields: list[str] = Field(description="Stored fields, e.g. embeddings, losses, labels, ids, metadata.")
    sha256: str = Field(description="Hash of the canonical content; same content, same hash, stored once.")
    created_at: datetime
    deduplicated: bool = Field(
        False,
        description="True when you already stored this content (no new copy); never says whether another tenant has.",
    )
    name: str | None = Field(None, description="Your label for it (POST /v1/datasets?name=…).")
    tags: list[str] = Field(default_factory=list, description="Your tags (POST /v1/datasets?tags=a&tags=b).")


class DatasetList(BaseModel):
    datasets: list[DatasetOut]
    total: int


# ----- jobs -----
class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: DatasetSpec = Field(description='A dataset id (ds_…), inline arrays, or {"uri": …}.')
    params: SearchParams = Field(default_factory=SearchParams)
    callback_url: str | None = Field(
        None, max_length=2048, pattern=r"^https?://[^\s/?#]+", description="POSTed the job's outcome when it ends."
    )
    name: Name | None = Field(None, description="Your label for the job (not unique).")
    tags: list[TagText] = Field(default_factory=list, max_length=TAGS_MAX, description='Your tags, e.g. ["nightly"].')


class JobOut(BaseModel):
    id: str = Field(description="job_…")
    status: JobStatus
    progress: Progress
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: JobError | None = None
    params: SearchParams
    dataset: str = Field(description="The dataset id the job searches.")
    callback_url: str | None = None
    cancel_requested: bool = Field(False, description="A cancel was asked for; the worker stops at its next step.")
    device: str | None = Field(None, description="Where the search ran (e.g. cpu, cuda:0), once known.")
    name: str | None = None
    tags: list[str] = Field(default_factory=list)
    report: ReportStatus | None = Field(
        None,
        description="Once the job finished: its report page is 'pending' (being rendered after the job; "
        "GET …/report answers 409 report_not_ready meanwhile), 'ready' or 'failed' (GET …/report says why). "
        "Null before, and for jobs whose report was rendered inside the job.",
    )


class JobList(BaseModel):
    jobs: list[JobOut]
    total: int


# ----- results -----
# The region record is the contract's (spotlight/contract/records.py): the worker writes it, this API serves it.
RegionOut = RegionRecord
RegionsOut = RegionsDocument


class Member(BaseModel):
    index: int = Field(description="Row of the dataset (0-based).")
    id: str | int | None = Field(description="The caller's id of the row, or null when none was uploaded.")
    weight: float = Field(ge=0, le=1, description="Kernel value of the row in this region.")
    loss: float
    contribution: float = Field(
        ge=0,
        description="weight x (loss - the job's loss floor): the row's share of the region's weighted loss; "
        "for min_loss jobs weight x (loss ceiling - loss). Members are ordered by it with order=contribution.",
    )
    label: int | str | None = Field(None, description="The class index, or its name when the dataset has class names.")
    prediction: int | str | None = Field(None, description="Like label.")
    text: str | None = Field(None, description="The row's text, when the dataset has texts.")
    metadata: dict[str, Any] | None = None


MemberOrder = Literal["weight", "contribution"]


class MembersOut(BaseModel):
    total: int = Field(
        description="The region's n_members: the size of its member set (the flat kernel's support; "
        "the ball's core; for the gaussian, the heaviest rows that count as many examples as the region)."
    )
    limit: int
    offset: int
    members: list[Member]


# ----- ops -----
class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str] = Field(default_factory=dict)
