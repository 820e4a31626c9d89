"""`evidence_check`: decide per job whether label evidence helps, from the job's own rows.

Why: on real sentence embeddings label evidence helped one encoder and hurt the other by about as
much (bench.real: mean best AP 0.424 vs 0.271, and 0.277 vs 0.425), so no fixed setting is right for
every job. What a job can measure is whether a region holds up on rows it was not found on.

How: the rows (of positive weight) are split in two halves with the search's seed. On each half one
region is searched with the job's evidence settings and one without evidence; each region is applied
to the other half (`spotlight.contract.kernel.region_weights`, the score route's formula), and how well
it holds up there is the z-score of its kernel-weighted mean loss over every row of that half against
that mean's spread were the losses exchangeable over the half (`held_out_z`: the verdict's kernel test,
`spotlight.contract.verdict.kernel_test`, in its analytic form, with no draws). The setting whose two
regions have the higher summed z is kept for the real search. Ties keep the evidence. Why both
directions (cross-fitting): one direction alone picked the worse setting on MiniLM (bench.real,
2026-12-07). Why the z over every row and not the lift of the region's held-out members: a 1-2 %
region admits 4-20 held-out members, so their lift is a noisy call, and it favours a tight region
over a broad weak spot. Over 20 real-text sets x 8 rounding draws the z chose better (mean best AP
0.399 against 0.388), tied on ten validation sets (0.395 against 0.396), and its call moves less
with rounding (docs/engine.md, "The evidence check on held-out seeds").

Cost: four one-region searches on half the rows each, with `PROBE_RESTARTS` restarts;
`spotlight.server.cost.job_cost` counts them as two regions. At large n that is ~10 passes over X
against ~25 a region (50 000 x 512); at small n, where a step's cost is its ops, not its rows, it is
about as long as the five-region search itself (2 000 x 128 job-like: 2.34 of 4.82 s in a profile with
4-restart probes; docs/engine.md, issue 23). It runs by default whenever the search uses
label evidence (`SearchParams.checks_evidence`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spotlight.contract.kernel import region_weights
from spotlight.contract.params import SearchParams
from worker.engine.result import SearchResult

Search = Callable[..., SearchResult]

# Restarts of each of the check's one-region probes (the job's own `restarts` when fewer). Measured
# over 80 rounding draws of the real-text sets (bench.real_jitter, docs/engine.md): with 2 the check
# chose better, mean best AP 0.414 against 0.410 with the job's 4 (8 of 10 sets at >= 1.2x the
# mixture slicer against 7), and its probes take fewer, cheaper steps.
PROBE_RESTARTS = 2


def held_out_z(
    run: Search,
    x: np.ndarray,
    loss: np.ndarray,
    params: SearchParams,
    a: np.ndarray,
    b: np.ndarray,
    labels: np.ndarray | None,
    predictions: np.ndarray | None,
) -> float:
    """How far the one region `run` finds on rows a holds up on rows b: the z-score of its kernel-weighted
    mean loss over rows b (weights normalised to sum 1) against the mean and standard deviation that
    weighted mean has when b's losses are permuted, sd(loss_b) sqrt(sum w^2 - 1/|b|) up to the factor
    |b| / (|b| - 1), the same for both settings. 0 when the region weighs no row of b or b's losses
    do not vary. With `objective="min_loss"` a region holds up by a low mean: the sign is turned."""
    res = run(
        x[a],
        loss[a],
        params,
        labels=None if labels is None else labels[a],
        predictions=None if predictions is None else predictions[a],
    )
    wb = region_weights(
        x[b],
        res.regions[0].kernel_record(),
        basis=res.basis,
        labels=None if labels is None else labels[b],
        predictions=None if predictions is None else predictions[b],
    )
    lb = np.asarray(loss[b], dtype=np.float64)
    w = np.asarray(wb, dtype=np.float64)
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    if not w.sum() > 0 or not lb.std() > 0:
        return 0.0
    w = w / w.sum()
    spread = lb.std() * np.sqrt(max(float(w @ w) - 1.0 / lb.size, 1e-12))
    sign = -1.0 if params.objective == "min_loss" else 1.0
    return sign * float((w @ lb - lb.mean()) / spread)


def keep_evidence(
    run: Search,
    x: np.ndarray,
    loss: np.ndarray,
    params: SearchParams,
    labels: np.ndarray | None,
    predictions: np.ndarray | None,
    weights: np.ndarray,
) -> bool:
    """Whether the search should keep the job's label evidence (module docstring)."""
    rows = np.flatnonzero(weights > 0)
    rng = np.random.default_rng([params.seed, 7])
    half = rng.random(rows.size) < 0.5
    a, b = rows[half], rows[~half]
    if a.size < 4 or b.size < 4:
        return True
    one = params.model_copy(
        update={
            "n_spotlights": 1,
            "evidence_check": False,
            "n_permutations": 0,
            "restarts": min(params.restarts, PROBE_RESTARTS),
        }
    )
    bare = one.model_copy(update={"evidence_weight": 0.0})
    with_evidence = without = 0.0
    for found_on, applied_to in ((a, b), (b, a)):  # each half found on once and held out once
        with_evidence += held_out_z(run, x, loss, one, found_on, applied_to, labels, predictions)
        without += held_out_z(run, x, loss, bare, found_on, applied_to, labels, predictions)
    return with_evidence >= without
