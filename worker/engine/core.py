"""The numeric core of the search: small pure functions on torch tensors.

Everything here works in *standardised* coordinates (the caller's embeddings centred and divided
by one scale, see `prepare.py`) and on a batch of R restarts at once: centres are a d x R matrix,
log-precisions a 1 x R (spherical) or d x R (diagonal) matrix, and per-example quantities are R x n
(restart-major, so every elementwise op and every reduction over examples runs on contiguous rows).

Cost: the only passes over the n x d matrix X are X @ M (forward) and M-gradient = X^T @ G
(backward), via ||x - mu||^2 = ||x||^2 - 2 x.mu + ||mu||^2 with ||x||^2 precomputed. No d x d
matrix is ever formed. The diagonal shape adds the same two passes over X*X, done in row chunks so
that no n x d temporary exists. One implementation on every device: torch's own operators.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

# Log-precision bounds (standardised units): tau = exp(theta) / d. Wide enough for any region;
# narrow enough that exp() never overflows float32.
THETA_MIN, THETA_MAX = -30.0, 30.0


def ball_core(
    dist: torch.Tensor, weights: torch.Tensor, size: float, unit_weights: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 'ball' kernel's radius: per restart (row of dist, R x n), the smallest distance r such that
    the rows with dist <= r count at least `size` examples, and the index of the row that sets it.

    Why: a kernel that is 1 on this core and decays outside has total weight >= S whatever its centre
    and edge, so it can be as selective as the size allows in any dimension; a gaussian (at most 1 at
    its centre) must spread its weight over everything once distances concentrate (docs/engine.md).
    `dist` may be any per-row quantity monotone in the distance (the ball uses ||x||^2 - 2 x.mu).
    With unit weights this is the ceil(S)-th smallest (one `kthvalue`); else a sort and a cumulative sum.
    When the rows count fewer than S examples the largest distance is returned (all rows in the core).
    """
    n = dist.shape[1]
    if unit_weights:
        k = min(n, max(1, math.ceil(size * (1.0 - 1e-6))))
        values, idx = torch.kthvalue(dist, k, dim=1)
        return values, idx
    order = torch.argsort(dist, dim=1)
    counted = torch.cumsum(weights[order], dim=1)
    need = torch.full((dist.shape[0], 1), size * (1.0 - 1e-6), dtype=counted.dtype, device=counted.device)
    pos = torch.searchsorted(counted.contiguous(), need).clamp(max=n - 1)
    idx = order.gather(1, pos)[:, 0]
    return dist.gather(1, idx[:, None])[:, 0], idx


