"""`search`: find the spotlights (high- or low-loss regions of embedding space) one after another."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spotlight.params import SearchParams
from worker.engine import ballfit, core, evidence_check, grow
from worker.engine.prepare import (
    ArrayLike,
    Frame,
    add_evidence,
    as_vector,
    local_dimension,
    losses_from_logits,
    project_pca,
    resolve_device,
    standardise,
)
from worker.engine.result import Region, SearchCanceled, SearchResult, SearchResume, SearchYielded
from worker.engine.tuning import DEFAULT_TUNING, Tuning

# kernel="auto": 'ball' when the intrinsic dimension of a row's spotlight-sized neighbourhood among the
# standardised embeddings (`prepare.local_dimension`, k) is above this, else 'gaussian'. Measured
# (docs/engine.md): digits embeddings 4.8-5.8, where the gaussian wins; the 16-d cross-class clouds
# 9.1-9.4, gaussian kept (the ball scored higher there too); ten 32 / 64 / 128 / 256-d gaussian
# classes 14.1 / 20.3-21.1 / 29.5-29.8 / 42-44 and the d = 256 / 512 planted-slice clouds 53 / 75,
# where the ball wins. 12 leaves a factor of 1.28 above the cross-class clouds, 1.17 below the 32-d
# classes and 1.7 below the 64-d ones.
AUTO_BALL_ABOVE = 12.0
# kernel="auto" runs the ball only when the spotlight size S counts at least this many rows per
# embedding dimension d (after PCA). Why: the ball's centre and its classifier refits are d-dimensional
# rules fitted to S rows; with S far below d such a rule can pick out almost any S rows (the highest
# losses, wherever they lie), so the "region" is noise that holds on no other rows. Measured
# (docs/engine.md, bench.real): real 384-d sentence embeddings with n = 1 664 (S = 34, S/d = 0.09),
# where the ball lost to the gaussian (and returned tight noise on shuffled losses); the planted
# high-dimension slices and clustered classes, where the ball wins, have S/d = 0.78-12.5. 0.25 sits
# a factor of ~3 from each side.
AUTO_BALL_MIN_ROWS_PER_DIM = 0.25
# deflation="tails": scores times (1 - k/max k)^this after each region (see `deflate`); chosen on the
# multi-mode benchmark among 1 (the paper), 4, 8 and 16 (docs/engine.md).
DEFLATION_POWER = 8

Progress = Callable[[int, int, int], None]
ShouldStop = Callable[[], bool]


def search(
    embeddings: ArrayLike,
    losses: ArrayLike | None,
    params: SearchParams | dict[str, Any] | None = None,
    *,
    logits: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    predictions: ArrayLike | None = None,
    sample_weights: ArrayLike | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    should_yield: ShouldStop | None = None,
    resume: SearchResume | None = None,
    weights_out: np.ndarray | None = None,
    tuning: Tuning = DEFAULT_TUNING,
) -> SearchResult:
    r"""Find `params.n_spotlights` regions of embedding space where the model does unusually badly (or well).

    A region is a kernel with centre :math:`\mu` and precision :math:`\tau` (a scalar for the
    ``spherical`` shape, one per dimension for ``diagonal``). With
    :math:`u_i = \sum_j \tau_j (x_{ij} - \mu_j)^2`, the kernels are

    - ``flat`` (the published paper): :math:`k_i = \max(0, 1 - u_i)`
    - ``gaussian``: :math:`k_i = \exp(-u_i / 2)`
    - ``ball``: :math:`k_i = \exp(-\max(0, u_i - \rho) / 2)`, 1 on the core of rows nearest the
      centre that count :math:`S` (:math:`\rho` is the u of the row that closes it, reported as
      ``radius_u``), so :math:`\sum_i w_i k_i \ge S` holds by construction and no barrier applies
    - ``auto`` (the default): ``ball`` when a row's spotlight-sized neighbourhood among the
      standardised embeddings has high intrinsic dimension (`prepare.local_dimension` above
      ``AUTO_BALL_ABOVE``, clustered or not) and S counts at least ``AUTO_BALL_MIN_ROWS_PER_DIM``
      rows per dimension, else
      ``gaussian``; each region's ``kernel`` is the one that ran

    and the objective (``max_loss``; ``min_loss`` uses :math:`-\ell`) is the kernel-weighted mean
    loss :math:`L = \sum_i w_i k_i \ell_i / \sum_i w_i k_i`, minus ``label_entropy_coeff`` and
    ``prediction_entropy_coeff`` times the entropy (bits) of the weighted label/prediction
    distribution, subject to the spotlight size :math:`\sum_i w_i k_i \ge S` with
    :math:`S` = ``spotlight_size`` times :math:`\sum_i w_i` (a fraction) or the count itself.

    Parameters
    ----------
    embeddings : array of shape (n, d)
        Any float dtype (numpy, memory-mapped numpy or torch); used as float32.
    losses : array of shape (n,) or None
        Per-example losses; None to compute cross-entropy from ``logits`` and ``labels``.
    params : SearchParams or dict
        Validated search parameters (see `spotlight.params.SearchParams`); None = defaults.
    logits : array of shape (n, c), optional
        With ``labels``, gives the losses; with ``prediction_entropy_coeff`` > 0 and no
        ``predictions``, their argmax gives the predictions.
    labels, predictions : int arrays of shape (n,), optional
        Label evidence (``evidence_weight`` > 0, the default: one-hot columns appended to the
        standardised embeddings, see `spotlight.evidence`); the entropy penalties.
    sample_weights : array of shape (n,), optional
        Non-negative weight (count) of each example, :math:`w_i`; all ones by default.
    progress : callable(spotlight, step, steps), optional
        Called after every optimiser step; ``steps`` is the cap (the search may stop earlier; for
        the spherical ``ball`` it is the step budget, `Tuning.ball_steps`, or the cap if lower).
    should_stop : callable() -> bool, optional
        Polled before every step; returning True raises `SearchCanceled`.
    should_yield : callable() -> bool, optional
        Polled once a region is done and more remain; returning True raises `SearchYielded`
        carrying the regions found so far.
    tuning : Tuning, optional
        The optimiser's schedule (`worker.engine.tuning`); benchmarks and tests pass their own.
    resume : SearchResume, optional
        The regions (and their n x j kernel values) of a search that yielded: this call finds
        regions j, j+1, ... and returns all of them, as an uninterrupted search would have.
    weights_out : array of shape (n, n_spotlights), float32, optional
        Where to write the kernel values (returned as the result's `weights`): the caller may pass
        a memory-mapped file, so the n x k matrix need not sit in the process's memory. Default: a
        new in-memory array.

    Returns
    -------
    SearchResult
        One `Region` per spotlight in the caller's coordinates, the n x k matrix of kernel
        values, the losses searched, the device and the wall time. Nothing in it is NaN or inf.

    Raises
    ------
    ValueError
        Inputs of the wrong shape, NaN/inf inputs, negative or all-zero sample weights, an
        entropy penalty without its labels/predictions, CUDA requested but absent.
    SearchCanceled
        ``should_stop()`` returned True.
    SearchYielded
        ``should_yield()`` returned True; its ``partial`` is the result so far.

    Notes
    -----
    Constraint. It is enforced by the authors' tightening quadratic barrier: with the slack
    :math:`b_t` falling geometrically from :math:`n - S` to :math:`0.05 S` over the first 150
    steps (or the whole cap, if lower), the optimiser maximises
    :math:`L - \mathrm{barrier\_scale} \cdot (\sum w k - (S + b_t))^2 / b_t^2` whenever
    :math:`\sum w k < S + b_t`. The region returned is the best *feasible* iterate seen
    (:math:`\sum w k \ge S`), not the last one; if none was feasible, the one with the largest total
    weight, flagged ``feasible=False``.

    Optimisation. Adam on :math:`(\mu, \log\tau)` in standardised coordinates (embeddings centred
    and divided by one scale, so results do not depend on the units of x), ``restarts`` starts at
    once: the data mean and examples drawn at random (``seed``) among the highest-loss ones. With
    label evidence a spherical gaussian/flat region has two log-precisions, embedding and evidence
    columns (``evidence_precision="learned"``), both starting at the same value. Each
    restart's learning rate halves after 10 steps without improvement; the search stops once every
    restart has halved 4 times after the barrier is tight, or at ``steps``. The spherical ``ball``
    has no barrier: it runs 20 steps (`Tuning.ball_steps`). Its first starts are centres along a
    least-squares fit of the scores on :math:`(x, \|x\|^2)` (`_regression_starts`); after the steps
    the up to 64 core members nearest the centre are tried as the centre (`_member_centres`), then
    the centre is refitted as the ball that best separates its neighbourhood's highest-scoring rows
    (`_classifier_refits`, a small logistic regression), each change kept only if the core's mean
    score rises, and last its edge width is set to the exact 1-d maximum of the objective for that
    centre (`_fit_edge`). The schedule's constants are a `Tuning` (``tuning``).

    Cost. Distances come from :math:`\|x\|^2 - 2 x\cdot\mu + \|\mu\|^2` with :math:`\|x\|^2`
    precomputed, all restarts in one product :math:`X M`; a step is two passes over X (four for
    ``diagonal``), O(n d), with no d x d matrix.

    Never NaN. After every step each restart's precision is scaled down, if needed, so that its
    nearest example has :math:`u \le 0.9` (flat) or :math:`u \le 40` (gaussian): the flat kernel's
    support can never empty, the gaussian never underflows, and the weighted mean is never 0/0.

    Later regions. After region j, every loss score is multiplied by :math:`(1 - k_i / \max k)^8`
    (``deflation="tails"``) or :math:`1 - k_i / \max k` (``"paper"``), so the next region shows a
    weak spot the earlier ones do not cover (the losses reported stay the original ones).

    Examples
    --------
    >>> import numpy as np
    >>> from worker.engine import search
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 8)).astype(np.float32)
    >>> loss = (np.linalg.norm(x - 1.5, axis=1) < 3.0).astype(np.float32)  # 1 % of examples fail
    >>> result = search(x, loss, {"n_spotlights": 1, "device": "cpu"})
    >>> result.regions[0].lift > 5  # the region's failure rate is over 5x the dataset's
    True
    """
    started = time.perf_counter()
    p = _as_params(params)
    x_shape = tuple(embeddings.shape)
    if len(x_shape) != 2 or x_shape[0] < 1 or x_shape[1] < 1:
        raise ValueError(f"embeddings must have shape (n, d) with n, d >= 1, got {x_shape}")
    n = x_shape[0]
    labels_v = as_vector(labels, n, "labels", np.int64)
    preds_v = as_vector(predictions, n, "predictions", np.int64)
    if losses is None:
        if logits is None or labels_v is None:
            raise ValueError("give losses, or logits together with labels")
        loss_v = losses_from_logits(logits, labels_v)
    else:
        given = as_vector(losses, n, "losses")
        assert given is not None  # losses is not None here
        loss_v = given
    if preds_v is None and logits is not None and (p.prediction_entropy_coeff > 0 or p.evidence_weight > 0):
        lg = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
        preds_v = np.asarray(lg).argmax(1).astype(np.int64)
    if p.label_entropy_coeff > 0 and labels_v is None:
        raise ValueError("label_entropy_coeff > 0 needs labels")
    if p.prediction_entropy_coeff > 0 and preds_v is None:
        raise ValueError("prediction_entropy_coeff > 0 needs predictions (or logits)")
    w = as_vector(sample_weights, n, "sample_weights")
    if w is None:
        w = np.ones(n)
    if np.any(w < 0) or not w.sum() > 0:
        raise ValueError("sample_weights must be non-negative with a positive sum")

    if p.checks_evidence(labels_v is not None):
        x_np = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
        if not evidence_check.keep_evidence(search, x_np, loss_v, p, labels_v, preds_v, w):
            p = p.model_copy(update={"evidence_weight": 0.0})
    device = resolve_device(p.device)
    with _threads_for(device, n * x_shape[1], tuning.single_thread_below):
        return _search(
            embeddings,
            loss_v,
            w,
            labels_v,
            preds_v,
            p,
            device,
            progress,
            should_stop,
            started,
            should_yield,
            resume,
            weights_out,
            tuning,
        )


@contextlib.contextmanager
def _threads_for(device: torch.device, entries: int, single_below: int) -> Iterator[None]:
    """One CPU thread for small problems' torch ops (see `Tuning.single_thread_below`), restored afterwards."""
    before = torch.get_num_threads()
    if device.type == "cpu" and entries < single_below and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _search(
    embeddings,
    loss_v,
    w,
    labels_v,
    preds_v,
    p: SearchParams,
    device: torch.device,
    progress: Progress | None,
    should_stop: ShouldStop | None,
    started: float,
    should_yield: ShouldStop | None = None,
    resume: SearchResume | None = None,
    weights_out: np.ndarray | None = None,
    tuning: Tuning = DEFAULT_TUNING,
) -> SearchResult:
    n, d = embeddings.shape
    z, frame = standardise(embeddings, w, device, core.row_chunk(n, d, device))
    if p.pca_components is not None:
        z, frame = project_pca(z, w, frame, p.pca_components, core.row_chunk(n, d, device))
    if p.kernel == "auto":
        dim = local_dimension(z, w, core.row_chunk(n, d, device))
        p = p.model_copy(update={"kernel": resolve_auto(dim, p.size_count(float(w.sum())) / z.shape[1])})
    z, frame = add_evidence(z, frame, labels_v, preds_v, w, p.evidence, p.evidence_weight)
    problem = _Problem.build(z, loss_v, w, labels_v, preds_v, p, device, tail=frame.tail, tuning=tuning)

    if weights_out is not None and (weights_out.shape != (n, p.n_spotlights) or weights_out.dtype != np.float32):
        raise ValueError(
            f"weights_out must be float32 of shape ({n}, {p.n_spotlights}), not {weights_out.dtype} {weights_out.shape}"
        )
    k_all = weights_out if weights_out is not None else np.zeros((n, p.n_spotlights), dtype=np.float32)
    regions: list[Region] = []
    scores = problem.scores.clone()
    if resume is not None:
        scores = _resume(resume, regions, k_all, scores, p)
    for j in range(len(regions), p.n_spotlights):
        found = _optimise_region(problem, scores, p, j, progress, should_stop)
        size_j = problem.size
        if p.sizing == "grow":
            theta, size_j = grow.grow_region(
                problem.data, found.mu, found.theta, p.kernel, problem.weights, scores, problem.size
            )
            found = dataclasses.replace(found, theta=theta)
        with torch.no_grad():
            k, radius_u = core.region_weights(problem.data, found.mu, found.theta, p.kernel, problem.weights, size_j)
        k_np = k.cpu().numpy().astype(np.float32)
        k_all[:, j] = k_np
        regions.append(_describe(j, k_np, found, frame, loss_v, w, size_j, p, radius_u))
        scores = deflate(scores, k, p.deflation)
        if should_yield is not None and j + 1 < p.n_spotlights and should_yield():
            raise SearchYielded(
                _result(regions, k_all[:, : j + 1].copy(), loss_v, z, started, frame.basis, problem.data.passes)
            )
    return _result(regions, k_all, loss_v, z, started, frame.basis, problem.data.passes)


