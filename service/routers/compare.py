"""POST /v1/jobs/{id}/compare and GET /v1/comparisons/{id}: weak spots across runs (spotlight/contract/compare.py).

The path's job is the *old* side (the production model, or the job whose regions are watched); the
body names the new side: another finished job of the same tenant evaluated on the same rows (matched
by id), or a stored dataset of new rows embedded by the same model. Computed inline from stored
results (service/comparing.py says why and holds the logic; this router parses, calls, returns), stored with its own id, expiring with the old job.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service import comparing
from service.compare_report import render_comparison
from service.deps import DatasetsDep, JobIdDep, JobsDep, SettingsDep, StoreDep, TenantDep, idempotency_header
from service.errors import error_responses
from service.security_headers import REPORT_CSP
from spotlight.contract import compare

router = APIRouter(tags=["comparisons"], responses=error_responses(401, 404, 503))


class CompareRequest(BaseModel):
    """The other side: a job (two models on the same rows) or a dataset (new rows for the same model)."""

    model_config = ConfigDict(extra="forbid")

    job: str | None = Field(
        None,
        pattern=r"^job_[A-Za-z0-9_-]{1,64}$",
        description="A finished job of yours evaluated on the same rows (matched by your ids): the new model.",
    )
    dataset: str | None = Field(
        None,
        pattern=r"^ds_[0-9A-Za-z_-]{1,64}$",
        description="Or a stored dataset (ds_…) of new rows embedded by this job's model: drift into its regions.",
    )
    level: float = Field(
        compare.DEFAULT_LEVEL,
        gt=0,
        lt=0.5,
        description="Intervals are at 1 - level; a region is elevated, worse or drifting when its interval "
        "clears the line at this level, and a job's own verdict is p_value < level.",
    )

    @model_validator(mode="after")
    def _one_side(self) -> CompareRequest:
        if (self.job is None) == (self.dataset is None):
            raise ValueError("give either job or dataset")
        return self


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SideFigures(_Strict):
    """One model's figures on the rows a weak spot is tested on."""

    mean_loss: float | None
    lift: float | None = Field(description="mean_loss over that model's mean loss on the matched rows.")
    lift_ci: list[float] | None = None
    rank: float | None = Field(None, description="Mean loss percentile of the tested rows (0.5: a typical row).")
    rank_ci: list[float] | None = None
    selected: bool = Field(description="True when these losses chose the members (biased up).")


class SpotExample(_Strict):
    id: Any = Field(description="The row's id (as uploaded).")
    old_row: int
    new_row: int
    loss_before: float
    loss_after: float
    metadata: dict[str, Any] | None = None
    images: dict[str, str] | None = None


class WeakSpot(_Strict):
    """One weak spot of either job, classed (spotlight/contract/compare.py)."""

    status: Literal["worse", "still_there", "fixed", "new", "unclear", "unconfirmed"]
    significant: bool | None
    old_region: int | None
    new_region: int | None
    overlap: float | None
    measured_on: Literal["old_region_members", "new_region_members"]
    tested_on: Literal["held_out_members", "all_members"] = Field(
        "all_members", description="The rows every figure comes from: members the job's search never used, or all."
    )
    members: int
    tested_members: int | None = None
    members_unmatched: int
    own_verdict: bool | None
    before: SideFigures
    after: SideFigures
    excess_kept: float | None = Field(None, description="Other model's excess rank over the origin model's.")
    excess_kept_test_ci: list[float] | None = None
    lift_ratio_ci: list[float] | None
    examples: list[SpotExample]


class DriftRegion(_Strict):
    """One region of the old job against new rows."""

    region: int
    members_new: int
    members_original: int
    share_new: float
    share_new_ci: list[float]
    share_original: float
    ratio: float | None
    ratio_ci: list[float] | None
    drift: bool
    mean_loss_new: float | None
    lift_new: float | None


class ComparisonRows(_Strict):
    """Row counts: matched and present in one job only (jobs), or both sizes (dataset)."""

    old: int | None = None
    new: int | None = None
    matched: int | None = None
    only_old: int | None = None
    only_new: int | None = None
    examples_only_old: list[Any] | None = None
    examples_only_new: list[Any] | None = None
    original: int | None = None


class MeanLoss(_Strict):
    old: float
    new: float


class ComparisonOut(_Strict):
    """A stored comparison. ``kind: "jobs"``: ``weak_spots`` (spotlight/contract/compare.py's statuses);
    ``kind: "dataset"``: ``regions`` with the share of new rows against the original share."""

    id: str = Field(description="cmp_…")
    created_at: str
    kind: Literal["jobs", "dataset"]
    old_job: str
    new_job: str | None = None
    dataset: str | None = None
    original_dataset: str | None = Field(None, description="The old job's dataset (kind dataset).")
    level: float
    rows: ComparisonRows
    mean_loss: MeanLoss | None = Field(None, description="Each model's mean loss on the matched rows (kind jobs).")
    counts: dict[str, int] = Field(description="Weak spots per status (jobs), or regions drifting (dataset).")
    datasets: list[str] = Field(
        default_factory=list, description="The datasets whose rows it shows: deleting one deletes the comparison (410)."
    )
    weak_spots: list[WeakSpot] | None = None
    regions: list[DriftRegion] | None = None


@router.post(
    "/v1/jobs/{job_id}/compare",
    status_code=201,
    response_model=ComparisonOut,
    responses=error_responses(400, 409, 410, 413),
    summary="Compare this job with a newer one on the same rows, or with new data (a stored comparison)",
)
def create_comparison(
    job_id: JobIdDep,
    body: CompareRequest,
    response: Response,
    tenant: TenantDep,
    settings: SettingsDep,
    store: StoreDep,
    datasets: DatasetsDep,
    jobs: JobsDep,
    idempotency_key: Annotated[
        str | None, idempotency_header("Same key + same job and body: the same stored comparison, not a second one.")
    ] = None,
) -> Any:
    """Which of this job's weak spots the other job fixed, kept or worsened, which are new; or how
    often new rows fall into its regions. Reads stored results only: no search runs.

    `Idempotency-Key` as for submitting a job (service/job_registry.py's claim), in its own namespace
    (``compare:<key>``): a retry replays the stored comparison (`Idempotent-Replayed: true`), the same
    key with another job or body is a 409 `idempotency_conflict`."""
    document, replayed = comparing.create_comparison(
        store, jobs, datasets, settings, tenant, job_id, body.model_dump(mode="json"), idempotency_key
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return document


@router.get(
    "/v1/comparisons/{comparison_id}",
    response_model=ComparisonOut,
    summary="A stored comparison",
    responses=error_responses(410),
)
def get_comparison(comparison_id: str, tenant: TenantDep, store: StoreDep, jobs: JobsDep) -> Any:
    return comparing.load_comparison(store, jobs, tenant, comparison_id)


@router.get(
    "/v1/comparisons/{comparison_id}/report",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {}}, "description": "A self-contained HTML page"},
        **error_responses(410),
    },
    summary="A comparison as a page: both sides of each weak spot",
)
def get_comparison_report(comparison_id: str, tenant: TenantDep, store: StoreDep, jobs: JobsDep) -> HTMLResponse:
    document = comparing.load_comparison(store, jobs, tenant, comparison_id)
    return HTMLResponse(render_comparison(document), headers={"Content-Security-Policy": REPORT_CSP})
