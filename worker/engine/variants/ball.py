"""The 'ball' kernel's variant: 1 on the core of the S rows nearest its centre, a gaussian edge beyond.

Its total weight is at least S by construction, so it needs no barrier and no support projection, and
it is a different algorithm from the smooth kernels' (docs/engine.md, "The ball kernel"):

- starts: the best centres along a least-squares fit of the scores on (x, ||x||^2)
  (`regression_starts`) before the drawn ones;
- steps: the hand-derived step (`ball_step`) for a fixed budget (`Tuning.ball_steps`), which moves the
  centre; with an entropy penalty, autograd of `evaluate`;
- polish: member rows tried as the centre (`member_centres`), classifier refits
  (`classifier_refits`, worker/engine/ballfit.py), and last the exact 1-d edge fit (`fit_edge`).

The ball is spherical only: a diagonal ball (one width per dimension, none of the polish) lost to the
diagonal gaussian and flat kernels on every problem measured (docs/engine.md, "What earns its place").
"""

from __future__ import annotations

import math

import torch

from spotlight.contract.params import SearchParams
from worker.engine import ballfit, core
from worker.engine.problem import Problem
from worker.engine.variants.base import Schedule, Variant


class Ball(Variant):
    """'ball': fitted starts, a step budget and the polish; spherical only."""

    name = "ball"
    start_u = 8.0  # measured from the core's edge: the median row beyond it at weight e^-4
    barrier = False  # feasible by construction

    def __init__(self, problem: Problem, p: SearchParams) -> None:
        if p.shape != "spherical":
            raise ValueError(
                "the 'ball' kernel is spherical only; for shape 'diagonal' use kernel 'gaussian' or 'flat'"
            )
        super().__init__(problem, p)
        # one precision per restart, evidence columns included (the hand-derived step ties them)
        self._hand = problem.regs is None
        self.hand_step = self._hand
        self._gram: torch.Tensor | None = None  # computed once per search, when the first start needs it

    @staticmethod
    def weight(u: torch.Tensor) -> torch.Tensor:
        """u measured from the core's edge (u - radius_u, see `core.ball_core`): 1 inside the core
        (u <= 0), a gaussian edge exp(-u/2) outside."""
        return torch.exp(-0.5 * torch.clamp(u, min=0.0))

    @classmethod
    def measured(cls, u: torch.Tensor, weights: torch.Tensor, size: float) -> torch.Tensor:
        """u from the core's edge, found here (`core.ball_core`, differentiable through the row that sets
        it); no barrier applies (`barrier`): sum_i w_i k_i >= S always."""
        edge, _ = core.ball_core(u, weights, size, unit_weights=False)
        return u - edge[:, None]

    def size_shift(self, u: torch.Tensor, weights: torch.Tensor, size: float) -> float | None:
        return None  # the core is sized by `region_weights` with the grown size; the edge width stays

    def fitted_starts(self, scores: torch.Tensor) -> list[torch.Tensor]:
        if self._gram is None:
            self._gram = gram(self.problem.data, self.problem.weights)
        return regression_starts(self.problem, self._gram, scores, min(2, self.p.restarts))

    def start_distances(self, mu: torch.Tensor) -> torch.Tensor:
        """Measured from the core's edge: the median row beyond it sets the start's edge width."""
        u0 = super().start_distances(mu)
        return u0 - core.ball_core(u0, self.problem.weights, self.problem.size, unit_weights=False)[0][:, None]

    def schedule(self, cap: int) -> Schedule:
        tn = self.problem.tuning  # a fixed budget: the polish finishes the region
        warm = max(1, min(cap, tn.ball_steps))
        return Schedule(warm=warm, needed=0, total=warm, complete=warm == tn.ball_steps)

    def step(
        self, mu: torch.Tensor, theta: torch.Tensor, scores: torch.Tensor, ws: torch.Tensor, slack: float
    ) -> core.Step:
        if self._hand:
            return ball_step(self.ctx, mu, theta, ws)
        return super().step(mu, theta, scores, ws, slack)

    def polish(self, scores: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The member centres, then the refits, then the edge fit."""
        data = self.problem.data
        with data.counting("member centres"):
            mu, value = member_centres(self.problem, scores, mu)
        with data.counting("refits"):
            mu = classifier_refits(self.problem, scores, mu, value)
        with data.counting("edge fit"):
            return mu, fit_edge(self.problem, scores, mu)

    def region_weights(self, mu: torch.Tensor, theta: torch.Tensor, size: float) -> tuple[torch.Tensor, float | None]:
        """The kernel value of every row and the core's edge as a value of u (`radius_u`: k = 1 where
        u <= radius_u, exp(-(u - radius_u)/2) beyond).

        The ball is evaluated as the optimiser saw it (||x||^2 - 2 x.mu, without ||mu||^2, which a centre
        far outside the data would make lose float32 precision); radius_u is the edge row's u, in float64.
        """
        data, weights = self.problem.data, self.problem.weights
        a = torch.exp(theta[0]) / data.shape[1]
        dist = data.norms_minus_twice(mu[None, :])
        edge, row = core.ball_core(dist, weights, size, unit_weights=False)
        k = self.weight((dist[0] - edge[0]) * a)
        gap = data.x[int(row[0])].double() - mu.double()
        tau = torch.exp(theta.double()) / data.shape[1]
        return k, float((tau * gap * gap).sum())


def regression_starts(problem: Problem, gram: torch.Tensor, scores: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Centres for the 'ball' kernel from a least-squares fit of the scores on (x, -||x||^2, 1).

    Why: a ball's core is the rows with the smallest ||x||^2 - 2 x.mu, a linear rule in (x, ||x||^2),
    so the fitted s ~ x.w - b ||x||^2 + c points mu along w. Its scale (how far out the centre sits:
    near the data for a ball, far outside for a cap, where the core becomes a half-space) is the one
    number the fit does not pin down, so `Tuning.regression_grid` scales t (mu = t w / 2) are tried and the
    `count` whose cores have the highest weighted mean score, not adjacent on the grid, are returned.
    Cost: `gram`, one (d + 2)^2 matrix per search (the variant keeps it), two passes over X and one kthvalue per region.
    """
    data = problem.data
    x = data.x
    ws = (problem.weights * scores).double()
    rhs = torch.cat(
        [data.pullback(ws.float()[None, :])[0].double(), (-(data.sq_norms.double() * ws)).sum()[None], ws.sum()[None]]
    )
    ridge = problem.tuning.regression_ridge * float(torch.diagonal(gram).mean())
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    w = torch.linalg.solve(gram + ridge * eye, rhs)[: x.shape[1]].to(x.dtype)
    if not bool(torch.isfinite(w).all()) or float(w.abs().max()) == 0.0:
        return []
    xw = data.project(w[None, :])[0]
    scales = torch.logspace(
        math.log10(problem.tuning.regression_scales[0]),
        math.log10(problem.tuning.regression_scales[1]),
        problem.tuning.regression_grid,
        dtype=x.dtype,
        device=x.device,
    )
    key = data.sq_norms[None, :] - scales[:, None] * xw[None, :]  # grid x n: ||x - mu||^2 - ||mu||^2
    edge, _ = core.ball_core(key, problem.weights, problem.size, unit_weights=problem.unit_weights)
    inside = (key <= edge[:, None]).to(x.dtype)
    mean = (inside @ (problem.weights * scores)) / torch.clamp(inside @ problem.weights, min=1e-30)
    picked: list[int] = []
    for i in torch.argsort(mean, descending=True, stable=True).tolist():
        if all(abs(i - q) > 1 for q in picked):
            picked.append(i)
        if len(picked) == count:
            break
    return [scales[i] * w / 2.0 for i in picked]


