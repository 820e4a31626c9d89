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
from typing import ClassVar

import numpy as np
import torch

from spotlight.contract.kernel import SPECS
from spotlight.contract.params import SearchParams
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
    What a kernel is (its torch formula, its start width, its objective) are class attributes, so the
    tests and `grow` reach them without a search.
    """

    name: ClassVar[str]  # the kernel's name in spotlight/contract/kernel.py SPECS and SearchParams' `kernel`
    # initial precision: each start's median active example at this u
    start_u: ClassVar[float]
    # the size constraint is a barrier (False: the kernel counts S rows by construction)
    barrier: ClassVar[bool] = True
    # this search's `step` is hand-derived, no autograd: the step loop then runs in torch's inference
    # mode, whose ops skip autograd's bookkeeping (what a step at small n is made of; docs/engine.md, issue 23)
    hand_step: bool = False

    def __init__(self, problem: Problem, p: SearchParams) -> None:
        self.problem = problem
        self.p = p
        self.ctx = core.StepContext(
            data=problem.data,
            weights=problem.weights,
            active=problem.active,
            size=problem.size,
            barrier_scale=p.barrier_scale,
            regs=problem.regs,
            unit_weights=problem.unit_weights,
        )

    @staticmethod
    def weight(u: torch.Tensor) -> torch.Tensor:
        """The kernel value of scaled squared distances u (torch; spotlight/contract/kernel.py has the numpy twin)."""
        raise NotImplementedError

    @classmethod
    def measured(cls, u: torch.Tensor, weights: torch.Tensor, size: float) -> torch.Tensor:
        """The scaled distances as `weight` reads them (here u itself)."""
        return u

    @classmethod
    def evaluate(
        cls,
        u: torch.Tensor,
        scores: torch.Tensor,
        weights: torch.Tensor,
        size: float,
        slack: float,
        barrier_scale: float,
        regs: core.Regularisers | None = None,
    ) -> core.Evaluation:
        """The objective of every restart from its scaled distances u (R x n), what the step maximises:
        value = the weighted mean (`core.weighted_mean`), penalised = value - barrier(sum_i w_i k_i)
        for a kernel with a `barrier`, else value."""
        value, total = core.weighted_mean(cls.weight(cls.measured(u, weights, size)), scores, weights, regs)
        if not cls.barrier:
            return core.Evaluation(value=value, penalised=value, total=total)
        penalised = value - core.barrier_penalty(total, size, slack, barrier_scale)
        return core.Evaluation(value=value, penalised=penalised, total=total)

    @classmethod
    def support(cls, u: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
        """The support projection factor of every restart (`core.support_rescale` at the kernel's bound)."""
        return core.support_rescale(u, active, SPECS[cls.name].max_min_u)

    @classmethod
    def support_at(cls, u_min: torch.Tensor) -> torch.Tensor:
        """`support` from each restart's smallest active u, where the step has it already."""
        bound = SPECS[cls.name].max_min_u
        return torch.ones_like(u_min) if bound is None else core.support_factor(u_min, bound)

    @classmethod
    def autograd_step(
        cls, ctx: core.StepContext, mu: torch.Tensor, theta: torch.Tensor, scores: torch.Tensor, slack: float
    ) -> core.Step:
        """One step by autograd of `evaluate`: every shape and entropy penalty.

        The hand-derived steps (variants/smooth.py, variants/ball.py) cover their common cases faster
        and are tested equal to this. The gradient is taken at the projected point: u is linear in the
        precisions, so scaling them by f and scaling u by f are the same thing.
        """
        mu = mu.detach().requires_grad_(True)
        theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            u = core.scaled_distances(ctx.data, mu, theta)
            f = cls.support(u, ctx.active)
            ev = cls.evaluate(u * f[:, None], scores, ctx.weights, ctx.size, slack, ctx.barrier_scale, ctx.regs)
            g_mu, g_theta = torch.autograd.grad(ev.penalised.sum(), [mu, theta])
        detached = core.Evaluation(ev.value.detach(), ev.penalised.detach(), ev.total.detach())
        return detached, torch.nan_to_num(g_mu), torch.nan_to_num(g_theta), f

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
        """Log-precisions putting each start's median active example at u = `start_u`."""
        problem = self.problem
        d, r = mu.shape
        with torch.no_grad():
            u0 = self.start_distances(mu)
            med = (u0 if problem.active is None else u0[:, problem.active]).median(1).values
            theta = torch.where(med > 0, torch.log(self.start_u / med), torch.zeros_like(med))
            theta = theta.clamp(core.THETA_MIN, core.THETA_MAX)[None, :]
        return theta.expand(self.theta_rows(), r).contiguous()

    def schedule(self, cap: int) -> Schedule:
        raise NotImplementedError

    def size_shift(self, u: torch.Tensor, weights: torch.Tensor, size: float) -> float | None:
        """`sizing="grow"`: c such that the region at log-precisions theta + c counts `size` (worker/engine/grow.py),
        or None where the precision stays (a kernel whose core is sized directly)."""
        raise NotImplementedError

    def step(
        self, mu: torch.Tensor, theta: torch.Tensor, scores: torch.Tensor, ws: torch.Tensor, slack: float
    ) -> core.Step:
        """Every restart's objective and gradient; `ws` is weights * scores (once per region)."""
        return self.autograd_step(self.ctx, mu, theta, scores, slack)

    def polish(self, scores: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen feasible iterate (mu: d, theta), improved after the steps (unchanged here)."""
        return mu, theta

    def region_weights(self, mu: torch.Tensor, theta: torch.Tensor, size: float) -> tuple[torch.Tensor, float | None]:
        """The region's kernel value of every row, and its core edge `radius_u` where it has one (else None)."""
        data = self.problem.data
        return self.weight(core.scaled_distances(data, mu[:, None], theta[:, None])[0]), None