def resolve_auto(k: float, rows_per_dim: float = math.inf) -> str:
    """The kernel `kernel="auto"` runs for a measured neighbourhood dimension k (`prepare.local_dimension`)
    and the spotlight size's rows per embedding dimension, S / d.

    The ball when k > AUTO_BALL_ABOVE (high intrinsic dimension around each row, clustered or not:
    a gaussian that must count S rows spreads over many more) and S / d >= AUTO_BALL_MIN_ROWS_PER_DIM
    (enough rows to pin a d-dimensional ball down); the gaussian otherwise (a low-dimensional
    manifold, where it ranks the rest of a slice larger than the region, or too few rows per dimension).
    """
    return "ball" if k > AUTO_BALL_ABOVE and rows_per_dim >= AUTO_BALL_MIN_ROWS_PER_DIM else "gaussian"


def _result(
    regions: list[Region],
    weights: np.ndarray,
    loss_v,
    z: torch.Tensor,
    started: float,
    basis: np.ndarray | None,
    passes: int = 0,
) -> SearchResult:
    return SearchResult(
        regions=regions,
        weights=weights,
        losses=loss_v.astype(np.float32),
        device=str(z.device) if z.device.type == "cpu" else f"cuda:{z.device.index or 0}",
        elapsed_s=time.perf_counter() - started,
        basis=basis,
        passes=passes,
    )


