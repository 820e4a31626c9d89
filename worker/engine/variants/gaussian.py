"""'gaussian': k = exp(-u / 2), a smooth kernel (variants/smooth.py) whose weight never reaches 0."""

from __future__ import annotations

import torch

from worker.engine.variants.smooth import Smooth


class Gaussian(Smooth):
    name = "gaussian"
    start_u = 1.0

    @staticmethod
    def weight(u: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * u)

    @staticmethod
    def weight_at(dist: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.exp(dist * (-0.5 * a).unsqueeze(1))

    @staticmethod
    def chain_(g: torch.Tensor, k: torch.Tensor, dist: torch.Tensor, a: torch.Tensor) -> None:
        g.mul_(k).mul_(-0.5)  # dk/du = -k/2
