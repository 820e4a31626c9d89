"""The step loop's cheap mode (issue 23): a hand-derived step runs in torch's inference mode, an autograd
step does not, and the chosen iterate leaves the loop as an ordinary tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spotlight.contract.params import SearchParams
from worker.engine import variants
from worker.engine.problem import Problem
from worker.engine.search import _optimise_region


def _problem(p: SearchParams) -> tuple[Problem, torch.Tensor]:
    rng = np.random.default_rng(0)
    n, d = 400, 6
    x = rng.normal(size=(n, d)).astype(np.float32)
    loss = (np.linalg.norm(x - 1.0, axis=1) < 1.8).astype(np.float32) + rng.random(n).astype(np.float32)
    labels = rng.integers(0, 3, n)
    problem = Problem.build(torch.from_numpy(x), loss, np.ones(n), labels, labels, p, torch.device("cpu"))
    return problem, problem.scores.clone()


@pytest.mark.parametrize(
    ("kernel", "shape", "entropy", "hand"),
    [
        ("gaussian", "spherical", 0.0, True),
        ("flat", "spherical", 0.0, True),
        ("ball", "spherical", 0.0, True),
        ("gaussian", "diagonal", 0.0, False),
        ("gaussian", "spherical", 0.5, False),
        ("ball", "spherical", 0.5, False),
    ],
)
def test_inference_mode_only_around_hand_derived_steps(kernel: str, shape: str, entropy: float, hand: bool) -> None:
    p = SearchParams(
        kernel=kernel, shape=shape, label_entropy_coeff=entropy, n_spotlights=1, steps=40, device="cpu", seed=1
    )
    problem, scores = _problem(p)
    variant = variants.resolve(problem, p)
    assert variant.hand_step is hand
    seen: list[bool] = []
    found = _optimise_region(
        problem, variant, scores, p, 0, lambda j, t, total: seen.append(torch.is_inference_mode_enabled()), None
    )
    assert seen and all(s is hand for s in seen)  # an autograd step inside inference mode would have raised
    for t in (found.mu, found.theta):
        assert not t.is_inference() and torch.isfinite(t).all()
    # an ordinary tensor: a caller may take gradients through the chosen centre
    mu = found.mu.detach().requires_grad_(True)
    (mu * mu).sum().backward()
    assert mu.grad is not None