def _resume(
    resume: SearchResume, regions: list[Region], k_all: np.ndarray, scores: torch.Tensor, p: SearchParams
) -> torch.Tensor:
    """Take a yielded search's regions into `regions` and `k_all`; the scores deflated by them, in order.

    The columns are the float32 kernel values the earlier run deflated by, so the scores come out
    as they were when it stopped (region j's restarts are seeded by [seed, j] either way).
    """
    done = len(resume.regions)
    weights = np.asarray(resume.weights, dtype=np.float32)
    if done > p.n_spotlights or weights.shape != (k_all.shape[0], done):
        raise ValueError(
            f"cannot resume from {done} region(s) with weights of shape {weights.shape}: "
            f"expected at most {p.n_spotlights} regions and shape ({k_all.shape[0]}, {done})"
        )
    regions.extend(resume.regions)
    k_all[:, :done] = weights
    for j in range(done):
        k = torch.from_numpy(np.ascontiguousarray(weights[:, j])).to(scores.device)
        scores = deflate(scores, k, p.deflation)
    return scores


def deflate(scores: torch.Tensor, k: torch.Tensor, deflation: str) -> torch.Tensor:
    """The scores the next region is sought on, once a region with kernel values k was found.

    'paper': s (1 - k/max k), the authors' re-weighting. It removes a region's core only: with a
    gaussian kernel the tails keep most of their score, and on the multi-mode benchmark later regions
    found the same weak spot again (two of three modes, each twice; docs/engine.md).
    'tails': s (1 - k/max k)^DEFLATION_POWER, which also takes out the tails (a row at half the
    peak weight keeps 0.4 % of its score, one at a tenth keeps 43 %), so each later region is a weak
    spot the earlier ones do not cover.
    """
    k_max = float(k.max())
    if k_max <= 0:
        return scores
    keep = 1.0 - k / k_max
    return scores * (keep if deflation == "paper" else keep**DEFLATION_POWER)