def row_chunk(n: int, d: int, device: torch.device) -> int:
    """Rows per chunk: ~2 MiB blocks on CPU (cache-friendly: measured fastest at n=50k, d=512), ~256 MiB
    on a GPU (only the diagonal shape's X*X is chunked there, to bound its temporary)."""
    budget = (256 if device.type == "cuda" else 2) * 2**20
    return max(256, min(n, budget // (4 * max(d, 1))))


@dataclass
class PassCount:
    """Passes over X a search took (products with X or X^T; X*X counts too), the cost measure of
    bench/speed: in all, and by the phase of the search that took them (`EmbeddingMatrix.counting`).
    A pass over part of the rows counts as that share of a pass over all of them."""

    total: float = 0.0
    by_phase: dict[str, float] = field(default_factory=dict)
    phase: str = "other"


class EmbeddingMatrix:
    """The standardised embeddings X (n x d) with what a step's two passes need, ||x||^2 precomputed.

    A step reads X twice: the distances P^T X^T (R x n) forward and the gradient G X (R x d)
    backward, both plain torch matmuls. The forward product is taken as (X P)^T with P^T contiguous
    (R x d), so BLAS multiplies X by a transposed operand: at R = 4 that is 2.5-3.5x faster than the
    same product with P contiguous (d x R), on small and large n alike (1.0 vs 3.2 ms at 1 000 x 128,
    9.8 vs 31.6 ms at 50 000 x 512, one thread), and faster than P^T X^T, which packs the big
    operand first (20.8 ms there); docs/engine.md, "The forward product's layout".
    """

    def __init__(self, x: torch.Tensor, chunk: int | None = None, tail: int = 0):
        self.x = x.contiguous()
        n, d = self.x.shape
        self.chunk = chunk if chunk is not None else row_chunk(n, d, x.device)
        self.counter = PassCount()
        self.share = 1.0  # what one pass over these rows counts in `counter` (`head`: the rows' share)
        self.sq_norms = torch.empty(n, dtype=x.dtype, device=x.device)
        for i in range(0, n, self.chunk):
            rows = self.x[i : i + self.chunk]
            self.sq_norms[i : i + self.chunk] = (rows * rows).sum(1)
        # The last `tail` columns are label evidence (prepare.add_evidence): a spherical region may give
        # them their own precision (`split_precision`), which needs this n x c block and its row norms.
        self.tail = tail
        self.evidence = self.x[:, d - tail :].contiguous() if tail else None
        self.evidence_sq_norms = (self.evidence * self.evidence).sum(1) if self.evidence is not None else None

    def head(self, m: int) -> EmbeddingMatrix:
        """The first m rows, as views of this matrix's memory (no copy), counting passes in the same
        `counter`, each as m / n of a pass over all rows."""
        part = object.__new__(EmbeddingMatrix)
        part.x, part.chunk, part.counter, part.tail = self.x[:m], self.chunk, self.counter, self.tail
        part.share = self.share * m / max(1, self.x.shape[0])
        part.sq_norms = self.sq_norms[:m]
        part.evidence = None if self.evidence is None else self.evidence[:m]
        part.evidence_sq_norms = None if self.evidence_sq_norms is None else self.evidence_sq_norms[:m]
        return part

    @property
    def shape(self) -> torch.Size:
        return self.x.shape

    @property
    def passes(self) -> float:
        """Passes over all rows so far, of this matrix and every `head` of it (`PassCount`)."""
        return self.counter.total

    def count(self) -> None:
        """Record one product with these rows, under the current phase."""
        c = self.counter
        c.total += self.share
        c.by_phase[c.phase] = c.by_phase.get(c.phase, 0.0) + self.share

    @contextlib.contextmanager
    def counting(self, phase: str) -> Iterator[None]:
        """Count the passes taken inside under `phase` (the previous phase is restored after)."""
        c = self.counter
        before, c.phase = c.phase, phase
        try:
            yield
        finally:
            c.phase = before

    def project(self, pt: torch.Tensor) -> torch.Tensor:
        """P^T X^T (R x n, contiguous) for a small P^T (R x d): one pass over X."""
        self.count()
        return (self.x @ pt.contiguous().t()).t().contiguous()

    def norms_minus_twice(self, pt: torch.Tensor) -> torch.Tensor:
        """||x||^2 - 2 P^T X^T (R x n, contiguous) for a small P^T (R x d): one pass over X.

        The same bits as `project(pt).mul_(-2.0).add_(sq_norms)` (2 x is exact), written into the
        R x n result by one op, not a copy and two passes (issue 23: small n, where ops cost more than
        their arithmetic)."""
        self.count()
        out = torch.empty(pt.shape[0], self.x.shape[0], dtype=pt.dtype, device=pt.device)
        return torch.add(self.sq_norms[None, :], (self.x @ pt.contiguous().t()).t(), alpha=-2.0, out=out)

    def pullback(self, g: torch.Tensor) -> torch.Tensor:
        """G X (R x d) for G (R x n): one pass over X."""
        self.count()
        return g.contiguous() @ self.x

    def project_squared(self, pt: torch.Tensor) -> torch.Tensor:
        """P^T (X*X)^T (R x n), X*X formed one row chunk at a time (no n x d temporary)."""
        self.count()
        out = torch.empty(pt.shape[0], self.x.shape[0], dtype=pt.dtype, device=pt.device)
        for i in range(0, self.x.shape[0], self.chunk):
            xc = self.x[i : i + self.chunk]
            out[:, i : i + self.chunk] = pt @ (xc * xc).t()
        return out

    def pullback_squared(self, g: torch.Tensor) -> torch.Tensor:
        """G (X*X) (R x d), in row chunks."""
        self.count()
        acc = torch.zeros(g.shape[0], self.x.shape[1], dtype=g.dtype, device=g.device)
        for i in range(0, self.x.shape[0], self.chunk):
            xc = self.x[i : i + self.chunk]
            acc.addmm_(g[:, i : i + self.chunk], xc * xc)
        return acc


@contextlib.contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """Torch on one CPU thread inside (on a CPU device), the thread count restored after.

    Why: work made of many small operations gains nothing from a second thread, and on a shared
    machine every operation waits at OpenMP's barrier whenever one of its threads is descheduled
    (docs/engine.md: the ball's classifier refits, 8-10x the wall time on two threads at load ~18).
    """
    before = torch.get_num_threads()
    single = device.type == "cpu" and before > 1
    if single:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if single:
            torch.set_num_threads(before)


class _RowProducts(torch.autograd.Function):
    """Z = P^T X^T (R x n), or P^T (X*X)^T with `squared`, for the constant embeddings and a small
    P (d x R); backward dP = (dZ X)^T, one more pass."""

    @staticmethod
    def forward(ctx, data: EmbeddingMatrix, p: torch.Tensor, squared: bool) -> torch.Tensor:
        ctx.data, ctx.squared = data, squared
        pt = p.t().contiguous()
        return data.project_squared(pt) if squared else data.project(pt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        data: EmbeddingMatrix = ctx.data
        g = data.pullback_squared(grad.contiguous()) if ctx.squared else data.pullback(grad)
        return None, g.t(), None


class _SphericalDistances(torch.autograd.Function):
    """D[r, i] = ||x_i||^2 - 2 x_i . mu_r + ||mu_r||^2 (R x n): one pass over X forward.

    Backward: dmu_r = -2 sum_i dD[r, i] x_i + 2 mu_r sum_i dD[r, i], i.e. one pass (dD X).
    """

    @staticmethod
    def forward(ctx, data: EmbeddingMatrix, mu: torch.Tensor) -> torch.Tensor:
        out = data.norms_minus_twice(mu.t())
        out.add_((mu * mu).sum(0)[:, None])
        ctx.data = data
        ctx.save_for_backward(mu)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mu,) = ctx.saved_tensors
        data: EmbeddingMatrix = ctx.data
        g_mu = -2.0 * data.pullback(grad).t() + 2.0 * mu * grad.sum(1)[None, :]
        return None, g_mu


def row_products(data: EmbeddingMatrix, p: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """(X @ P)^T, or ((X*X) @ P)^T, as R x n, with a gradient for P only; see `_RowProducts`."""
    return _RowProducts.apply(data, p, squared)


def split_precision(data: EmbeddingMatrix, theta: torch.Tensor) -> bool:
    """Whether theta (2 x R) holds two log-precisions per restart: embedding columns, evidence columns.

    A spherical region searched with label evidence has u = tau ||z - mu||^2 + tau_e ||e - mu_e||^2
    (z the embedding columns, e the evidence ones), so it can learn how much the label matters. With
    one embedding column and one evidence column this is the diagonal shape, the same u either way.
    """
    return data.tail > 0 and theta.shape[0] == 2


def evidence_distances(data: EmbeddingMatrix, mu: torch.Tensor) -> torch.Tensor:
    """||e_i - mu_e,r||^2 over the evidence columns only (R x n), clamped at 0: one pass over the n x c block."""
    assert data.evidence is not None and data.evidence_sq_norms is not None
    mu_e = mu[mu.shape[0] - data.tail :]
    dist = (data.evidence @ mu_e).t() * -2.0 + data.evidence_sq_norms[None, :] + (mu_e * mu_e).sum(0)[:, None]
    return torch.clamp(dist, min=0.0)


def scaled_distances(data: EmbeddingMatrix, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """u[r, i] = sum_j tau[j, r] (x[i, j] - mu[j, r])^2 with tau = exp(theta) / d, for every restart (R x n).

    Spherical (theta is 1 x R): u = tau * (||x||^2 - 2 x.mu + ||mu||^2), two passes over X a step
    (`_SphericalDistances`).
    Spherical with its own evidence precision (theta is 2 x R, `split_precision`): the same two passes
    plus one over the n x c evidence block.
    Diagonal (theta is d x R): u = (X*X) @ tau - 2 X @ (tau*mu) + sum(tau*mu^2), four passes.
    Rounding can make the expanded form slightly negative; it is clamped at 0.
    """
    d = data.shape[1]
    tau = torch.exp(theta) / d
    if theta.shape[0] == 1:
        dist = _SphericalDistances.apply(data, mu)
        return torch.clamp(dist, min=0.0) * tau.t()
    if split_precision(data, theta):  # embedding part = all columns minus the evidence part
        dist_ev = evidence_distances(data, mu)
        dist_emb = torch.clamp(_SphericalDistances.apply(data, mu) - dist_ev, min=0.0)
        return dist_emb * tau[0][:, None] + dist_ev * tau[1][:, None]
    u = row_products(data, tau, squared=True) - 2.0 * row_products(data, tau * mu) + (tau * mu * mu).sum(0)[:, None]
    return torch.clamp(u, min=0.0)


def support_rescale(u: torch.Tensor, active: torch.Tensor | None, bound: float | None) -> torch.Tensor:
    """Factor f (one per restart, <= 1) such that min over active examples of f*u is <= `bound`, the
    kernel's `max_min_u` (spotlight/contract/kernel.py SPECS); None (a kernel 1 on a core of S rows, never empty)
    leaves every f at 1.

    `active` masks the examples with positive weight (None: all). Multiplying every precision of a
    restart by f multiplies its u by f, so this is the projection
    that keeps a region's support from ever emptying (the flat kernel's NaN trap) at no extra pass.
    """
    if bound is None:
        return torch.ones(u.shape[0], dtype=u.dtype, device=u.device)
    with torch.no_grad():
        u_min = u.amin(1) if active is None else torch.where(active[None, :], u, float("inf")).amin(1)
        return support_factor(u_min, bound)


def support_factor(u_min: torch.Tensor, bound: float) -> torch.Tensor:
    """`support_rescale`'s factor from each restart's smallest active u (a step that has it already)."""
    f = torch.where(u_min > bound, u_min.reciprocal().mul_(bound), 1.0)  # bound / u_min, as torch computes it
    return torch.nan_to_num(f, nan=1.0, posinf=1.0)


def weighted_entropy(wk: torch.Tensor, total: torch.Tensor, codes: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Entropy in bits of the kernel-weighted distribution of integer codes (labels/predictions), per restart."""
    mass = torch.zeros(wk.shape[0], n_classes, dtype=wk.dtype, device=wk.device).index_add(1, codes, wk)
    p = mass / total[:, None]
    return -(p * torch.log2(torch.clamp(p, min=1e-12))).sum(1)


@dataclass
class Regularisers:
    """Entropy penalties: integer codes per example, their number of classes, and the coefficient
    in standardised-score units per bit."""

    codes: list[torch.Tensor]
    n_classes: list[int]
    coeffs: list[float]


@dataclass
class Evaluation:
    """One step's per-restart quantities (all R-vectors)."""

    value: torch.Tensor  # weighted mean score minus regularisers: what "best" means
    penalised: torch.Tensor  # value minus the barrier: what is maximised
    total: torch.Tensor  # total kernel weight sum_i w_i k_i


def _barrier_gap(total: torch.Tensor, size: float, slack: float) -> torch.Tensor:
    gap = size + slack - total
    return gap * (gap > 0)  # clamp at 0 for torch tensors and numpy arrays alike


def barrier_penalty(total: torch.Tensor, size: float, slack: float, scale: float) -> torch.Tensor:
    """Quadratic barrier: scale * (total - (size + slack))^2 / slack^2 when total < size + slack, else 0."""
    return _penalty_of_gap(_barrier_gap(total, size, slack), slack, scale)


def _penalty_of_gap(gap: torch.Tensor, slack: float, scale: float) -> torch.Tensor:
    return scale * (gap / slack) ** 2


def barrier_terms(total: torch.Tensor, size: float, slack: float, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`barrier_penalty` and its slope d(-penalty)/d total (what the hand-derived steps add to dP/dk_i
    per unit weight), from one gap."""
    gap = _barrier_gap(total, size, slack)
    return _penalty_of_gap(gap, slack, scale), 2.0 * scale * gap / slack**2


def weighted_mean(
    k: torch.Tensor, scores: torch.Tensor, weights: torch.Tensor, regs: Regularisers | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, total) of every restart from its kernel values k (R x n), before any barrier:

    value = sum_i w_i k_i s_i / sum_i w_i k_i - sum_c coeff_c * H_c   (H: weighted entropy, bits)
    total = sum_i w_i k_i.
    """
    total = k @ weights
    safe_total = torch.clamp(total, min=torch.finfo(total.dtype).tiny)
    wk = k * weights[None, :] if regs is not None else None
    value = (k @ (weights * scores)) / safe_total
    if regs is not None and wk is not None:
        for codes, n_classes, coeff in zip(regs.codes, regs.n_classes, regs.coeffs, strict=True):
            if coeff > 0:
                value = value - coeff * weighted_entropy(wk, safe_total, codes, n_classes)
    return value, total


@dataclass(frozen=True)
class StepContext:
    """What every step of one search holds fixed: the rows, their sample weights and the size
    constraint. A variant builds it once (variants/base.py), so a step takes only what moves."""

    data: EmbeddingMatrix
    weights: torch.Tensor  # n
    active: torch.Tensor | None  # n bool: weight > 0; None when every weight is positive
    size: float  # S
    barrier_scale: float = 1.0
    regs: Regularisers | None = None
    unit_weights: bool = False  # every sample weight is 1 (the core's edge is then one kthvalue)
    # the last `stacked` matrix and the ws it was built from (mutable: the context itself stays fixed)
    _stacked: list[torch.Tensor] = field(default_factory=list, compare=False, repr=False)

    def stacked(self, ws: torch.Tensor) -> torch.Tensor:
        """ws (weights * scores) and the sample weights as the rows of one 2 x n matrix, what the
        barrier steps' derivative multiplies: built once per region (while ws is the same tensor),
        not once per step."""
        held = self._stacked
        if not held or held[0] is not ws:
            held[:] = [ws, torch.stack([ws, self.weights], 0)]
        return held[1]


Step = tuple[Evaluation, torch.Tensor, torch.Tensor, torch.Tensor]
"""(evaluation, d objective / d mu, d objective / d theta, f): one step of every restart; f is the
support projection factor of each restart (`support_rescale`), whose log the caller adds to theta."""


def barrier_slacks(n_total: float, size: float, steps: int) -> list[float]:
    """The tightening schedule: slack b_t geometric from (n - S) down to 0.05 S over `steps` steps."""
    start = max(n_total - size, 0.05 * size, 1e-12)
    end = max(0.05 * size, 1e-12)
    if steps <= 1:
        return [end]
    ratio = math.log(end / start) / (steps - 1)
    return [start * math.exp(ratio * t) for t in range(steps)]


@dataclass
class AdamState:
    """Adam moments for one parameter matrix; the learning rate is per restart (a column)."""

    m: torch.Tensor
    v: torch.Tensor
    t: int = 0


def adam_ascent(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: AdamState,
    lr: torch.Tensor,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """One Adam step *up* the gradient, in place; `lr` has one entry per restart (column)."""
    b1, b2 = betas
    state.t += 1
    state.m.mul_(b1).add_(grad, alpha=1 - b1)
    state.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    m_hat = state.m / (1 - b1**state.t)
    v_hat = state.v / (1 - b2**state.t)
    m_hat.mul_(lr)  # lr * m_hat / (sqrt(v_hat) + eps), in that order, with no temporary of its own
    param.addcdiv_(m_hat, v_hat.sqrt_().add_(eps))
