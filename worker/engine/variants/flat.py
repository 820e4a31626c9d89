"""'flat' (the published paper's): k = max(0, 1 - u), a smooth kernel (variants/smooth.py) with a support.

Its weight is 0 beyond u = 1, so the support projection (`core.support_rescale`, SPECS' max_min_u) keeps
at least one row inside, and `sizing="grow"` ends the support at the first row left out.
"""

from __future__ import annotations

import torch

from worker.engine.variants.smooth import Smooth


class Flat(Smooth):
    name = "flat"
    start_u = 0.5
    grows_by_mass = False

    @staticmethod
    def weight(u: torch.Tensor) -> torch.Tensor:
        return torch.clamp(1.0 - u, min=0.0)

    @staticmethod
    def weight_at(dist: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.clamp(1.0 - dist * a[:, None], min=0.0)

    @staticmethod
    def chain_(g: torch.Tensor, k: torch.Tensor, dist: torch.Tensor, a: torch.Tensor) -> None:
        g.mul_((dist * a[:, None] <= 1.0).to(g.dtype)).neg_()  # dk/du = -1 inside, the clamp's mask as autograd has it