def _as_params(params: SearchParams | dict[str, Any] | None) -> SearchParams:
    if params is None:
        return SearchParams()
    if isinstance(params, SearchParams):
        return params
    return SearchParams.model_validate(params)


@dataclass
class _Problem:
    """Everything the optimiser needs, on the device, in standardised units."""

    data: core.EmbeddingMatrix  # the standardised n x d float32 embeddings
    weights: torch.Tensor  # n
    active: torch.Tensor | None  # n bool: weight > 0; None when every weight is positive
    scores: torch.Tensor  # n, >= 0: losses (or their negatives), shifted and divided by their std
    size: float  # S
    n_total: float  # sum of weights
    regs: core.Regularisers | None
    unit_weights: bool = False  # every sample weight is 1 (the core's edge is then one kthvalue)
    gram: torch.Tensor | None = None  # [X, -||x||^2, 1]^T W [...], computed once when a 'ball' start needs it
    tuning: Tuning = DEFAULT_TUNING

    @classmethod
    def build(
        cls,
        z,
        loss_v,
        w,
        labels_v,
        preds_v,
        p: SearchParams,
        device: torch.device,
        tail: int = 0,
        tuning: Tuning = DEFAULT_TUNING,
    ) -> _Problem:
        data = core.EmbeddingMatrix(z, tail=tail)
        raw = loss_v if p.objective == "max_loss" else -loss_v
        raw = raw - raw.min()
        spread = math.sqrt(float(np.average((raw - np.average(raw, weights=w)) ** 2, weights=w)))
        unit = spread if spread > 1e-12 * max(1.0, float(np.abs(raw).max())) else 1.0
        scores = torch.from_numpy((raw / unit).astype(np.float32)).to(device)
        if spread <= 1e-12 * max(1.0, float(np.abs(raw).max())):
            scores = torch.zeros_like(scores)  # all losses equal: nothing to find, only the size
        regs = None
        pairs = [(labels_v, p.label_entropy_coeff), (preds_v, p.prediction_entropy_coeff)]
        if any(c > 0 for _, c in pairs):
            regs = core.Regularisers(codes=[], n_classes=[], coeffs=[])
            for codes, coeff in pairs:
                if coeff > 0 and codes is not None:
                    # The entropy does not depend on which code a class has: codes renumbered 0..c-1
                    # keep its R x c mass table small when codes are sparse (ids such as 10**9).
                    distinct, compact = np.unique(codes, return_inverse=True)
                    regs.codes.append(torch.from_numpy(compact.astype(np.int64).ravel()).to(device))
                    regs.n_classes.append(int(distinct.size))
                    regs.coeffs.append(coeff / unit)
        wt = torch.from_numpy(w.astype(np.float32)).to(device)
        n_total = float(w.sum())
        active = None if bool((wt > 0).all()) else wt > 0
        return cls(
            data=data,
            weights=wt,
            active=active,
            scores=scores,
            size=float(p.size_count(n_total)),
            n_total=n_total,
            regs=regs,
            unit_weights=bool((wt == 1).all()),
            tuning=tuning,
        )


