"""`Tuning`: the optimiser's constants, one frozen value passed into the search.

Why a value and not module globals: a benchmark or a test that wants another schedule passes its own
``Tuning`` (``dataclasses.replace(DEFAULT_TUNING, refit_rounds=0)``) to `search`, so nothing is set on a
module and restored after, and two searches in one process never see each other's settings. None of
these is a user parameter: each was chosen by a measurement recorded in docs/engine.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    """The search loop's schedule and the 'ball' kernel's polish steps (docs/engine.md, "Method")."""

    # Below this many embedding entries (n * d) a CPU search runs on one thread: per-step work is then
    # a few hundred microseconds, and waking a second thread for each of ~40 small ops costs more than it
    # saves (5x slower on a loaded 2-core machine). Larger problems keep torch's thread count.
    single_thread_below: int = 2**22
    # Steps spent tightening the barrier (gaussian, flat) from (n - S) to 0.05 S (fewer when the cap is
    # lower); then the search runs at the final slack until every restart's plateau-halved learning rate
    # has decayed (or the cap is hit). Tightening much faster lets the region shrink before its centre
    # has moved to the high-loss area (measured on 12-d planted balls: AP 0.61-0.91 at 100 steps,
    # 0.89-0.97 at 150; on the digits benchmark 150 scored 100 % of the oracle, see docs/engine.md).
    tighten_steps: int = 150
    patience: int = 10  # steps without improvement before a restart's learning rate is halved (as the authors)
    max_halvings: int = 4  # a restart has converged once its learning rate was halved this many times
    plateau_tol: float = 1e-3  # improvement of the penalised objective (standardised score units) that counts
    # Spherical 'ball': Adam steps on (centre, edge width) per region, before the member centres, the
    # refits and the edge fit. The steps move the centre; the edge width they learn is replaced by
    # `ball_edge_grid`'s exact 1-d fit, so they need not run until the edge stops sharpening (measured,
    # docs/engine.md: 20 steps keep the recall of 150-200 at a quarter of the passes over X).
    ball_steps: int = 20
    # Spherical 'ball' edge fit: log-precisions tried (variants/ball.py `fit_edge`), a coarse grid over
    # [THETA_MIN, THETA_MAX] then as many again around its best; the widest edge whose objective is
    # within plateau_tol of the best is kept, so rows beyond the core keep a ranking.
    ball_edge_grid: int = 32
    # 'ball' starts: centres along the least-squares fit of the scores on (x, ||x||^2) (`regression_starts`)
    # are tried at this many scales, log-spaced over regression_scales.
    regression_grid: int = 40
    regression_scales: tuple[float, float] = (1e-2, 1e4)
    regression_ridge: float = 1e-3  # relative to the mean diagonal of the Gram matrix: keeps the solve well posed
    # 'ball' regions: the core rows nearest the converged centre tried as the centre (`member_centres`).
    # Measured on five draws of the planted ball slices at d = 256 and 512: 32, 64 and 256 candidates all
    # find the slice's own row (recall 1.0); 256 tried highest-scoring first (and compared at the found
    # edge width) missed it on 3 of 6 draws (0.64-0.77).
    member_candidates: int = 64
    member_chunk: int = 32
    # 'ball' regions: then up to refit_rounds classifier refits (`classifier_refits`), each round one fit
    # on the refit_rows * S examples nearest the centre and, when more, one on refit_rows_per_dim * d (a
    # d-dimensional rule needs rows in proportion to d: with 3 S alone an isotropic d = 512 cap stayed at
    # 0.68 on one draw of four, and d = 128 caps with S = 80 gained nothing), with the L2 penalty
    # refit_ridge per standardised feature on the mean log-loss. Measured on the planted caps
    # (docs/engine.md): ridges 1e-3, 3e-3 and 1e-2 gave mean recall 0.942 / 0.943 / 0.939; 4 S rows took
    # sets of higher objective but lower recall, 2.5 S lost recall at d = 512.
    refit_rounds: int = 8
    refit_rows: float = 3.0
    refit_rows_per_dim: float = 3.0
    refit_ridge: float = 3e-3
    refit_iterations: int = 100  # L-BFGS iterations per fit at most (measured: 25-50 at d = 256-512)


DEFAULT_TUNING = Tuning()
