"""The region record: one typed owner of what a region is, from the worker's regions.json to the client.

The worker builds a :class:`RegionRecord` per region and writes a :class:`RegionsDocument`
(``regions.json``) through it; the API serves that document as its response model (so OpenAPI
lists and describes every field); the client parses it back into the same classes; scoring
(spotlight/contract/kernel.py, the score route) reads typed fields. A field a reader needs is added here,
once, with its description.

Which numbers are honest about selection (docs/engine.md, "The verdict"): the search ran on a
seeded random part of the rows; ``mean_loss``, ``lift``, ``error_rate``, ``p_value`` and
``significant`` are measured on the *held-out* rows the search never saw (the test over all of
them, the figures on the region's held-out members),
so the search's own choice does not inflate them. Figures measured on the rows the search chose
from carry ``weighted_`` (the kernel-weighted objective) or ``in_sample_`` in their names.

pydantic only (the client imports it).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

KernelName = Literal["flat", "gaussian", "ball"]
VerdictMethod = Literal["holdout"]


class RegionOverlap(BaseModel):
    region: int = Field(description="An earlier region's index.")
    shared: int = Field(ge=0, description="Rows that are members of both regions.")
    share: float = Field(
        ge=0,
        le=1,
        description="shared / this region's n_members: the share of this region "
        "that the earlier region already shows (0 when this region has no members).",
    )


class ValueShare(BaseModel):
    """One value of a label, prediction or metadata field, among the members vs in the whole dataset."""

    value: Any = Field(description="The value (a class name when the dataset has them).")
    count_inside: float = Field(description="Members with this value (times their sample weights).")
    count_overall: float = Field(description="Rows of the dataset with this value (times their sample weights).")
    share_inside: float = Field(description="count_inside / the members' count.")
    share_overall: float = Field(description="count_overall / the dataset's count.")
    lift: float = Field(description="share_inside / share_overall.")
    precision: float | None = Field(
        None, description='As a rule ("label = value"): of the rows holding the value, the share that are members.'
    )
    recall: float | None = Field(None, description="Of the members, the share holding the value (= share_inside).")


class TextTerm(BaseModel):
    """A word or phrase over-represented among a region's members' texts, checked as the rule "text mentions term"."""

    term: str = Field(description="The word or phrase.")
    score: float = Field(description="Class-based TF-IDF of the term among the members against the other rows.")
    precision: float = Field(description="Of all rows whose text mentions the term, the share that are members.")
    recall: float = Field(description="Of the members, the share whose text mentions the term.")
    lift: float | None = Field(
        description="Mean loss of the lift rows (text_terms_lift_on) mentioning the term over their mean "
        "loss; null when fewer than 5 of them mention it."
    )
    lift_rows: int = Field(description="How many lift rows mention the term.")


class DominantValue(BaseModel):
    value: Any = Field(description="The value most members hold.")
    share_inside: float = Field(description="Its share among the members.")


class Composition(BaseModel):
    n_values: int = Field(description="Distinct values of the field in the dataset.")
    over_represented: list[ValueShare] = Field(
        description="Values the members hold more often than the dataset, most excess members first."
    )
    dominant: DominantValue | None = Field(None, description="The value most members hold.")


class NumericField(BaseModel):
    inside: float = Field(description="Mean among the members.")
    overall: float = Field(description="Mean over the dataset.")
    std_overall: float = Field(description="Standard deviation over the dataset.")


class ErrorRate(BaseModel):
    inside: float = Field(description="Share of members whose prediction differs from their label.")
    overall: float = Field(description="The same share over the dataset.")
    lift: float = Field(description="inside / overall.")


class RegionDescription(BaseModel):
    """Who is in the region: its member set (every row, searched or held out) against the dataset.

    Its loss figures are in-sample (the member set includes the rows the search chose it from), so
    they are named so; the honest ones are the region's own `mean_loss`, `lift`, `error_rate`.
    """

    basis: Literal["members"] = Field("members", description="Computed on the member set.")
    n_members: int = Field(description="Rows in the member set.")
    in_sample_mean_loss: float | None = Field(
        description="The members' mean loss, searched rows included (inflated by the search's choice; "
        "null without members)."
    )
    dataset_mean_loss: float = Field(description="The dataset's mean loss.")
    in_sample_lift: float | None = Field(description="in_sample_mean_loss / dataset_mean_loss.")
    in_sample_mean_loss_ci: list[float] | None = Field(
        description="Bootstrap interval of in_sample_mean_loss at ci_level: it resamples the members, "
        "not the search, so it says nothing about whether the choice was luck."
    )
    ci_level: float = Field(description="Level of the intervals (e.g. 0.95).")
    n_bootstrap: int = Field(description="Bootstrap resamples of the intervals.")
    error_rate: ErrorRate | None = Field(None, description="In-sample error rate, with labels and predictions.")
    labels: Composition | None = Field(None, description="Labels the members over-represent.")
    predictions: Composition | None = Field(None, description="Predictions the members over-represent.")
    metadata: dict[str, Composition] = Field(default_factory=dict, description="Categorical metadata fields.")
    numeric: dict[str, NumericField] = Field(default_factory=dict, description="Numeric metadata fields.")
    metadata_rows: int | None = Field(None, description="Rows whose metadata was read (a sample on big datasets).")
    text_terms: list[TextTerm] | None = Field(
        None,
        description="With a dataset that has texts: the words and phrases over-represented among the members' "
        "texts, each checked as a rule. Null (absent) without texts; an empty list when no term is "
        "shared by enough members.",
    )
    text_terms_lift_on: Literal["heldout", "non_members"] | None = Field(
        None,
        description="Rows a term's lift is measured on: 'heldout' (rows the search did not use: the verdict's "
        "held-out half) or 'non_members' (a sample of the rows outside the region, which the search saw; "
        "jobs without a held-out split).",
    )
    text_examples: list[str] | None = Field(None, description="A few member texts, heaviest members first.")

    @classmethod
    def from_describe(cls, raw: dict[str, Any]) -> RegionDescription:
        """From worker/describe.py's dict, whose loss keys name the member set's figures plainly."""
        data = dict(raw)
        for key in ("mean_loss", "lift", "mean_loss_ci"):
            data[f"in_sample_{key}"] = data.pop(key, None)
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:  # a key describe.py adds must be given a field here, not dropped on the way to the user
            raise ValueError(f"describe.py wrote keys the region record has no field for: {unknown}")
        return cls.model_validate(data)


class EvidenceTerm(BaseModel):
    """The label/prediction part of a region's distance (spotlight/contract/evidence.py): scoring rows needs their labels."""

    kind: Literal["labels_predictions", "labels", "mismatch"] = Field(description="Which evidence columns.")
    weight: float = Field(description="The job's evidence_weight.")
    n_labels: int = Field(description="One-hot label columns (class codes 0..n_labels-1).")
    n_predictions: int = Field(description="One-hot prediction columns.")
    center: list[float] = Field(description="Centre per evidence column, in one-hot units.")
    precision: float | list[float] = Field(description="Precision per evidence column (or one for all).")
    class_names: list[str] | None = Field(
        None, description="The job's class names, so other rows' labels are matched by name."
    )


