"""What a search will cost, estimated at submission from its parameters and the dataset's shape.

The unit is the element-step: one coordinate of one row, for one restart, in one optimiser step.
A search runs `restarts` starts of `steps` steps over n x (d + e) coordinates — d after PCA, e the
label/prediction evidence columns appended when the job has labels (spotlight/contract/evidence.py) — for
each of its `n_spotlights` regions, the permutation test reruns a one-region search
`n_permutations` times, and the evidence check (on by default when the job has labels) searches one
region with and one without evidence on each half of the rows (check = 2), so

    cost = n * (d + e) * restarts * steps * (n_spotlights + n_permutations + check)

`steps` is a cap (the engine stops when converged), and e is `evidence.max_width`: at submission
the API knows whether the dataset has labels and predictions but not how many classes they have
(the worker reads the codes), so a one-hot kind counts the most columns a search ever uses
(`evidence.MAX_COLUMNS`, 128), 'mismatch' one. So this is an upper bound — the one a scheduler
must plan for. The API refuses a job over `max_job_cost`, refuses a tenant whose queued
and running jobs would together pass `max_active_cost_per_tenant`, and sends jobs over
`large_job_cost` to the queue's large lane, which workers serve in turn with the normal lane
(RQ's round-robin dequeue), so a long job cannot hold up every short one behind it.

Memory is the other cost: `job_memory_bytes` bounds what one search holds in its work-horse, and the
API refuses a job above ``worker_memory_bytes`` at submission, before it can exhaust a worker.
"""

from __future__ import annotations

from collections.abc import Collection

from redis import Redis

from spotlight.contract import evidence
from spotlight.contract.errors import LimitReached
from spotlight.contract.params import SearchParams
from spotlight.contract.protocol import ErrorCode
from spotlight.server.keys import Keys

BUDGET_RETRY_AFTER_S = 30


def job_cost(params: SearchParams, n: int, dim: int, fields: Collection[str] = ()) -> int:
    """Upper bound on the element-steps of a job (Python ints: no overflow).

    `fields`: what the dataset holds besides embeddings and losses (``DatasetRecord.fields``);
    with "labels" (and "predictions") the evidence columns count too."""
    d = min(params.pca_components, dim) if params.pca_components else dim
    e = evidence.max_width(params.evidence, params.evidence_weight, "labels" in fields, "predictions" in fields)
    d += e
    # the evidence check: four one-region searches on half the rows each, two regions' worth
    check = 2 * int(params.checks_evidence(e > 0))
    return n * d * params.restarts * params.steps * (params.n_spotlights + params.n_permutations + check)


# The worker's memory per search, measured (peak RSS of the work-horse, by phase, on n = 200 000 and
# 400 000 rows, d = 1 and 33, 2 to 20 regions; docs/engine.md "Worker memory"), then rounded up:
WORKER_BASE_BYTES = 512 * 2**20  # the horse's own: Python, torch, numpy, matplotlib (about 280 MiB measured)
ROW_BYTES = 160  # per row whatever the dimension: losses, scores, kernel values, members (107-131 measured)
DIM_BYTES = 48  # per row and coordinate: the standardised copy and the engine's float64 work (41 measured)
REGION_BYTES = 16  # per row and region: its kernel values, members and what describing it keeps (12 measured)


def job_memory_bytes(params: SearchParams, n: int, dim: int, fields: Collection[str] = ()) -> int:
    """Upper bound on the peak memory of one search's work-horse, in bytes.

    Every coordinate counts, PCA or not (the rows are standardised before they are projected), and
    so do the label evidence columns; the permutation test reruns one-region searches one at a time,
    so it adds nothing that lasts.
    """
    e = evidence.max_width(params.evidence, params.evidence_weight, "labels" in fields, "predictions" in fields)
    return WORKER_BASE_BYTES + n * (ROW_BYTES + DIM_BYTES * (dim + e) + REGION_BYTES * params.n_spotlights)


def active_cost(conn: Redis, keys: Keys, tenant: str, active_ids: set[str]) -> int:
    """The summed cost of `active_ids` (the tenant's queued + running jobs); forgets the others."""
    costs = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in conn.hgetall(keys.cost(tenant)).items()}
    ended = [job for job in costs if job not in active_ids]
    if ended:
        conn.hdel(keys.cost(tenant), *ended)
    return sum(c for job, c in costs.items() if job in active_ids)


def check_budget(conn: Redis, keys: Keys, tenant: str, cost: int, active_ids: set[str], limit: float) -> None:
    """LimitReached (``too_much_active_cost``) when the tenant's queued + running jobs and this one
    would together cost more than `limit` (``max_active_cost_per_tenant``).

    Check and `record` must happen under the tenant's submission lock (service/job_registry.py),
    with the job enqueued in between: otherwise two submissions at once could both pass.
    """
    active = active_cost(conn, keys, tenant, active_ids)
    if active + cost > limit:
        raise LimitReached(
            ErrorCode.TOO_MUCH_ACTIVE_COST,
            f"Your queued and running jobs already cost {active:.3g} element-steps; with this one ({cost:.3g}) "
            f"they would pass this server's limit of {limit:.3g} per tenant "
            "(SPOTLIGHT_MAX_ACTIVE_COST_PER_TENANT); wait for some to finish.",
            {"active_cost": active, "cost": cost, "limit": limit, "setting": "SPOTLIGHT_MAX_ACTIVE_COST_PER_TENANT"},
            retry_after_s=BUDGET_RETRY_AFTER_S,
        )
