"""`evidence_check`: decide per job whether label evidence helps, from the job's own rows.

Why: on real sentence embeddings label evidence helped one encoder and hurt the other by about as
much (bench.real: mean best AP 0.424 vs 0.271, and 0.277 vs 0.425), so no fixed setting is right for
every job. What a job can measure is whether a region holds up on rows it was not found on.

How: the rows (of positive weight) are split in two halves with the search's seed. On each half one
region is searched with the job's evidence settings and one without evidence; each region is applied
to the other half (`spotlight.contract.kernel.region_weights`, the score route's formula) and its members there
taken by the score route's rule (`spotlight.contract.members.member_min_weight`); the setting whose two regions
have the higher summed held-out lift (mean loss of the other half's members over that half's mean) is
kept for the real search. A region with no held-out member counts lift 0. Ties keep the evidence.
Why both directions (cross-fitting): one split's region 0 holds 4-20 held-out members on the real
sets, and one direction alone picked the worse setting on MiniLM (bench.real, 2026-12-07).

Cost: four one-region searches on half the rows each, with `PROBE_RESTARTS` restarts;
`spotlight.server.cost.job_cost` counts them as two regions. At large n that is ~10 passes over X
against ~25 a region (50 000 x 512); at small n, where a step's cost is its ops, not its rows, it is
about as long as the five-region search itself (2 000 x 128 job-like: 2.34 of 4.82 s in a profile with
4-restart probes; docs/engine.md, issue 23). It runs by default whenever the search uses
label evidence (`SearchParams.checks_evidence`). Measured (docs/engine.md, "The evidence check"): it
picked the better setting, or one within 0.005 AP of it, on both real sets and two seeds, and kept the
evidence on the digits benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spotlight.contract.kernel import region_weights
from spotlight.contract.members import member_min_weight, member_set, members_at_or_above
from spotlight.contract.params import SearchParams
from worker.engine.result import SearchResult

Search = Callable[..., SearchResult]

# Restarts of each of the check's one-region probes (the job's own `restarts` when fewer). Measured
# over 80 rounding draws of the real-text sets (bench.real_jitter, docs/engine.md): with 2 the check
# chose better, mean best AP 0.414 against 0.410 with the job's 4 (8 of 10 sets at >= 1.2x the
# mixture slicer against 7), and its probes take fewer, cheaper steps.
PROBE_RESTARTS = 2


def held_out_lift(
    run: Search,
    x: np.ndarray,
    loss: np.ndarray,
    params: SearchParams,
    a: np.ndarray,
    b: np.ndarray,
    labels: np.ndarray | None,
    predictions: np.ndarray | None,
) -> float:
    """Lift on rows b of the one region `run` finds on rows a."""
    res = run(
        x[a],
        loss[a],
        params,
        labels=None if labels is None else labels[a],
        predictions=None if predictions is None else predictions[a],
    )
    region = res.regions[0]
    inside = member_set(res.weights[:, 0], region.kernel)
    threshold = member_min_weight(res.weights[:, 0], region.kernel, inside)
    wb = region_weights(
        x[b],
        region.kernel_record(),
        basis=res.basis,
        labels=None if labels is None else labels[b],
        predictions=None if predictions is None else predictions[b],
    )
    held = members_at_or_above(wb, threshold)
    base = float(loss[b].mean())
    if held.size == 0 or base <= 0:
        return 0.0
    return float(loss[b][held].mean()) / base


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
        with_evidence += held_out_lift(run, x, loss, one, found_on, applied_to, labels, predictions)
        without += held_out_lift(run, x, loss, bare, found_on, applied_to, labels, predictions)
    return with_evidence >= without