class Verdict(BaseModel):
    """How the region's `significant` and `p_value` were reached (docs/engine.md, "The verdict")."""

    method: VerdictMethod = Field(
        description="'holdout': the search ran on a seeded random half of the rows; on the other half, the region's "
        "kernel-weighted mean loss was tested against the same mean with the held-out losses permuted."
    )
    level: float = Field(
        description="The job's level: the chance that a job on pure noise shows any significant region."
    )
    n_tested: int = Field(description="Regions of the job tested together (the Holm correction's count).")
    p_value_unadjusted: float | None = Field(description="This region's own one-sided p-value, before Holm.")
    n_holdout_rows: int = Field(description="Rows held out from the search (the test's population).")
    holdout_mean_loss: float | None = Field(description="Mean loss of all held-out rows (the lift's denominator).")
    n_draws: int = Field(
        description="Permutations of the held-out losses the p-value counts against (fewer when it stopped early, "
        "at 10 as extreme as the region: a clearly noisy region needs no more)."
    )


class RegionKernel(BaseModel):
    """What scoring a row needs (spotlight/contract/kernel.py): the kernel's parameters. They are not a place:
    where a region is, is its members' (`RegionRecord.member_mean`, `medoid`)."""

    center: list[float] = Field(
        description="The kernel's centre (a scoring parameter; for the ball it can lie far from the members: "
        "see member_mean)."
    )
    precision: float | list[float] = Field(
        description="The kernel's precision p: one float (spherical) or one per dimension (diagonal); "
        "u = sum p (x - center)^2."
    )
    kernel: KernelName = Field(description="The kernel that ran (params 'auto' resolves to one of these).")
    shape: Literal["spherical", "diagonal"] = Field(description="Spherical or diagonal precision.")
    objective: Literal["max_loss", "min_loss"] = Field(description="Whether the search sought high or low loss.")
    radius_u: float | None = Field(None, description="The ball's core edge as a value of u (kernel 'ball' only).")
    precision_space: Literal["embedding", "pca"] = Field(
        "embedding",
        description="'pca': u is measured on (x - center) @ basis, the job's PCA basis (GET /v1/jobs/{id}/basis).",
    )
    pca_components: int | None = Field(None, description="Columns of that basis (pca jobs only).")
    evidence: EvidenceTerm | None = Field(
        None, description="The label/prediction part of u (jobs searched with evidence_weight > 0)."
    )


