"""`Variant`: how one kernel's region is started, stepped and finished, resolved once per search.

The search loop (worker/engine/search.py) is the same for every kernel: starts, batched Adam over the
restarts with a plateau-halved learning rate, the best feasible iterate, then a polish. What differs
by kernel lives in a variant (variants/smooth.py, variants/ball.py), picked by name from the params
(`variants.resolve`), the way scikit-learn's KMeans picks its algorithm by name rather than by the
shape of its arrays:

- `starts`: the d x R starting centres of region j;
- `initial_theta`: their log-precisions (1, 2 or d rows, `theta_rows`);
- `schedule`: when the plateau test starts, how many halvings converge a restart, what `progress` reports;
- `step`: one step's objective and gradient of every restart (`core.Step`);
- `polish`: the chosen iterate improved once, after the steps;
- `region_weights`: the region's kernel value of every row (and the ball's core edge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from spotlight.params import SearchParams
from worker.engine import core
from worker.engine.problem import Problem


@dataclass(frozen=True)
class Schedule:
    """The step loop's stopping rule for one variant (search.py `_optimise_region`)."""

    warm: int  # steps before the plateau test starts
    needed: int  # learning-rate halvings after which a restart has converged (0: stop after `warm`)
    total: int  # the step count `progress` reports as the total
    complete: bool  # whether stopping by this rule is convergence (False: a cap cut a fixed budget short)


class Variant:
    """The shared part of every variant: drawn starts, median-based precisions and the autograd step.

    A variant is built once per search (`variants.resolve`) from the problem and the params, so every
    choice that depends only on them (which step, how many precisions) is made here, not per step.
    """

    def __init__(self, problem: Problem, p: SearchParams) -> None:
        self.problem = problem
        self.p = p
        self.kernel: str = p.kernel
        self.ctx = core.StepContext(
            data=problem.data,
            weights=problem.weights,
            active=problem.active,
            kernel=p.kernel,
            size=problem.size,
            barrier_scale=p.barrier_scale,
            regs=problem.regs,
            unit_weights=problem.unit_weights,
        )

    def theta_rows(self) -> int:
        """Log-precisions per restart: one per dimension for the diagonal shape, else one."""
        return self.problem.data.shape[1] if self.p.shape == "diagonal" else 1

    def fitted_starts(self, scores: torch.Tensor) -> list[torch.Tensor]:
        """Centres a variant computes from the data, tried before the drawn ones (none here)."""
        return []

    def starts(self, scores: torch.Tensor, j: int) -> torch.Tensor:
        """Starting centres (d x R): `fitted_starts`, then the data mean and examples drawn (seeded by
        [seed, j]) among the highest scores."""
        problem, p = self.problem, self.p
        rng = np.random.default_rng([p.seed, j])
        fitted = self.fitted_starts(scores)
        s = scores.cpu().numpy()
        order = np.argsort(-s, kind="stable")
        if problem.active is not None:
            order = order[problem.active.cpu().numpy()[order]]
        pool = order[: max(p.restarts, int(math.ceil(problem.size)))]
        n_pick = min(p.restarts - 1, len(pool)) if p.restarts > 1 else 1
        picks = rng.choice(pool, size=n_pick, replace=False) if len(pool) else np.array([], dtype=np.int64)
        x = problem.data.x
        cols = [x[int(i)] for i in picks]
        if p.restarts > 1 or not cols:
            cols.insert(0, torch.zeros(x.shape[1], dtype=x.dtype, device=x.device))
        return torch.stack((fitted + cols)[: p.restarts], 1).contiguous()

    def start_distances(self, mu: torch.Tensor) -> torch.Tensor:
        """u of every row at precision 1/d (theta = 0) from each start (R x n)."""
        return core.scaled_distances(self.problem.data, mu, torch.zeros(1, mu.shape[1], device=mu.device))

    def initial_theta(self, mu: torch.Tensor) -> torch.Tensor:
        """Log-precisions putting each start's median active example at u = `Tuning.init_median_u`[kernel]."""
        problem = self.problem
        d, r = mu.shape
        with torch.no_grad():
            u0 = self.start_distances(mu)
            med = (u0 if problem.active is None else u0[:, problem.active]).median(1).values
            target = problem.tuning.init_median_u[self.kernel]
            theta = torch.where(med > 0, torch.log(target / med), torch.zeros_like(med))
            theta = theta.clamp(core.THETA_MIN, core.THETA_MAX)[None, :]
        return theta.expand(self.theta_rows(), r).contiguous()

    def schedule(self, cap: int) -> Schedule:
        raise NotImplementedError

    def step(
        self, mu: torch.Tensor, theta: torch.Tensor, scores: torch.Tensor, ws: torch.Tensor, slack: float
    ) -> core.Step:
        """Every restart's objective and gradient; `ws` is weights * scores (once per region)."""
        return core.objective_and_gradient(self.ctx, mu, theta, scores, slack)

    def polish(self, scores: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen feasible iterate (mu: d, theta), improved after the steps (unchanged here)."""
        return mu, theta

    def region_weights(self, mu: torch.Tensor, theta: torch.Tensor, size: float) -> tuple[torch.Tensor, float | None]:
        """The region's kernel value of every row, and its core edge `radius_u` where it has one (else None)."""
        data = self.problem.data
        return core.kernel_weights(core.scaled_distances(data, mu[:, None], theta[:, None])[0], self.kernel), None