@dataclass
class _Found:
    mu: torch.Tensor  # d
    theta: torch.Tensor  # 1 or d
    feasible: bool
    steps_run: int
    converged: bool


def _initial_starts(problem: _Problem, scores: torch.Tensor, p: SearchParams, j: int) -> torch.Tensor:
    """Starting centres (d x R): the data mean, and examples drawn among the highest scores; for
    'ball', the best two centres of `_regression_starts` first."""
    rng = np.random.default_rng([p.seed, j])
    fitted: list[torch.Tensor] = []
    if p.kernel in core.CORE_KERNELS:
        fitted = _regression_starts(problem, scores, min(2, p.restarts))
    s = scores.cpu().numpy()
    order = np.argsort(-s, kind="stable")
    if problem.active is not None:
        order = order[problem.active.cpu().numpy()[order]]
    pool = order[: max(p.restarts, int(math.ceil(problem.size)))]
    n_pick = min(p.restarts - 1, len(pool)) if p.restarts > 1 else 1
    picks = rng.choice(pool, size=n_pick, replace=False) if len(pool) else np.array([], dtype=np.int64)
    cols = [problem.data.x[int(i)] for i in picks]
    if p.restarts > 1 or not cols:
        cols.insert(0, torch.zeros(problem.data.x.shape[1], dtype=problem.data.x.dtype, device=problem.data.x.device))
    return torch.stack((fitted + cols)[: p.restarts], 1).contiguous()