def core_means(problem: Problem, ws: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each 'ball' centre (c x d), the weighted mean score of its core (the S nearest examples), and
    the c x n values ||x||^2 - 2 x.mu that order the rows by distance.

    Why the core and not the objective at the found edge width: the edge was learned for the found
    centre, and another centre with the same width can score lower only because more rows sit just
    beyond its core. The core's mean is what the objective tends to as the edge sharpens (which it
    does: docs/engine.md), and it is the mean over the region's members, what a person reads.
    """
    data = problem.data
    dist = data.norms_minus_twice(centres)
    edge, _ = core.ball_core(dist, problem.weights, problem.size, problem.unit_weights)
    inside = (dist <= edge[:, None]).to(ws.dtype)
    means = (inside @ ws) / torch.clamp(inside @ problem.weights, min=torch.finfo(ws.dtype).tiny)
    return means, dist


def member_centres(problem: Problem, scores: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The found 'ball' centre, or the core member that makes a better centre, with its core's mean score.

    Why: in high dimension a weak spot that is the neighbourhood of a row is found only near that
    row, a narrow basin that gradient steps from elsewhere rarely reach; they do reach a core that
    holds much of the weak spot, and so that row. Each of up to `Tuning.member_candidates` core rows (the
    highest-scoring first) is tried as the centre, its own core computed exactly; the best replaces
    the centre only if its core's mean score (`core_means`) is higher. Cost: about
    member_candidates / R optimiser steps once per region, in chunks of member_chunk candidates.
    """
    data = problem.data
    ws = problem.weights * scores
    means, dist = core_means(problem, ws, mu[None, :])
    edge, _ = core.ball_core(dist, problem.weights, problem.size, problem.unit_weights)
    members = torch.nonzero(dist[0] <= edge[0])[:, 0]
    members = members[torch.argsort(dist[0, members], stable=True)][: problem.tuning.member_candidates]
    best_value, best_row = float(means[0]), -1
    chunk = problem.tuning.member_chunk
    for i in range(0, members.numel(), chunk):
        rows = members[i : i + chunk]
        values, _ = core_means(problem, ws, data.x[rows])
        j = int(torch.argmax(values))
        if float(values[j]) > best_value:
            best_value, best_row = float(values[j]), int(rows[j])
    return (mu if best_row < 0 else data.x[best_row].clone()), best_value