class RegionRecord(RegionKernel):
    """One region found by a job: where it is, what it is made of, and whether it is more than noise."""

    index: int = Field(description="The region's number, 0 first (regions are found one after another).")
    # ----- the verdict and the honest figures (held-out members) -----
    significant: bool = Field(
        False,
        description="True when the region's kernel-weighted mean loss over the held-out rows beats the same "
        "mean with their losses permuted, at the job's level after the Holm correction over its regions; false "
        "means 'not distinguishable from noise'.",
    )
    p_value: float | None = Field(
        None,
        description="Holm-adjusted one-sided p-value of the held-out test (significant = p_value <= level); "
        "null when no held-out row has weight in the region.",
    )
    mean_loss: float | None = Field(
        None, description="Mean loss of the region's held-out members (rows the search never saw): honest."
    )
    mean_loss_ci: list[float] | None = Field(
        None, description="Bootstrap interval of mean_loss over the held-out members, at the description's ci_level."
    )
    lift: float | None = Field(
        None,
        description="mean_loss / the held-out rows' mean loss: the region's honest lift, the number the CLI table, "
        "regions_df(), the report and --fail-if show.",
    )
    lift_ci: list[float] | None = Field(None, description="mean_loss_ci / the held-out rows' mean loss.")
    error_rate: float | None = Field(
        None, description="Share of the held-out members whose prediction differs from their label."
    )
    n_holdout_members: int = Field(
        0,
        description="Held-out rows that are members (what mean_loss, lift and error_rate are measured on; 0 leaves "
        "them null, while the test of significant still weighs every held-out row).",
    )
    verdict: Verdict | None = Field(None, description="How `significant` and `p_value` were reached.")
    # ----- the search's own figures (on the rows it searched) -----
    weighted_loss: float = Field(
        description="The search's objective on the rows it searched: sum(k * loss) / sum(k) (in-sample)."
    )
    weighted_lift: float = Field(description="weighted_loss / dataset_mean_loss (in-sample).")
    dataset_mean_loss: float = Field(description="Mean loss of the rows searched.")
    size_requested: float = Field(description="The spotlight size the search asked for, in searched rows.")
    total_weight: float = Field(description="Sum of kernel weights over the rows searched.")
    feasible: bool = Field(description="False when no iterate met the size constraint (the best one is shown).")
    steps_run: int = Field(description="Optimiser steps the region took.")
    converged: bool = Field(description="True when the objective stopped improving before the step cap.")
    permutation_p_value: float | None = Field(
        None,
        description="With params.n_permutations > 0: how often the search on shuffled losses found a region "
        "scoring at least this one's weighted_loss (the rerun-the-search test; floor 1/(n_permutations+1)).",
    )
    n_permutations: int | None = Field(None, description="Shuffles behind permutation_p_value.")
    # ----- membership -----
    n_members: int = Field(
        description="Size of the member set over every row, the rows `…/members` pages: the flat kernel's "
        "support (weight > 0); the ball's core (weight 1); for the gaussian, the heaviest rows that together "
        "count as many examples as the region (ceil(effective_size) rows without sample weights)."
    )
    effective_size: float = Field(description="Sum of kernel weight x sample weight over every row.")
    overlap: list[RegionOverlap] = Field(description="One entry per earlier region: members in common.")
    member_min_weight: float | None = Field(
        None,
        description="What a row needs to be a member (here and in POST /v1/jobs/{id}/score): weight > 0 "
        "and >= this. 0 for the flat kernel (its support), just under 1 for the ball (its core); for the "
        "gaussian, the smallest weight among its members on the rows searched. Null when it has no members.",
    )
    # ----- where it is -----
    member_mean: list[float] | None = Field(
        None, description="The members' mean embedding: where the region is (null without members)."
    )
    medoid: int | None = Field(
        None, description="The member row nearest member_mean: a row of the dataset a person can open."
    )
    description: RegionDescription | None = Field(
        None, description="Null when describing the region failed; description_error then says why."
    )
    description_error: str | None = Field(
        None, description="Present only when describing this region failed: what went wrong (the region stands)."
    )

    @model_serializer(mode="wrap")
    def _error_only_when_failed(self, handler: SerializerFunctionWrapHandler):
        """`description_error` is written only on a region whose description failed. No return
        annotation on purpose: with one, pydantic would take it as the record's serialized JSON schema
        (OpenAPI would lose every field); without, the schema stays the model's."""
        data = handler(self)
        if isinstance(data, dict) and data.get("description_error") is None:
            data.pop("description_error", None)
        return data


