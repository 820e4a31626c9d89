"""The ball that best separates the highest-scoring rows of a neighbourhood: a small logistic regression.

A 'ball' region's core is the rows with the smallest ||x||^2 - 2 x.mu, a linear rule in (x, ||x||^2):
the rule w.x - c ||x||^2 with c > 0 is the ball centred at w / 2c, and c -> 0 a half-space. So the
centre that best tells the `size` highest-scoring rows of a neighbourhood from the rest comes from an
L2-penalised logistic regression on (x, -||x||^2), which variants/ball.py's `classifier_refits` uses to move
a found centre where gradient steps on the kernel's edge do not go (docs/engine.md).

The solver is a limited-memory BFGS written here on plain tensor operations: the problem is smooth and
strongly convex (the ridge), a few dozen iterations of a few matrix-vector products each, and
`torch.optim` would import torch's compiler stack (over a second) on first use in every worker process.
"""

from __future__ import annotations

import torch

from worker.engine import core

HISTORY = 10  # L-BFGS memory (pairs of steps and gradient changes)
ARMIJO = 1e-4  # sufficient decrease of the backtracking line search
TOLERANCE = 1e-9  # relative change of the penalised loss that ends the fit


def fit_ball(
    data: core.EmbeddingMatrix,
    rows: torch.Tensor,
    scores: torch.Tensor,
    weights: torch.Tensor,
    size: float,
    ridge: float,
    iterations: int,
) -> torch.Tensor | None:
    """The centre of the ball that best separates the `size` highest-scoring of `rows` (counted in
    examples, `weights`) from the others, or None when the fit is no ball (the ||x||^2 coefficient
    is not positive: a complement of one) or is not finite.

    The features are centred and the ||x||^2 column scaled to unit spread, so one `ridge` (on the
    weighted mean log-loss) penalises every column alike; the intercept is not penalised.
    """
    w64 = weights.double()
    order = torch.argsort(scores, descending=True, stable=True)
    before = torch.cumsum(w64[order], 0) - w64[order]
    positive = torch.zeros(scores.shape[0], dtype=torch.float64, device=scores.device)
    positive[order[before < size]] = 1.0
    if not 0.0 < float(positive.sum()) < rows.numel():
        return None
    x = data.x[rows].double()
    q = data.sq_norms[rows].double()
    w = w64 / w64.sum()
    x_c = x - w @ x
    q_c = q - w @ q
    q_scale = float(torch.sqrt(w @ (q_c * q_c)))
    if not q_scale > 0.0:
        return None
    feats = torch.cat([x_c, (-q_c / q_scale)[:, None], torch.ones_like(q_c)[:, None]], 1)
    coef = logistic_regression(feats, positive, w, ridge, iterations)
    c = float(coef[-2]) / q_scale  # the coefficient of -||x||^2
    if not (c > 0.0 and bool(torch.isfinite(coef).all())):
        return None
    return (coef[:-2] / (2.0 * c)).to(data.x.dtype)


def logistic_regression(
    feats: torch.Tensor, positive: torch.Tensor, w: torch.Tensor, ridge: float, iterations: int
) -> torch.Tensor:
    """Coefficients minimising sum_i w_i logloss(feats_i . beta, positive_i) + ridge ||beta||^2, the
    last column (the intercept) unpenalised: L-BFGS with a backtracking (Armijo) line search."""
    penalised = torch.ones(feats.shape[1], dtype=feats.dtype, device=feats.device)
    penalised[-1] = 0.0

    def loss_and_gradient(beta: torch.Tensor) -> tuple[float, torch.Tensor]:
        logits = feats @ beta
        # log(1 + e^z) - y z, stably; its derivative in z is sigmoid(z) - y
        loss = w @ (torch.nn.functional.softplus(logits) - positive * logits)
        grad = feats.t() @ (w * (torch.sigmoid(logits) - positive))
        return float(loss + ridge * (penalised * beta * beta).sum()), grad + 2.0 * ridge * penalised * beta

    beta = torch.zeros(feats.shape[1], dtype=feats.dtype, device=feats.device)
    f, g = loss_and_gradient(beta)
    steps: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    for _ in range(iterations):
        direction = -_inverse_hessian_times(g, steps)
        slope = float(g @ direction)
        if slope >= 0.0:  # not a descent direction (curvature pairs gone stale): plain gradient step
            steps.clear()
            direction, slope = -g, -float(g @ g)
        if slope == 0.0:
            break
        t = 1.0 if steps else 1.0 / max(1.0, float(g.abs().sum()))
        while True:
            beta_new = beta + t * direction
            f_new, g_new = loss_and_gradient(beta_new)
            if f_new <= f + ARMIJO * t * slope or t < 1e-12:
                break
            t *= 0.5
        s, y = beta_new - beta, g_new - g
        sy = float(s @ y)
        if sy > 1e-12:
            steps.append((s, y, 1.0 / sy))
            del steps[:-HISTORY]
        done = abs(f - f_new) <= TOLERANCE * max(1.0, abs(f))
        beta, f, g = beta_new, f_new, g_new
        if done:
            break
    return beta


def _inverse_hessian_times(g: torch.Tensor, steps: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """The L-BFGS inverse-Hessian estimate of the stored pairs applied to g, in the compact form
    (Byrd, Nocedal and Schnabel 1994): with S, Y the pairs as columns (oldest first), R the upper
    triangle of S^T Y, D its diagonal and gamma = s.y / y.y of the newest pair,

        H g = gamma g + S t - gamma Y R^-1 S^T g,   t = R^-T ((D + gamma Y^T Y) R^-1 S^T g - gamma Y^T g).

    Why: the same vector as the two-loop recursion (`_two_loop`, tested equal in float64) in about ten
    tensor operations whatever the history, where the loop took ~6 per pair; at 2 000 rows the
    refits' fits are most of a search and the loop was most of a fit (docs/engine.md, speed)."""
    if not steps:
        return g.clone()
    s_mat = torch.stack([s for s, _, _ in steps], 1)  # p x m
    y_mat = torch.stack([y for _, y, _ in steps], 1)
    sy = s_mat.t() @ y_mat  # m x m: s_i . y_j
    r = torch.triu(sy)
    gamma = sy[-1, -1] / (y_mat[:, -1] @ y_mat[:, -1])
    sg, yg = s_mat.t() @ g, y_mat.t() @ g
    u = torch.linalg.solve_triangular(r, sg[:, None], upper=True)[:, 0]  # R^-1 S^T g
    inner = torch.diagonal(sy) * u + gamma * (y_mat.t() @ (y_mat @ u)) - gamma * yg
    t = torch.linalg.solve_triangular(r.t(), inner[:, None], upper=False)[:, 0]
    return gamma * g + s_mat @ t - gamma * (y_mat @ u)


def _two_loop(g: torch.Tensor, steps: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """L-BFGS's two-loop recursion (Nocedal and Wright, algorithm 7.4): the reference the compact
    form is tested against."""
    q = g.clone()
    alphas = []
    for s, y, rho in reversed(steps):
        a = rho * float(s @ q)
        q -= a * y
        alphas.append(a)
    if steps:
        s, y, _ = steps[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), a in zip(steps, reversed(alphas), strict=True):
        q += (a - rho * float(y @ q)) * s
    return q