def classifier_refits(problem: Problem, scores: torch.Tensor, mu: torch.Tensor, value: float) -> torch.Tensor:
    """The 'ball' centre improved by refitting it as a classifier of its neighbourhood, while that helps.

    Why: a ball's core is a linear rule in (x, ||x||^2), and the region a person wants (the rows
    nearest a point, possibly far outside the data: a cap) is then the rule that separates the
    highest-scoring rows of the neighbourhood from the rest. Gradient steps on the kernel's edge see
    only the rows at the edge and stop where the core mixes most of the weak spot with ordinary
    rows; the classifier sees all `Tuning.refit_rows` * S nearest rows at once, labels the S highest-scoring
    of them positive, and its rule w.x - c ||x||^2 (c > 0) is the ball centred at w / 2c. Each round
    refits around the last accepted centre; a centre is accepted only if its core's mean score
    (`core_means`, `value` for `mu`) is higher. Measured on the planted caps (docs/engine.md):
    top-S recall 0.74-0.76 -> 0.92-0.95. Cost per round: one pass over X, one kthvalue and an
    L-BFGS fit on refit_rows * S rows (no d x d matrix).
    """
    data = problem.data
    ws = problem.weights * scores
    best_mu, best_value = mu, value
    dist = data.norms_minus_twice(mu[None, :])
    tn = problem.tuning
    sizes = sorted(
        {tn.refit_rows * problem.size, max(tn.refit_rows * problem.size, tn.refit_rows_per_dim * data.shape[1])}
    )
    for _ in range(tn.refit_rounds):
        fitted = []
        for around in sizes:
            edge, _ = core.ball_core(dist, problem.weights, around, problem.unit_weights)
            rows = torch.nonzero((dist[0] <= edge[0]) & (problem.weights > 0))[:, 0]
            with core.one_thread(data.x.device):  # an L-BFGS fit of a few thousand rows: small operations
                candidate = ballfit.fit_ball(
                    data, rows, scores[rows], problem.weights[rows], problem.size, tn.refit_ridge, tn.refit_iterations
                )
            if candidate is not None:
                fitted.append(candidate)
        if not fitted:
            break
        values, dists = core_means(problem, ws, torch.stack(fitted))
        i = int(torch.argmax(values))
        if not float(values[i]) > best_value:
            break
        best_mu, best_value, dist = fitted[i], float(values[i]), dists[i : i + 1]
    return best_mu


def gram(data: core.EmbeddingMatrix, weights: torch.Tensor) -> torch.Tensor:
    """A^T diag(weights) A for A = [X, -||x||^2, 1] in float64, a row chunk at a time."""
    d = data.shape[1]
    data.count()
    out = torch.zeros(d + 2, d + 2, dtype=torch.float64, device=data.x.device)
    for i in range(0, data.shape[0], data.chunk):
        xc = data.x[i : i + data.chunk].double()
        a = torch.cat([xc, -data.sq_norms[i : i + data.chunk, None].double(), torch.ones_like(xc[:, :1])], 1)
        out.addmm_(a.t(), a * weights[i : i + data.chunk, None].double())
    return out


