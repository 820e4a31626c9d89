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

from spotlight.contract.kernel import KERNEL_CHOICES

if TYPE_CHECKING:
    Kernel = str
else:
    Kernel = Literal[KERNEL_CHOICES]  # "auto" and every kernel of spotlight/contract/kernel.py, as OpenAPI's enum
Shape = Literal["spherical", "diagonal"]
Objective = Literal["max_loss", "min_loss"]
Deflation = Literal["tails", "paper"]
Sizing = Literal["grow", "fixed"]
EvidencePrecision = Literal["learned", "tied"]
EvidenceKind = Literal["labels_predictions", "labels", "mismatch"]

_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


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
        "(selective in high dimension, where distances concentrate and a gaussian spreads over every row).",
    )
    shape: Shape = Field("spherical", description="'spherical' (scalar precision) or 'diagonal' (one per dimension).")
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
    barrier_scale: float = Field(1.0, strict=True, ge=0, le=1e6, description="Weight of the spotlight-size barrier.")
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
        "tails in place so later regions often find the same weak spot again.",
    )
    sizing: Sizing = Field(
        "fixed",
        description="'grow': once found, a region grows past spotlight_size (the floor) ring by ring along its own "
        "ordering while each ring of 0.5 x spotlight_size more rows still has a mean loss significantly above the "
        "dataset's (one-sided z > 3), up to half the rows, then is refitted to that size (docs/engine.md); "
        "'fixed': every region has spotlight_size.",
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
        "labels/predictions too (docs/engine.md).",
    )
    evidence: EvidenceKind = Field(
        "labels",
        description="Which evidence columns evidence_weight appends: 'labels' (one-hot label), "
        "'labels_predictions' (one-hot label and one-hot prediction) or 'mismatch' (one column: "
        "label != prediction).",
    )
    evidence_check: bool | None = Field(
        None,
        strict=True,
        description="Decide from the job's own rows whether label evidence helps: on each half of the rows one region "
        "searched with and one without evidence, each applied to the other half; the setting whose regions have "
        "the higher held-out lift is used for the search (about 0.4 of a search's cost more; docs/engine.md). "
        "null (the default): on whenever the search uses label evidence; false: keep the evidence unchecked; "
        "true: asked for by name, so it needs evidence_weight > 0 and the labels (and predictions) the "
        "evidence uses.",
    )
    evidence_precision: EvidencePrecision = Field(
        "learned",
        description="How much a region's evidence columns count: 'learned' (each gaussian/flat spherical "
        "region learns its own precision for them, starting from the embedding's, so a region can ignore the "
        "labels where they do not help) or 'tied' (one precision for embedding and evidence columns alike; "
        "the 'ball' kernel always ties them).",
    )
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.")
    n_permutations: int = Field(
        0,
        strict=True,
        ge=0,
        le=1000,
        description="Optional second test, beside the default held-out verdict: this many reruns of the search on "
        "shuffled losses give each region a `permutation_p_value` (floor 1/(n+1); each rerun costs a search "
        "of one region); 0 skips it.",
    )

    level: float = Field(
        0.05,
        strict=True,
        gt=0,
        lt=1,
        description="The verdict's level: the chance that a job on data with no weak spot at all (losses unrelated "
        "to place) still shows a significant region. Each region is tested on rows the search never saw (a "
        "seeded random half is held out) and the job's regions are corrected together (Holm), so at 0.05 about "
        "1 job in 20 on pure noise raises a false alarm.",
    )

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

    def checks_evidence(self, uses_evidence: bool) -> bool:
        """Whether the search runs the evidence check: asked for, or by default, whenever label evidence is
        used. Why on by default: on real sentence embeddings evidence helped one encoder and hurt the other
        by as much, and the check picked the better setting on both (docs/engine.md)."""
        return uses_evidence and self.evidence_weight > 0 and self.evidence_check is not False

    def size_count(self, n: float) -> float:
        """The spotlight size S as a number of examples for a dataset of n rows."""
        return self.spotlight_size * n if self.spotlight_size < 1 else float(self.spotlight_size)
