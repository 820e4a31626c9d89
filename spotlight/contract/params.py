"""Search parameters: the `params` object of the HTTP contract, validated once at the edge.

The API validates a job's params with this model (so the OpenAPI spec documents them), the
worker re-reads them from the job, and the engine takes them as its one parameter object.
It lives here, outside `service/` and `worker/`, because both import it: it needs pydantic only.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from spotlight.contract.kernel import KERNEL_CHOICES

if TYPE_CHECKING:
    Kernel = str
else:
    Kernel = Literal[KERNEL_CHOICES]  # "auto" and every kernel of spotlight/contract/kernel.py, as OpenAPI's enum
Shape = Literal["spherical", "diagonal"]
Objective = Literal["max_loss", "min_loss"]
Deflation = Literal["tails", "paper"]
Sizing = Literal["grow", "fixed"]
EvidenceKind = Literal["labels_predictions", "labels", "mismatch"]

_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")

# Parameters the API once took and now refuses by name, with what to do instead (docs/engine.md,
# "What earns its place"): a client that still sends one learns why, rather than "extra field".
REMOVED: dict[str, str] = {
    "evidence_precision": "evidence_precision was removed: every spherical gaussian/flat region now learns the "
    "precision of its evidence columns (what 'learned', the default, did); 'tied' lost where labels cut across "
    "a weak spot (cross-class mean AP 0.595 against 0.798) and led by no more than noise where a default search "
    "uses the labels (docs/engine.md). Leave the field out; "
    "to search without the labels, set evidence_weight to 0.",
}
# A sizing="grow" region grows by rings of GROW_RING_SHARE x spotlight_size while it stays within
# GROW_MAX_SHARE of the rows (worker/engine/grow.py): above GROW_ROOM_BELOW of the rows not one ring fits.
GROW_RING_SHARE = 0.5
GROW_MAX_SHARE = 0.5
GROW_ROOM_BELOW = GROW_MAX_SHARE / (1 + GROW_RING_SHARE)


class SearchParams(BaseModel):
    """Parameters of one spotlight search. Every field is optional; defaults are the product's.

    `steps` is a cap: the engine stops earlier once the objective has converged.
    """

    # Numbers are strict: `true` is not 1 and "500" is not 500 (a caller's typo must not run a job).
    model_config = ConfigDict(extra="forbid")

    spotlight_size: float = Field(
        0.02,
        strict=True,
        gt=0,
        description="Minimum total kernel weight of a region: a fraction of n in (0, 1), or a count >= 1.",
    )
    n_spotlights: int = Field(5, strict=True, ge=1, le=50, description="How many regions to find, one after another.")
    kernel: Kernel = Field(
        "auto",
        description="'auto' = 'ball' when a row's spotlight-sized neighbourhood among the standardised embeddings "
        "has high intrinsic dimension (clustered or not: from its 0.5 % and 2 % distance quantiles, threshold 12) "
        "and the spotlight size counts at least 0.25 rows per dimension, else 'gaussian'; each region records the kernel "
        "it ran (docs/engine.md). 'flat' = max(0, 1 - tau*|x-mu|^2) (published paper), 'gaussian' = "
        "exp(-tau*|x-mu|^2/2) (ranks the rest of a slice larger than the region, where flat weighs it 0), or "
        "'ball' = 1 on the spotlight_size rows nearest the centre, exp(-(tau*|x-mu|^2 - radius_u)/2) beyond "
        "(selective in high dimension, where distances concentrate and a gaussian spreads over every row; "
        "spherical only, so 'auto' with shape 'diagonal' runs the gaussian).",
    )
    shape: Shape = Field(
        "spherical",
        description="'spherical' (scalar precision) or 'diagonal' (one per dimension: finds a slab thin along some "
        "axes; 'gaussian' and 'flat' only, the ball is spherical).",
    )
    objective: Objective = Field("max_loss", description="'max_loss' finds weak spots; 'min_loss' strong ones.")
    steps: int = Field(
        500,
        strict=True,
        ge=1,
        le=100_000,
        description="Cap on optimiser steps per region; the search stops earlier once converged "
        "(gaussian and flat: ~200 steps typically; the spherical ball: 20 steps, then an exact edge fit).",
    )
    learning_rate: float = Field(0.05, strict=True, gt=0, le=10, description="Adam step size, in standardised units.")
    barrier_scale: float = Field(
        1.0,
        strict=True,
        ge=0,
        le=1e6,
        description="Weight of the spotlight-size barrier of the 'gaussian' and 'flat' kernels (the authors' 1); "
        "the ball has none, so another value needs kernel 'gaussian' or 'flat'.",
    )
    restarts: int = Field(
        4,
        strict=True,
        ge=1,
        le=256,
        description="Starts optimised at once (one matrix product); the best feasible one is kept.",
    )
    deflation: Deflation = Field(
        "tails",
        description="How a found region is taken out before the next one is sought, so that each region shows "
        "a different weak spot: 'tails' multiplies every loss score by (1 - k/max k)^8, removing the region "
        "with its tails; 'paper' by (1 - k/max k), the paper's re-weighting, which leaves a gaussian region's "
        "tails in place so later regions often find the same weak spot again. Acts between regions: another "
        "value than 'tails' needs n_spotlights > 1.",
    )
    sizing: Sizing = Field(
        "fixed",
        description="'grow': once found, a region grows past spotlight_size (the floor) ring by ring along its own "
        "ordering while each ring of 0.5 x spotlight_size more rows still has a mean loss significantly above the "
        "dataset's (one-sided z > 3), up to half the rows, then is refitted to that size (docs/engine.md); "
        "'fixed': every region has spotlight_size. 'grow' needs room for a ring: spotlight_size at most a third "
        "of the rows.",
    )
    seed: int = Field(
        0,
        strict=True,
        ge=0,
        le=2**32 - 1,
        description="Seed of every random choice; same seed, same device, same result.",
    )
    pca_components: int | None = Field(
        None, strict=True, ge=1, le=4096, description="Project embeddings on this many principal components first."
    )
    label_entropy_coeff: float = Field(
        0.0, strict=True, ge=0, le=1e3, description="Penalty on the entropy of labels in a region."
    )
    prediction_entropy_coeff: float = Field(
        0.0, strict=True, ge=0, le=1e3, description="Penalty on the entropy of predictions in a region."
    )
    evidence_weight: float = Field(
        1.0,
        strict=True,
        ge=0,
        le=100,
        description="Labels and predictions as error-type evidence: > 0 appends the rows' `evidence` columns "
        "(one-hot label, by default) to the embeddings, so that a region can be a class or an "
        "error type ('label 8, predicted something else, near here'); a label difference then counts "
        "evidence_weight^2 times the typical squared distance between two rows. Used only when the job has the "
        "labels (and predictions) it needs. Such regions carry an `evidence` term: scoring new rows needs their "
        "labels/predictions too (docs/engine.md). Each spherical gaussian/flat region learns how much the evidence "
        "columns count (a precision of their own, starting at the embedding's), so a region can ignore the labels "
        "where a weak spot cuts across classes; the ball weighs them like the embedding, the diagonal shape "
        "like any other column.",
    )
    evidence: EvidenceKind = Field(
        "labels",
        description="Which evidence columns evidence_weight appends: 'labels' (one-hot label), "
        "'labels_predictions' (one-hot label and one-hot prediction) or 'mismatch' (one column: "
        "label != prediction); another value than 'labels' needs evidence_weight > 0.",
    )
    evidence_check: bool | None = Field(
        None,
        strict=True,
        description="Decide from the job's own rows whether label evidence helps: on each half of the rows one region "
        "searched with and one without evidence, each weighed over every row of the other half; the setting whose "
        "regions hold up more there (the z-score of their kernel-weighted mean loss) is used for the search "
        "(about 0.4 of a search's cost more; docs/engine.md). "
        "null (the default): on whenever the search uses label evidence; false: keep the evidence unchecked; "
        "true: asked for by name, so it needs evidence_weight > 0 and the labels (and predictions) the "
        "evidence uses.",
    )
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.")
    n_permutations: int = Field(
        0,
        strict=True,
        ge=0,
        le=1000,
        description="Optional second test, beside the default held-out verdict: this many reruns of the search on "
        "shuffled losses give each region a `permutation_p_value` (floor 1/(n+1); each rerun costs a search "
        "of one region); 0 skips it. It runs, on every row, also where the dataset is too small for the verdict.",
    )

    level: float = Field(
        0.05,
        strict=True,
        gt=0,
        lt=1,
        description="The verdict's level: the chance that a job on data with no weak spot at all (losses unrelated "
        "to place) still shows a significant region. Each region is tested on rows the search never saw (a "
        "seeded random half is held out) and the job's regions are corrected together (Holm), so at 0.05 about "
        "1 job in 20 on pure noise raises a false alarm. A dataset too small for the verdict gets none, and "
        "another level than 0.05 is refused for it.",
    )

    @model_validator(mode="before")
    @classmethod
    def _removed_parameters(cls, data: object) -> object:
        if isinstance(data, dict):
            for name in REMOVED:
                if name in data:
                    raise PydanticCustomError("removed_parameter", REMOVED[name])
        return data

    @field_validator("spotlight_size")
    @classmethod
    def _size_is_fraction_or_count(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("spotlight_size must be finite")
        if v >= 1 and v != int(v):
            raise ValueError("spotlight_size must be a fraction in (0, 1) or a whole count >= 1")
        return v

    @field_validator("device")
    @classmethod
    def _device_is_known(cls, v: str) -> str:
        if not _DEVICE.fullmatch(v):
            raise ValueError("device must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return v

    @model_validator(mode="after")
    def _evidence_check_needs_evidence(self) -> SearchParams:
        if self.evidence_check and self.evidence_weight == 0:
            raise ValueError("evidence_check needs evidence_weight > 0 (with 0 there is no evidence to check)")
        return self

    def refusals(self) -> list[tuple[str, str]]:
        """What a job with these params is refused for at submit (400, service/job_submission.py), as
        (field, why): a setting, changed from its default, that the others leave without effect, or a
        combination that was removed. Refused rather than run as if the setting were not there; the
        rules that need the dataset (its rows, its fields) are the service's. A default value is never
        refused: it asks for nothing, so a job's full params (`GET /v1/jobs/{id}`) can be sent again."""
        changed = {name for name, field in type(self).model_fields.items() if getattr(self, name) != field.default}
        out: list[tuple[str, str]] = []
        if self.kernel == "ball" and self.shape == "diagonal":
            out.append(
                (
                    "shape",
                    "params.shape 'diagonal' with kernel 'ball' was removed: the ball is spherical only (a diagonal "
                    "ball had a lower AP than the diagonal gaussian or flat kernel on every problem measured, "
                    "docs/engine.md). "
                    "For a precision per dimension use kernel 'gaussian' or 'flat' (or 'auto', which runs the "
                    "gaussian with the diagonal shape)",
                )
            )
        if "barrier_scale" in changed and self.kernel not in ("gaussian", "flat"):
            out.append(
                (
                    "barrier_scale",
                    "params.barrier_scale would have no effect: it weighs the spotlight-size barrier of the "
                    "'gaussian' and 'flat' kernels, and "
                    + (
                        "the 'ball' kernel"
                        if self.kernel == "ball"
                        else f"kernel {self.kernel!r} may run the 'ball', which"
                    )
                    + " counts spotlight_size rows by construction and has no barrier. Set kernel "
                    "to 'gaussian' or 'flat', or leave barrier_scale out",
                )
            )
        if "evidence" in changed and self.evidence_weight == 0:
            out.append(
                (
                    "evidence",
                    f"params.evidence would have no effect: {self.evidence!r} chooses the columns evidence_weight "
                    "appends, and evidence_weight 0 appends none. Set evidence_weight > 0, or leave evidence out",
                )
            )
        if "deflation" in changed and self.n_spotlights == 1:
            out.append(
                (
                    "deflation",
                    f"params.deflation would have no effect: {self.deflation!r} takes a found region out before the "
                    "next one is sought, and n_spotlights 1 seeks no next one. Ask for more regions, or leave "
                    "deflation out",
                )
            )
        if self.sizing == "grow" and GROW_ROOM_BELOW < self.spotlight_size < 1:
            out.append(
                (
                    "sizing",
                    f"params.sizing would have no effect: 'grow' adds rings of {GROW_RING_SHARE:g} x spotlight_size "
                    f"while the region stays within {GROW_MAX_SHARE:g} of the rows, and at spotlight_size "
                    f"{self.spotlight_size:g} (above {GROW_ROOM_BELOW:.3g}) not one ring fits. Use a smaller "
                    "spotlight_size, or sizing 'fixed'",
                )
            )
        return out

    def checks_evidence(self, uses_evidence: bool) -> bool:
        """Whether the search runs the evidence check: asked for, or by default, whenever label evidence is
        used. Why on by default: on real sentence embeddings evidence helped one encoder and hurt the other
        by as much, and the check picked the better setting on both (docs/engine.md)."""
        return uses_evidence and self.evidence_weight > 0 and self.evidence_check is not False

    def size_count(self, n: float) -> float:
        """The spotlight size S as a number of examples for a dataset of n rows."""
        return self.spotlight_size * n if self.spotlight_size < 1 else float(self.spotlight_size)
