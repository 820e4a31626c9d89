"""`search`: find the spotlights (high- or low-loss regions of embedding space) one after another."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from spotlight.contract.params import SearchParams
from worker.engine import core, evidence_check, grow, variants
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
from worker.engine.problem import Found, Problem
from worker.engine.result import Region, SearchCanceled, SearchResult, SearchResume, SearchYielded
from worker.engine.tuning import DEFAULT_TUNING, Tuning
from worker.engine.variants import Variant

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
      ``gaussian`` (always with the ``diagonal`` shape: the ball is spherical only); each region's
      ``kernel`` is the one that ran

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
        Validated search parameters (see `spotlight.contract.params.SearchParams`); None = defaults.
    logits : array of shape (n, c), optional
        With ``labels``, gives the losses; with ``prediction_entropy_coeff`` > 0 and no
        ``predictions``, their argmax gives the predictions.
    labels, predictions : int arrays of shape (n,), optional
        Label evidence (``evidence_weight`` > 0, the default: one-hot columns appended to the
        standardised embeddings, see `spotlight.contract.evidence`); the entropy penalties.
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
    columns, both starting at the same value. Each
    restart's learning rate halves after 10 steps without improvement; the search stops once every
    restart has halved 4 times after the barrier is tight, or at ``steps``. The spherical ``ball``
    has no barrier: it runs 20 steps (`Tuning.ball_steps`). Its first starts are centres along a
    least-squares fit of the scores on :math:`(x, \|x\|^2)` (`variants.ball.regression_starts`); after the steps
    the up to 64 core members nearest the centre are tried as the centre (`member_centres`), then
    the centre is refitted as the ball that best separates its neighbourhood's highest-scoring rows
    (`classifier_refits`, a small logistic regression), each change kept only if the core's mean
    score rises, and last its edge width is set to the exact 1-d maximum of the objective for that
    centre (`fit_edge`). The schedule's constants are a `Tuning` (``tuning``).

    Cost. Distances come from :math:`\|x\|^2 - 2 x\cdot\mu + \|\mu\|^2` with :math:`\|x\|^2`
    precomputed, all restarts in one product :math:`X M`; a step is two passes over X (four for
    ``diagonal``), O(n d), with no d x d matrix.

    Never NaN. After every step each restart's precision is scaled down, if needed, so that its
    nearest example has :math:`u \le 0.9` (flat) or :math:`u \le 40` (gaussian): the flat kernel's
    support can never empty, the gaussian never underflows, and the weighted mean is never 0/0.

    Later regions. After region j, every loss score is multiplied by :math:`(1 - k_i / \max k)^8`
    (``deflation="tails"``) or :math:`1 - k_i / \max k` (``"paper"``), so the next region shows a
    weak spot the earlier ones do not cover (the losses reported stay the original ones), then
    divided by their weighted standard deviation (`restandardise`), the scale the first region saw.

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

    checked: list[SearchResult] = []
    if p.checks_evidence(labels_v is not None):
        x_np = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)

        def run(*args: Any, **kwargs: Any) -> SearchResult:
            checked.append(search(*args, **kwargs))
            return checked[-1]

        if not evidence_check.keep_evidence(run, x_np, loss_v, p, labels_v, preds_v, w):
            p = p.model_copy(update={"evidence_weight": 0.0})
    device = resolve_device(p.device)
    with _threads_for(device, n * x_shape[1], tuning.single_thread_below):
        result = _search(
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
    if checked:  # its searches ran on parts of the rows: counted as passes over all n rows
        rows = sum(r.passes * r.weights.shape[0] for r in checked)
        result.passes_by_phase["evidence check"] = rows / n
    return result


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
    # Rows of weight 0 (a job's held-out half) add nothing to the objective: the rows of positive weight
    # are put first and only they are searched (`Problem.searched`); a region's weights are then
    # computed over every row, and returned in the caller's order.
    order = _searched_first(w)
    if order is not None:
        loss_v, w = loss_v[order], w[order]
        labels_v = None if labels_v is None else labels_v[order]
        preds_v = None if preds_v is None else preds_v[order]
    z, frame = standardise(embeddings, w, device, core.row_chunk(n, d, device), order)
    if p.pca_components is not None:
        z, frame = project_pca(z, w, frame, p.pca_components, core.row_chunk(n, d, device))
    if p.kernel == "auto" and p.shape == "diagonal":  # the ball is spherical only
        p = p.model_copy(update={"kernel": "gaussian"})
    elif p.kernel == "auto":
        dim = local_dimension(z, w, core.row_chunk(n, d, device))
        p = p.model_copy(update={"kernel": resolve_auto(dim, p.size_count(float(w.sum())) / z.shape[1])})
    z, frame = add_evidence(z, frame, labels_v, preds_v, w, p.evidence, p.evidence_weight)
    every_row = Problem.build(z, loss_v, w, labels_v, preds_v, p, device, tail=frame.tail, tuning=tuning)
    problem = every_row if order is None else every_row.searched(int(np.count_nonzero(w > 0)))
    variant = variants.resolve(problem, p)
    weigher = variant if order is None else variants.resolve(every_row, p)
    m = problem.weights.shape[0]

    if weights_out is not None and (weights_out.shape != (n, p.n_spotlights) or weights_out.dtype != np.float32):
        raise ValueError(
            f"weights_out must be float32 of shape ({n}, {p.n_spotlights}), not {weights_out.dtype} {weights_out.shape}"
        )
    k_all = weights_out if weights_out is not None else np.zeros((n, p.n_spotlights), dtype=np.float32)
    loss_caller = loss_v if order is None else _unpermuted(loss_v, order)
    w_caller = w if order is None else _unpermuted(w, order)
    regions: list[Region] = []
    scores = problem.scores.clone()
    if resume is not None:
        scores = _resume(resume, regions, k_all, scores, p, problem.weights, None if order is None else order[:m])
    for j in range(len(regions), p.n_spotlights):
        found = _optimise_region(problem, variant, scores, p, j, progress, should_stop)
        size_j = problem.size
        if p.sizing == "grow":
            with problem.data.counting("grow"):
                theta, size_j = grow.grow_region(
                    problem.data, found.mu, found.theta, variant.size_shift, problem.weights, scores, problem.size
                )
            found = dataclasses.replace(found, theta=theta)
        with torch.no_grad(), problem.data.counting("region weights"):
            k, radius_u = weigher.region_weights(found.mu, found.theta, size_j)
        k_np = k.cpu().numpy().astype(np.float32)
        if order is None:
            k_all[:, j] = k_np
        else:
            k_np = _unpermuted(k_np, order)
            k_all[:, j] = k_np
        regions.append(_describe(j, k_np, found, frame, loss_caller, w_caller, size_j, p, radius_u))
        scores = restandardise(deflate(scores, k[:m], p.deflation, float(k.max())), problem.weights)
        if should_yield is not None and j + 1 < p.n_spotlights and should_yield():
            raise SearchYielded(
                _result(regions, k_all[:, : j + 1].copy(), loss_caller, z, started, frame.basis, problem.data)
            )
    return _result(regions, k_all, loss_caller, z, started, frame.basis, problem.data)


def _searched_first(w: np.ndarray) -> np.ndarray | None:
    """The rows of positive weight, then those of weight 0, each in their order; None when every
    weight is positive (nothing to reorder)."""
    positive = w > 0
    if bool(positive.all()):
        return None
    return np.concatenate([np.flatnonzero(positive), np.flatnonzero(~positive)])


def _unpermuted(a: np.ndarray, order: np.ndarray) -> np.ndarray:
    """a in the caller's row order, from a in `order` (a[i] belongs to row order[i])."""
    out = np.empty_like(a)
    out[order] = a
    return out


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
    data: core.EmbeddingMatrix,
) -> SearchResult:
    return SearchResult(
        regions=regions,
        weights=weights,
        losses=loss_v.astype(np.float32),
        device=str(z.device) if z.device.type == "cpu" else f"cuda:{z.device.index or 0}",
        elapsed_s=time.perf_counter() - started,
        basis=basis,
        passes=data.passes,
        passes_by_phase=dict(data.counter.by_phase),
    )


