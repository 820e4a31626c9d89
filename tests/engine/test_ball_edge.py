"""The spherical 'ball' region's edge fit (worker/engine/variants/ball.py `fit_edge`): the exact 1-d maximum of the objective
over the edge width for the region's centre, found on a grid of the distances of one pass.

Asserted: what the objective defines (its value at the returned width against a dense scan, the
widest width within the tolerance), never NaN, and the search's regions carry that width.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spotlight.contract.params import SearchParams
from tests.engine.conftest import planted_problem
from worker.engine import core, search
from worker.engine.prepare import standardise
from worker.engine.problem import Problem
from worker.engine.tuning import DEFAULT_TUNING
from worker.engine.variants.ball import Ball, fit_edge


def _problem(x: np.ndarray, loss: np.ndarray) -> Problem:
    w = np.ones(len(x))
    z, _ = standardise(x, w, torch.device("cpu"), 4096)
    params = SearchParams(device="cpu", kernel="ball", n_spotlights=1)
    return Problem.build(z, loss, w, None, None, params, torch.device("cpu"))


def _objective(problem: Problem, scores: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> float:
    """V at (mu, theta) from `Ball.evaluate`, in float64: the objective the search maximises."""
    d = problem.data.shape[1]
    x = problem.data.x.double()
    u = (torch.exp(theta.double()) / d) * ((x - mu.double()) ** 2).sum(1)
    ev = Ball.evaluate(u[None, :], scores.double(), problem.weights.double(), problem.size, 1.0, 1.0)
    return float(ev.value[0])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_edge_fit_reaches_the_best_width_of_a_dense_scan(seed: int) -> None:
    x, loss, _ = planted_problem(n=1500, d=24, seed=seed)
    problem = _problem(x, loss)
    scores = problem.scores
    rng = np.random.default_rng(seed)
    mu = problem.data.x[int(rng.integers(len(x)))].clone()  # any centre: the fit is over the width only
    theta = fit_edge(problem, scores, mu)
    assert theta.shape == (1,) and bool(torch.isfinite(theta).all())
    fitted = _objective(problem, scores, mu, theta)
    dense = [
        _objective(problem, scores, mu, torch.tensor([t])) for t in np.linspace(core.THETA_MIN, core.THETA_MAX, 241)
    ]
    tol = DEFAULT_TUNING.plateau_tol
    assert fitted >= max(dense) - tol - 1e-6
    # the widest width within the tolerance: half a grid step narrower would lose more than it
    wider = _objective(problem, scores, mu, theta - 1.0)
    assert wider < max(dense) - tol + 1e-6 or float(theta[0]) - 1.0 < core.THETA_MIN


def test_edge_fit_is_finite_when_every_loss_is_equal() -> None:
    x, _, _ = planted_problem(n=600, d=8)
    problem = _problem(x, np.ones(len(x), dtype=np.float32))
    theta = fit_edge(problem, problem.scores, problem.data.x[0].clone())
    assert bool(torch.isfinite(theta).all()) and core.THETA_MIN <= float(theta[0]) <= core.THETA_MAX


def test_search_reports_the_fitted_width_and_counts_its_passes() -> None:
    """The region's precision is the edge fit's for its centre; the pass count is the steps' and the polish's."""
    x, loss, planted = planted_problem(n=2000, d=32, seed=2)
    result = search(x, loss, {"device": "cpu", "kernel": "ball", "n_spotlights": 1, "spotlight_size": 0.04})
    region = result.regions[0]
    assert region.steps_run == DEFAULT_TUNING.ball_steps and region.converged
    assert 2 * DEFAULT_TUNING.ball_steps < result.passes < 2 * DEFAULT_TUNING.ball_steps + 40
    top = np.argsort(-result.weights[:, 0], kind="stable")[: int(planted.sum())]
    assert planted[top].mean() >= 0.9
    assert math.isfinite(region.lift) and region.lift > 2.0