def fit_edge(problem: Problem, scores: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """The spherical 'ball' edge width (log-precision, shape 1) for a fixed centre: the exact 1-d maximum.

    Why: with the centre fixed the core and each row's distance beyond its edge, u0, are fixed, and the
    objective V(theta) = sum w s k / sum w k with k = exp(-exp(theta) u0 / (2 d)) is a function of one
    number, evaluated on a grid of thetas in one R x n product (no pass over X). Gradient steps approach
    it only slowly: the edge keeps sharpening for a hundred steps and more (docs/engine.md). V rises
    towards the core's mean as the edge sharpens and then stays flat, so the widest edge within
    `Tuning.plateau_tol` of the best is kept (rows beyond the core keep a ranking), never wider than
    the start's (the median row beyond the edge at u = `Ball.start_u`).
    Cost: one pass over X and 2 * ball_edge_grid kernel evaluations of the n rows.
    """
    tn, data = problem.tuning, problem.data
    d = data.shape[1]
    dist = data.norms_minus_twice(mu[None, :])
    edge, _ = core.ball_core(dist, problem.weights, problem.size, problem.unit_weights)
    beyond = torch.clamp(dist[0] - edge[0], min=0.0)
    if problem.active is not None:
        beyond = beyond[problem.active]
    med = float(beyond.median())
    low = math.log(Ball.start_u * d / med) if med > 0 else core.THETA_MIN
    low = min(max(low, core.THETA_MIN), core.THETA_MAX)
    sums = torch.stack([problem.weights * scores, problem.weights], 1)

    def values(thetas: torch.Tensor) -> torch.Tensor:
        k = torch.exp(dist[0].sub(edge[0]).clamp_(min=0.0)[None, :] * (torch.exp(thetas) * (-0.5 / d))[:, None])
        out = k @ sums
        return out[:, 0] / torch.clamp(out[:, 1], min=torch.finfo(out.dtype).tiny)

    coarse = torch.linspace(low, core.THETA_MAX, tn.ball_edge_grid, dtype=mu.dtype, device=mu.device)
    v_coarse = values(coarse)
    i = int(torch.argmax(v_coarse))
    step = (core.THETA_MAX - low) / max(tn.ball_edge_grid - 1, 1)
    fine = torch.linspace(
        max(low, float(coarse[i]) - step),
        min(core.THETA_MAX, float(coarse[i]) + step),
        tn.ball_edge_grid,
        dtype=mu.dtype,
        device=mu.device,
    )
    thetas = torch.cat([coarse, fine])
    v = torch.nan_to_num(torch.cat([v_coarse, values(fine)]), nan=-math.inf)
    near = v >= v.max() - tn.plateau_tol
    return thetas[near].min().reshape(1)


def ball_step(ctx: core.StepContext, mu: torch.Tensor, theta: torch.Tensor, ws: torch.Tensor) -> core.Step:
    """The step of the spherical 'ball' kernel with no entropy penalty, derived by hand (two passes over X).

    With D_i = ||x_i||^2 - 2 x_i . mu (||mu||^2 cancels against the radius, so a centre far outside
    the data costs no precision), r = D_j the core's edge (`ball_core`), a = exp(theta) / d,
    u_i = a (D_i - r) and k_i = exp(-max(u_i, 0) / 2):

        T = sum_i w_i k_i,  V = sum_i w_i s_i k_i / T   (no barrier: T >= S by construction)
        g_i = dV/du_i = w_i (s_i - V) / T * (-k_i / 2) where u_i > 0, else 0
        dV/dtheta = sum_i g_i u_i
        dV/dD_i = a g_i, and the edge row j also gets -a sum_i g_i (through r), so these sum to 0
        dV/dmu = -2 X^T (dV/dD)        (the 2 mu sum term vanishes with the sum)

    tests/engine compares it with autograd of `Ball.evaluate` (float64). `ws` is weights * scores.
    """
    data, weights = ctx.data, ctx.weights
    d = data.shape[1]
    a = torch.exp(theta[0]) / d
    dist = data.norms_minus_twice(mu.t())
    edge, edge_row = core.ball_core(dist, weights, ctx.size, ctx.unit_weights)
    u = dist.sub_(edge[:, None]).mul_(a[:, None])
    k = torch.exp(torch.clamp(u, min=0.0).mul_(-0.5))
    sums = k @ torch.stack([weights, ws], 1)  # R x 2: T and sum w s k, one pass over k
    total = sums[:, 0]
    safe_total = torch.clamp(total, min=torch.finfo(total.dtype).tiny)
    value = sums[:, 1] / safe_total
    # dV/du = dV/dk * k'(u), k' = -k/2 beyond the edge and 0 inside: the -1/2 goes into the R x 2 factors
    coef = torch.stack([1.0 / safe_total, -value / safe_total], 1) * -0.5
    g = coef @ torch.stack([ws, weights], 0)
    g.mul_(k.masked_fill_(u <= 0, 0.0))
    g_theta = torch.linalg.vecdot(g, u)[None, :]
    g.mul_(a[:, None])
    g.scatter_add_(1, edge_row[:, None], -g.sum(1, keepdim=True))
    g_mu = -2.0 * data.pullback(g).t()
    ev = core.Evaluation(value=value, penalised=value, total=total)
    return ev, torch.nan_to_num(g_mu), torch.nan_to_num(g_theta), torch.ones_like(value)