def _resume(
    resume: SearchResume,
    regions: list[Region],
    k_all: np.ndarray,
    scores: torch.Tensor,
    p: SearchParams,
    row_weights: torch.Tensor,
    rows: np.ndarray | None = None,
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
    for j in range(done):  # `rows`: the rows the scores are of (the searched ones, in the search's order)
        column = weights[:, j] if rows is None else weights[rows, j]
        k = torch.from_numpy(np.ascontiguousarray(column)).to(scores.device)
        scores = restandardise(deflate(scores, k, p.deflation, float(weights[:, j].max())), row_weights)
    return scores


def deflate(scores: torch.Tensor, k: torch.Tensor, deflation: str, k_max: float | None = None) -> torch.Tensor:
    """The scores the next region is sought on, once a region with kernel values k was found.

    'paper': s (1 - k/max k), the authors' re-weighting. It removes a region's core only: with a
    gaussian kernel the tails keep most of their score, and on the multi-mode benchmark later regions
    found the same weak spot again (two of three modes, each twice; docs/engine.md).
    'tails': s (1 - k/max k)^DEFLATION_POWER, which also takes out the tails (a row at half the
    peak weight keeps 0.4 % of its score, one at a tenth keeps 43 %), so each later region is a weak
    spot the earlier ones do not cover.
    `k_max`: the region's largest weight over every row, when k holds only the searched ones.
    """
    k_max = float(k.max()) if k_max is None else k_max
    if k_max <= 0:
        return scores
    keep = 1.0 - k / k_max
    return scores * (keep if deflation == "paper" else keep**DEFLATION_POWER)


def restandardise(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Deflated scores divided by their weighted standard deviation, as the first region's were
    (`Problem.build`); unchanged where they no longer vary.

    Why: the barrier, the plateau tolerance and the learning rate are set in standardised score units.
    A region that spreads over most rows (the gaussian with S far below d) deflates every row's score,
    not only its own: on 384-d sentence embeddings with S = 34 the scores fell to ~25 % after one
    region and ~0.3 % after two, so the barrier outweighed the loss and regions 2-4 stayed at their
    broad starts (1 000-1 400 rows of lift 1.0; docs/engine.md, "The MiniLM oracle gap"). Which rows
    score high relative to each other is what deflation is for; the scale is not.
    """
    sd = float(torch.sqrt((weights * (scores - (weights @ scores) / weights.sum()) ** 2).sum() / weights.sum()))
    return scores / sd if sd > 1e-12 else scores


def _as_params(params: SearchParams | dict[str, Any] | None) -> SearchParams:
    if params is None:
        return SearchParams()
    if isinstance(params, SearchParams):
        return params
    return SearchParams.model_validate(params)


def _optimise_region(
    problem: Problem,
    variant: Variant,
    scores: torch.Tensor,
    p: SearchParams,
    j: int,
    progress: Progress | None,
    should_stop: ShouldStop | None,
) -> Found:
    """Batched Adam over all restarts for one region; returns the best feasible iterate seen, polished.

    The variant (worker/engine/variants) gives the starts, the step, the stopping rule (`Schedule`)
    and the polish; the barrier's slack tightens over `Tuning.tighten_steps` for the kernels that
    have one. A restart's learning rate halves after `Tuning.patience` steps without improvement.
    """
    tn = problem.tuning
    data = problem.data
    with data.counting("starts"):
        mu = variant.starts(scores, j)
        theta = variant.initial_theta(mu)
    # a hand-derived step needs no autograd: the loop's tensors are then inference tensors (cheaper ops);
    # what leaves it (the chosen iterate) is cloned into an ordinary tensor below
    with torch.inference_mode(variant.hand_step), data.counting("steps"):  # only the steps take passes in it
        d, r = mu.shape
        # mu and theta as the row blocks of one d + rows x R matrix (views, updated in place): Adam and the
        # best-iterate bookkeeping are elementwise, so one op on the matrix gives the bits of one op on each
        # block at half the per-op cost, what a step at small n is made of (docs/engine.md, issue 23)
        point = torch.cat([mu, theta])
        mu, theta = point[:d], point[d:]
        cap = p.steps
        tighten = max(1, min(cap, tn.tighten_steps))
        slacks = core.barrier_slacks(problem.n_total, problem.size, tighten)
        plan = variant.schedule(cap)
        lr = torch.full((r,), p.learning_rate, dtype=mu.dtype, device=mu.device)
        adam = core.AdamState(torch.zeros_like(point), torch.zeros_like(point))

        neg_inf = torch.full((r,), -math.inf, device=mu.device)
        best_value, best_total = neg_inf.clone(), neg_inf.clone()
        best = point.clone()  # best feasible iterate per restart
        fall = point.clone()  # largest-total iterate, when none is feasible
        plateau_best = neg_inf.clone()
        waits = torch.zeros(r, dtype=torch.long, device=mu.device)
        halvings = torch.zeros(r, dtype=torch.long, device=mu.device)
        steps_run, converged = 0, False
        weighted_scores = problem.weights * scores  # once per region, not once per step

        for t in range(cap):
            if should_stop is not None and should_stop():
                raise SearchCanceled(f"stopped during spotlight {j} at step {t}")
            ev, g_mu, g_theta, f = variant.step(mu, theta, scores, weighted_scores, slacks[min(t, tighten - 1)])
            with torch.no_grad():
                theta += torch.log(f)  # R broadcasts over the rows (as every R-vector below)
                value, total, pen = ev.value, ev.total, ev.penalised
                better = (total >= problem.size) & (value > best_value)
                best_value = torch.where(better, value, best_value)
                best = torch.where(better, point, best)
                bigger = total > best_total
                best_total = torch.where(bigger, total, best_total)
                fall = torch.where(bigger, point, fall)

                core.adam_ascent(point, torch.cat([g_mu, g_theta]), adam, lr)
                theta.clamp_(core.THETA_MIN, core.THETA_MAX)

                if t >= plan.warm - 1:
                    improved = pen > plateau_best + tn.plateau_tol
                    plateau_best = torch.where(improved, pen, plateau_best)
                    waits.add_(1).masked_fill_(improved, 0)
                    halve = waits >= tn.patience
                    lr = torch.where(halve, lr * 0.5, lr)
                    halvings += halve
                    waits.masked_fill_(halve, 0)
            steps_run = t + 1
            if progress is not None:
                progress(j, t, plan.total)
            if t >= plan.warm - 1 and int(halvings.min()) >= plan.needed:
                converged = plan.complete
                break

    feasible = torch.isfinite(best_value)
    if bool(feasible.any()):
        i = int(torch.argmax(torch.where(feasible, best_value, neg_inf)))
        mu_i, theta_i = variant.polish(scores, best[:d, i].clone(), best[d:, i].clone())
        return Found(mu_i, theta_i, True, steps_run, converged)
    i = int(torch.argmax(best_total))
    return Found(fall[:d, i].clone(), fall[d:, i].clone(), False, steps_run, converged)


def _describe(
    j: int,
    k: np.ndarray,
    found: Found,
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