def _regression_starts(problem: _Problem, scores: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Centres for the 'ball' kernel from a least-squares fit of the scores on (x, -||x||^2, 1).

    Why: a ball's core is the rows with the smallest ||x||^2 - 2 x.mu, a linear rule in (x, ||x||^2),
    so the fitted s ~ x.w - b ||x||^2 + c points mu along w. Its scale (how far out the centre sits:
    near the data for a ball, far outside for a cap, where the core becomes a half-space) is the one
    number the fit does not pin down, so `Tuning.regression_grid` scales t (mu = t w / 2) are tried and the
    `count` whose cores have the highest weighted mean score, not adjacent on the grid, are returned.
    Cost: one (d + 2)^2 Gram matrix per search (cached), two passes over X and one kthvalue per region.
    """
    data = problem.data
    x = data.x
    if problem.gram is None:
        problem.gram = _gram(data, problem.weights)
    gram = problem.gram
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


def _core_means(problem: _Problem, ws: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each 'ball' centre (c x d), the weighted mean score of its core (the S nearest examples), and
    the c x n values ||x||^2 - 2 x.mu that order the rows by distance.

    Why the core and not the objective at the found edge width: the edge was learned for the found
    centre, and another centre with the same width can score lower only because more rows sit just
    beyond its core. The core's mean is what the objective tends to as the edge sharpens (which it
    does: docs/engine.md), and it is the mean over the region's members, what a person reads.
    """
    data = problem.data
    dist = data.project(centres).mul_(-2.0).add_(data.sq_norms[None, :])
    edge, _ = core.ball_core(dist, problem.weights, problem.size, problem.unit_weights)
    inside = (dist <= edge[:, None]).to(ws.dtype)
    means = (inside @ ws) / torch.clamp(inside @ problem.weights, min=torch.finfo(ws.dtype).tiny)
    return means, dist


def _member_centres(problem: _Problem, scores: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The found 'ball' centre, or the core member that makes a better centre, with its core's mean score.

    Why: in high dimension a weak spot that is the neighbourhood of a row is found only near that
    row, a narrow basin that gradient steps from elsewhere rarely reach; they do reach a core that
    holds much of the weak spot, and so that row. Each of up to `Tuning.member_candidates` core rows (the
    highest-scoring first) is tried as the centre, its own core computed exactly; the best replaces
    the centre only if its core's mean score (`_core_means`) is higher. Cost: about
    member_candidates / R optimiser steps once per region, in chunks of member_chunk candidates.
    """
    data = problem.data
    ws = problem.weights * scores
    means, dist = _core_means(problem, ws, mu[None, :])
    edge, _ = core.ball_core(dist, problem.weights, problem.size, problem.unit_weights)
    members = torch.nonzero(dist[0] <= edge[0])[:, 0]
    members = members[torch.argsort(dist[0, members], stable=True)][: problem.tuning.member_candidates]
    best_value, best_row = float(means[0]), -1
    chunk = problem.tuning.member_chunk
    for i in range(0, members.numel(), chunk):
        rows = members[i : i + chunk]
        values, _ = _core_means(problem, ws, data.x[rows])
        j = int(torch.argmax(values))
        if float(values[j]) > best_value:
            best_value, best_row = float(values[j]), int(rows[j])
    return (mu if best_row < 0 else data.x[best_row].clone()), best_value


def _classifier_refits(problem: _Problem, scores: torch.Tensor, mu: torch.Tensor, value: float) -> torch.Tensor:
    """The 'ball' centre improved by refitting it as a classifier of its neighbourhood, while that helps.

    Why: a ball's core is a linear rule in (x, ||x||^2), and the region a person wants (the rows
    nearest a point, possibly far outside the data: a cap) is then the rule that separates the
    highest-scoring rows of the neighbourhood from the rest. Gradient steps on the kernel's edge see
    only the rows at the edge and stop where the core mixes most of the weak spot with ordinary
    rows; the classifier sees all `Tuning.refit_rows` * S nearest rows at once, labels the S highest-scoring
    of them positive, and its rule w.x - c ||x||^2 (c > 0) is the ball centred at w / 2c. Each round
    refits around the last accepted centre; a centre is accepted only if its core's mean score
    (`_core_means`, `value` for `mu`) is higher. Measured on the planted caps (docs/engine.md):
    top-S recall 0.74-0.76 -> 0.92-0.95. Cost per round: one pass over X, one kthvalue and an
    L-BFGS fit on refit_rows * S rows (no d x d matrix).
    """
    data = problem.data
    ws = problem.weights * scores
    best_mu, best_value = mu, value
    dist = data.project(mu[None, :]).mul_(-2.0).add_(data.sq_norms[None, :])
    tn = problem.tuning
    sizes = sorted(
        {tn.refit_rows * problem.size, max(tn.refit_rows * problem.size, tn.refit_rows_per_dim * data.shape[1])}
    )
    for _ in range(tn.refit_rounds):
        fitted = []
        for around in sizes:
            edge, _ = core.ball_core(dist, problem.weights, around, problem.unit_weights)
            rows = torch.nonzero((dist[0] <= edge[0]) & (problem.weights > 0))[:, 0]
            candidate = ballfit.fit_ball(
                data, rows, scores[rows], problem.weights[rows], problem.size, tn.refit_ridge, tn.refit_iterations
            )
            if candidate is not None:
                fitted.append(candidate)
        if not fitted:
            break
        values, dists = _core_means(problem, ws, torch.stack(fitted))
        i = int(torch.argmax(values))
        if not float(values[i]) > best_value:
            break
        best_mu, best_value, dist = fitted[i], float(values[i]), dists[i : i + 1]
    return best_mu


def _gram(data: core.EmbeddingMatrix, weights: torch.Tensor) -> torch.Tensor:
    """A^T diag(weights) A for A = [X, -||x||^2, 1] in float64, a row chunk at a time."""
    d = data.shape[1]
    data.passes += 1
    out = torch.zeros(d + 2, d + 2, dtype=torch.float64, device=data.x.device)
    for i in range(0, data.shape[0], data.chunk):
        xc = data.x[i : i + data.chunk].double()
        a = torch.cat([xc, -data.sq_norms[i : i + data.chunk, None].double(), torch.ones_like(xc[:, :1])], 1)
        out.addmm_(a.t(), a * weights[i : i + data.chunk, None].double())
    return out


def _initial_theta(problem: _Problem, mu: torch.Tensor, p: SearchParams) -> torch.Tensor:
    """Log-precision putting each start's median active example at u = `Tuning.init_median_u`[kernel]."""
    d, r = mu.shape
    with torch.no_grad():
        u0 = core.scaled_distances(problem.data, mu, torch.zeros(1, r, device=mu.device))
        if p.kernel in core.CORE_KERNELS:  # measured from the core's edge
            u0 = u0 - core.ball_core(u0, problem.weights, problem.size, unit_weights=False)[0][:, None]
        med = (u0 if problem.active is None else u0[:, problem.active]).median(1).values
        theta = torch.where(med > 0, torch.log(problem.tuning.init_median_u[p.kernel] / med), torch.zeros_like(med))
        theta = theta.clamp(core.THETA_MIN, core.THETA_MAX)[None, :]
    return theta.expand(d if p.shape == "diagonal" else _spherical_rows(problem, p), r).contiguous()


def _spherical_rows(problem: _Problem, p: SearchParams) -> int:
    """Log-precisions per restart for the spherical shape: 2 (embedding, evidence: `core.split_precision`)
    when the search has evidence columns and `evidence_precision` is 'learned', else 1. Both start equal,
    so the first step is the tied search's. The 'ball' kernel keeps one (its hand-derived step is tied)."""
    split = problem.data.tail > 0 and p.evidence_precision == "learned" and p.kernel not in core.CORE_KERNELS
    return 2 if split else 1


def _optimise_region(
    problem: _Problem,
    scores: torch.Tensor,
    p: SearchParams,
    j: int,
    progress: Progress | None,
    should_stop: ShouldStop | None,
) -> _Found:
    """Batched Adam over all restarts for one region; returns the best feasible iterate seen.

    Gaussian and flat: the barrier tightens over `Tuning.tighten_steps`, then each restart runs until its
    plateau-halved learning rate has decayed. Spherical 'ball': `Tuning.ball_steps` steps move the centre,
    then the member centres, the refits and the exact edge fit (`_fit_edge`) finish the region.
    """
    tn = problem.tuning
    mu = _initial_starts(problem, scores, p, j)
    theta = _initial_theta(problem, mu, p)
    r = mu.shape[1]
    cap = p.steps
    tighten = max(1, min(cap, tn.tighten_steps))
    slacks = core.barrier_slacks(problem.n_total, problem.size, tighten)
    ball = p.kernel in core.CORE_KERNELS
    polished = ball and theta.shape[0] == 1  # the spherical ball: a fixed budget, then the polish steps
    if polished:
        warm, needed = max(1, min(cap, tn.ball_steps)), 0
    elif ball:
        warm, needed = max(1, min(cap, tn.ball_warmup)), tn.ball_halvings
    else:
        warm, needed = tighten, tn.max_halvings
    lr = torch.full((r,), p.learning_rate, dtype=mu.dtype, device=mu.device)
    adam_mu = core.AdamState(torch.zeros_like(mu), torch.zeros_like(mu))
    adam_theta = core.AdamState(torch.zeros_like(theta), torch.zeros_like(theta))

    neg_inf = torch.full((r,), -math.inf, device=mu.device)
    best_value, best_total = neg_inf.clone(), neg_inf.clone()
    best_mu, best_theta = mu.clone(), theta.clone()  # best feasible iterate per restart
    fall_mu, fall_theta = mu.clone(), theta.clone()  # largest-total iterate, when none is feasible
    plateau_best = neg_inf.clone()
    waits = torch.zeros(r, dtype=torch.long, device=mu.device)
    halvings = torch.zeros(r, dtype=torch.long, device=mu.device)
    steps_run, converged = 0, False
    weighted_scores = problem.weights * scores  # once per region, not once per step

    for t in range(cap):
        if should_stop is not None and should_stop():
            raise SearchCanceled(f"stopped during spotlight {j} at step {t}")
        slack = slacks[min(t, tighten - 1)]
        ev, g_mu, g_theta, f = core.objective_and_gradient(
            problem.data,
            mu,
            theta,
            scores,
            problem.weights,
            problem.active,
            p.kernel,
            problem.size,
            slack,
            p.barrier_scale,
            problem.regs,
            weighted_scores,
        )
        with torch.no_grad():
            theta += torch.log(f)[None, :]
            value, total, pen = ev.value, ev.total, ev.penalised
            better = (total >= problem.size) & (value > best_value)
            best_value = torch.where(better, value, best_value)
            best_mu = torch.where(better[None, :], mu, best_mu)
            best_theta = torch.where(better[None, :], theta, best_theta)
            bigger = total > best_total
            best_total = torch.where(bigger, total, best_total)
            fall_mu = torch.where(bigger[None, :], mu, fall_mu)
            fall_theta = torch.where(bigger[None, :], theta, fall_theta)

            core.adam_ascent(mu, g_mu, adam_mu, lr)
            core.adam_ascent(theta, g_theta, adam_theta, lr)
            theta.clamp_(core.THETA_MIN, core.THETA_MAX)

            if t >= warm - 1:
                improved = pen > plateau_best + tn.plateau_tol
                plateau_best = torch.where(improved, pen, plateau_best)
                waits = torch.where(improved, torch.zeros_like(waits), waits + 1)
                halve = waits >= tn.patience
                lr = torch.where(halve, lr * 0.5, lr)
                halvings += halve.long()
                waits = torch.where(halve, torch.zeros_like(waits), waits)
        steps_run = t + 1
        if progress is not None:
            progress(j, t, warm if polished else cap)  # the spherical ball runs its budget
        if t >= warm - 1 and bool((halvings >= needed).all()):
            converged = not polished or warm == tn.ball_steps  # a cap below the ball's budget cut it short
            break

    feasible = torch.isfinite(best_value)
    if bool(feasible.any()):
        i = int(torch.argmax(torch.where(feasible, best_value, neg_inf)))
        mu_i, theta_i = best_mu[:, i].clone(), best_theta[:, i].clone()
        if polished:
            mu_i, value_i = _member_centres(problem, scores, mu_i)
            mu_i = _classifier_refits(problem, scores, mu_i, value_i)
            theta_i = _fit_edge(problem, scores, mu_i)
        return _Found(mu_i, theta_i, True, steps_run, converged)
    i = int(torch.argmax(best_total))
    return _Found(fall_mu[:, i].clone(), fall_theta[:, i].clone(), False, steps_run, converged)


def _fit_edge(problem: _Problem, scores: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """The spherical 'ball' edge width (log-precision, shape 1) for a fixed centre: the exact 1-d maximum.

    Why: with the centre fixed the core and each row's distance beyond its edge, u0, are fixed, and the
    objective V(theta) = sum w s k / sum w k with k = exp(-exp(theta) u0 / (2 d)) is a function of one
    number, evaluated on a grid of thetas in one R x n product (no pass over X). Gradient steps approach
    it only slowly: the edge keeps sharpening for a hundred steps and more (docs/engine.md). V rises
    towards the core's mean as the edge sharpens and then stays flat, so the widest edge within
    `Tuning.plateau_tol` of the best is kept (rows beyond the core keep a ranking), never wider than
    the start's (the median row beyond the edge at u = init_median_u['ball']).
    Cost: one pass over X and 2 * ball_edge_grid kernel evaluations of the n rows.
    """
    tn, data = problem.tuning, problem.data
    d = data.shape[1]
    dist = data.project(mu[None, :]).mul_(-2.0).add_(data.sq_norms[None, :])
    edge, _ = core.ball_core(dist, problem.weights, problem.size, problem.unit_weights)
    beyond = torch.clamp(dist[0] - edge[0], min=0.0)
    if problem.active is not None:
        beyond = beyond[problem.active]
    med = float(beyond.median())
    low = math.log(tn.init_median_u["ball"] * d / med) if med > 0 else core.THETA_MIN
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


def _describe(
    j: int,
    k: np.ndarray,
    found: _Found,
    frame: Frame,
    loss: np.ndarray,
    w: np.ndarray,
    size: float,
    p: SearchParams,
    radius_u: float | None = None,
) -> Region:
    """A Region in the caller's units, from the kernel values and the chosen iterate (float64 stats)."""
    kw = k.astype(np.float64) * w
    total = float(kw.sum())
    mean_loss = float(np.average(loss, weights=w))
    weighted = float(kw @ loss / total) if total > 0 else mean_loss
    tiny = 1e-12 * max(1.0, abs(weighted))
    lift = weighted / mean_loss if abs(mean_loss) > tiny else 1.0
    dz = found.mu.shape[0]
    tau = np.exp(found.theta.double().cpu().numpy()) / dz
    if p.shape == "spherical" and tau.size == 2 and frame.tail:  # per column: embedding tau, evidence tau_e
        tau = np.concatenate([np.full(dz - frame.tail, tau[0]), np.full(frame.tail, tau[1])])
    per_dim = np.asarray(frame.precision(tau), dtype=np.float64).ravel()
    precision: float | np.ndarray = float(per_dim[0]) if p.shape == "spherical" else per_dim
    extra = frame.region_extra(found.mu.double().cpu().numpy(), np.atleast_1d(tau))
    if radius_u is not None:
        extra["radius_u"] = radius_u
    return Region(
        index=j,
        center=_finite_array(frame.center(found.mu.double().cpu().numpy())),
        precision=(
            float(_finite_array(np.asarray(precision))) if isinstance(precision, float) else _finite_array(precision)
        ),
        kernel=p.kernel,
        shape=p.shape,
        objective=p.objective,
        size_requested=size,
        total_weight=total,
        weighted_loss=weighted,
        mean_loss=mean_loss,
        lift=lift,
        feasible=bool(found.feasible and total >= size * (1 - 1e-5)),
        steps_run=found.steps_run,
        converged=found.converged,
        extra=extra,
    )


def _finite_array(a: np.ndarray) -> np.ndarray:
    """Clip to the finite float64 range: a guard, since every value here is finite by construction."""
    big = np.finfo(np.float64).max
    return np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0, posinf=big, neginf=-big)