class RegionsDocument(BaseModel):
    """``regions.json`` and ``GET /v1/jobs/{id}/regions``: a job's regions and the job-level verdict."""

    regions: list[RegionRecord] = Field(description="The regions, in the order they were found.")
    weak_spot_found: bool = Field(
        description="True when at least one region is significant; false means no weak spot was found: "
        "every region listed is not distinguishable from noise."
    )
    summary: str = Field(description="The verdict in one sentence, for a person.")
    tested: bool = Field(
        True,
        description="False when the dataset had too few rows for a verdict (spotlight/contract/verdict.py's rule): every "
        "row was searched, no region was tested, and `summary` says why; its regions are for exploration only.",
    )
    level: float = Field(description="The job's level (params.level).")
    objective: Literal["max_loss", "min_loss"] = Field(description="The job's objective.")
    loss_reference: float = Field(
        description="The loss that contributes nothing (the loss floor for max_loss, the ceiling for min_loss)."
    )


def job_summary(
    regions: list[RegionRecord], level: float, objective: str = "max_loss", untested: str | None = None
) -> str:
    """The job's verdict in one sentence (the CLI table, the report and the JSON say the same).
    `untested`: why the job's regions could not be tested (too few rows), if so."""
    what = "weak spot" if objective == "max_loss" else "strong spot"
    if untested:
        return f"No verdict: {untested} The {len(regions)} regions below are untested, not distinguishable from noise."
    found = [r.index for r in regions if r.significant]
    if not found:
        return (
            f"No {what} found: none of the {len(regions)} regions is distinguishable from noise "
            f"at level {level:g} (their held-out rows lose like random rows)."
        )
    listed = ", ".join(f"#{i}" for i in found)
    return (
        f"{len(found)} of {len(regions)} regions are significant at level {level:g} ({listed}); the rest may be noise."
    )


def document(
    regions: list[RegionRecord], level: float, objective: str, loss_reference: float, untested: str | None = None
) -> RegionsDocument:
    """The document the worker writes, its job-level fields derived from the regions."""
    return RegionsDocument(
        regions=regions,
        weak_spot_found=any(r.significant for r in regions),
        summary=job_summary(regions, level, objective, untested),
        tested=untested is None,
        level=level,
        objective=objective,
        loss_reference=loss_reference,
    )
