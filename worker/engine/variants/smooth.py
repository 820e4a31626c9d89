"""The smooth kernels' variant, a region kept at its size by a barrier: what 'gaussian' (variants/gaussian.py)
and the paper's 'flat' (variants/flat.py) share; each of those adds its formula and its derivative.

Its steps: the spherical shape's hand-derived step (`spherical_step`), the same with an evidence
precision of its own (`split_step`), and autograd of `evaluate`
for the diagonal shape and the entropy penalties (`Variant.autograd_step`). The starts are the shared drawn
ones; the barrier tightens over `Tuning.tighten_steps`, then each restart runs until its plateau-halved
learning rate has decayed.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from spotlight.contract.params import SearchParams
from worker.engine import core, grow
from worker.engine.problem import Problem
from worker.engine.variants.base import Schedule, Variant


class Smooth(Variant):
    """A smooth kernel: barrier-constrained Adam from drawn starts, no polish. A subclass gives the
    kernel's `weight`, `weight_at` and `chain_` (the same formula, in the forms the steps need)."""

    # `sizing="grow"` refits the precision so that the kernel's weight counts the grown size (True), or
    # so that its support ends at the first row left out (False: a kernel that is 0 beyond u = 1)
    grows_by_mass: ClassVar[bool] = True

    def __init__(self, problem: Problem, p: SearchParams) -> None:
        super().__init__(problem, p)
        rows = self.theta_rows()
        self._hand = problem.regs is None and rows == 1
        self._split = problem.regs is None and problem.data.tail > 0 and rows == 2
        self.hand_step = self._hand or self._split

    def theta_rows(self) -> int:
        """Spherical with evidence columns: 2 (embedding, evidence, `core.split_precision`), both starting
        equal, so the first step is that of one precision for every column."""
        if self.p.shape == "spherical" and self.problem.data.tail > 0:
            return 2
        return super().theta_rows()

    @staticmethod
    def weight_at(dist: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """`weight` at u = a * dist, a one factor per restart (R), dist R x n, in the order the steps use."""
        raise NotImplementedError

    @staticmethod
    def chain_(g: torch.Tensor, k: torch.Tensor, dist: torch.Tensor, a: torch.Tensor) -> None:
        """dP/dk (g, R x n) times dk/du at u = a * dist, in place (k: `weight_at`)."""
        raise NotImplementedError

    def schedule(self, cap: int) -> Schedule:
        tighten = max(1, min(cap, self.problem.tuning.tighten_steps))
        return Schedule(warm=tighten, needed=self.problem.tuning.max_halvings, total=cap, complete=True)

    def size_shift(self, u: torch.Tensor, weights: torch.Tensor, size: float) -> float | None:
        if self.grows_by_mass:
            return grow.precision_shift(u, weights, self.weight, size)
        return grow.support_shift(u, weights, size)

    def step(
        self, mu: torch.Tensor, theta: torch.Tensor, scores: torch.Tensor, ws: torch.Tensor, slack: float
    ) -> core.Step:
        if self._hand:
            return spherical_step(type(self), self.ctx, mu, theta, ws, slack)
        if self._split:
            return split_step(type(self), self.ctx, mu, theta, ws, slack)
        return super().step(mu, theta, scores, ws, slack)


def spherical_step(
    kernel: type[Smooth], ctx: core.StepContext, mu: torch.Tensor, theta: torch.Tensor, ws: torch.Tensor, slack: float
) -> core.Step:
    """The step of a spherical region with no entropy penalty, derived by hand.

    Why: autograd's graph costs ~20 elementwise passes over the R x n temporaries a step; this takes
    ~8 (measured 15-17 % faster a step at n = 50 000, d = 512, bench/speed). Same numbers as the
    autograd path (tests/engine compares them), with u = a * D, a = f * tau, D = ||x - mu||^2:

        T = sum_i w_i k_i,  V = sum_i w_i s_i k_i / T,  P = V - scale * (gap / b)^2, gap = max(0, S + b - T)
        dP/dk_i = w_i s_i / T + w_i (beta - V / T),  beta = 2 scale gap / b^2
        g_i = dP/du_i = dP/dk_i * k'(u_i)   (gaussian: -k/2; flat: -1 where u <= 1)
        dP/dtheta = sum_i g_i u_i,   dP/dmu = a (-2 X^T g + 2 mu sum_i g_i)

    D is clamped at 0 (rounding of the expanded form); unlike autograd's clamp this keeps the
    gradient there, whose factor (x - mu) is ~0 at such points anyway. `ws` is weights * scores.
    """
    data = ctx.data
    d = data.shape[1]
    tau = torch.exp(theta[0]) / d
    dist = data.norms_minus_twice(mu.t())
    dist.add_((mu * mu).sum(0).unsqueeze(1)).clamp_(min=0.0)
    if ctx.active is None:  # min_i(tau * D_i) = tau * min_i D_i: no R x n temporary for the projection
        f = kernel.support_at(dist.amin(1) * tau)
    else:
        f = kernel.support(dist * tau[:, None], ctx.active)
    a = f * tau
    ev, g = _through_kernel(kernel, ctx, dist, a, ws, slack)
    g_theta = ((g * dist).sum(1) * a)[None, :]
    g.mul_(a.unsqueeze(1))
    g_mu = -2.0 * data.pullback(g).t() + 2.0 * mu * g.sum(1)
    return ev, torch.nan_to_num(g_mu), torch.nan_to_num(g_theta), f


def _through_kernel(
    kernel: type[Smooth], ctx: core.StepContext, dist: torch.Tensor, a: torch.Tensor, ws: torch.Tensor, slack: float
) -> tuple[core.Evaluation, torch.Tensor]:
    """The evaluation and g = dP/du (R x n) of the kernel at u = a * dist (a: one factor per restart):
    `barrier_objective`, then the chain rule through the kernel (`Smooth.chain_`)."""
    k = kernel.weight_at(dist, a)
    ev, g = barrier_objective(ctx, k, ws, slack)
    kernel.chain_(g, k, dist, a)
    return ev, g


def barrier_objective(
    ctx: core.StepContext, k: torch.Tensor, ws: torch.Tensor, slack: float
) -> tuple[core.Evaluation, torch.Tensor]:
    """The barrier-penalised weighted mean of R kernels (R x n values k) and its derivative dP/dk
    (R x n): what every hand-derived barrier step shares before the chain rule through its kernel."""
    weights, size, barrier_scale = ctx.weights, ctx.size, ctx.barrier_scale
    total = k @ weights
    safe_total = torch.clamp(total, min=torch.finfo(total.dtype).tiny)
    value = (k @ ws) / safe_total
    penalty, beta = core.barrier_terms(total, size, slack, barrier_scale)
    penalised = value - penalty
    coef = torch.stack([safe_total.reciprocal(), beta - value / safe_total], 1)  # R x 2
    return core.Evaluation(value=value, penalised=penalised, total=total), coef @ ctx.stacked(ws)


def split_step(
    kernel: type[Smooth], ctx: core.StepContext, mu: torch.Tensor, theta: torch.Tensor, ws: torch.Tensor, slack: float
) -> core.Step:
    """`spherical_step` with two precisions (`split_precision`), derived by hand the same way.

    With D = ||z - mu||^2 over the embedding columns, E = ||e - mu_e||^2 over the evidence columns,
    u = f (tau D + tau_e E), a = f tau, a_e = f tau_e and g_i = dP/du_i as in `spherical_step`:

        dP/dtheta = (sum_i g_i a D_i, sum_i g_i a_e E_i)
        dP/dmu = a (-2 X^T g + 2 mu sum_i g_i) on the embedding columns, a_e (...) on the evidence ones

    X^T g is the same one pass over X as the tied case; E and the evidence rows of dP/dmu take one
    pass each over the n x c evidence block (c small).
    """
    data = ctx.data
    d = data.shape[1]
    tau = torch.exp(theta) / d  # 2 x R
    dist_ev = core.evidence_distances(data, mu)
    dist = data.norms_minus_twice(mu.t())
    dist.add_((mu * mu).sum(0)[:, None]).sub_(dist_ev).clamp_(min=0.0)
    u = dist * tau[0][:, None] + dist_ev * tau[1][:, None]
    f = kernel.support(u, ctx.active)
    u.mul_(f[:, None])
    ev, g = _through_kernel(kernel, ctx, u, torch.ones_like(f), ws, slack)
    a, a_e = f * tau[0], f * tau[1]
    g_theta = torch.stack([(g * dist).sum(1) * a, (g * dist_ev).sum(1) * a_e], 0)
    g_sum = g.sum(1)
    g_mu = -2.0 * data.pullback(g * a[:, None]).t() + 2.0 * mu * (a * g_sum)[None, :]
    assert data.evidence is not None
    ge = g * a_e[:, None]
    g_mu[d - data.tail :] = -2.0 * (ge @ data.evidence).t() + 2.0 * mu[d - data.tail :] * (a_e * g_sum)[None, :]
    return ev, torch.nan_to_num(g_mu), torch.nan_to_num(g_theta), f
