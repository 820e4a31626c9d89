"""`Problem`: what every search variant reads, built once per search; `Found`: one region's optimum."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from spotlight.contract.params import SearchParams
from worker.engine import core
from worker.engine.tuning import DEFAULT_TUNING, Tuning


@dataclass
class Problem:
    """Everything the optimiser needs, on the device, in standardised units."""

    data: core.EmbeddingMatrix  # the standardised n x d float32 embeddings
    weights: torch.Tensor  # n
    active: torch.Tensor | None  # n bool: weight > 0; None when every weight is positive
    scores: torch.Tensor  # n, >= 0: losses (or their negatives), shifted and divided by their std
    size: float  # S
    n_total: float  # sum of weights
    regs: core.Regularisers | None
    unit_weights: bool = False  # every sample weight is 1 (the core's edge is then one kthvalue)
    tuning: Tuning = DEFAULT_TUNING

    @classmethod
    def build(
        cls,
        z: torch.Tensor,
        loss_v: np.ndarray,
        w: np.ndarray,
        labels_v: np.ndarray | None,
        preds_v: np.ndarray | None,
        p: SearchParams,
        device: torch.device,
        tail: int = 0,
        tuning: Tuning = DEFAULT_TUNING,
    ) -> Problem:
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

    def searched(self, m: int) -> Problem:
        """The problem on its first m rows, those of positive weight (the search orders them first):
        the same scores, size and total, views of the same memory.

        Why: rows of weight 0 (a job's held-out half) add nothing to any sum the optimiser takes, yet
        every pass over X and every per-row operation read them; the region's weights over all rows
        are computed once it is found (search.py).
        """
        weights = self.weights[:m]
        regs = self.regs
        if regs is not None:
            regs = core.Regularisers([c[:m] for c in regs.codes], list(regs.n_classes), list(regs.coeffs))
        return dataclasses.replace(
            self,
            data=self.data.head(m),
            weights=weights,
            active=None,
            scores=self.scores[:m],
            regs=regs,
            unit_weights=bool((weights == 1).all()),
        )


@dataclass
class Found:
    """One region's chosen iterate: its centre and log-precisions, and how the search for it ended."""

    mu: torch.Tensor  # d
    theta: torch.Tensor  # 1, 2 or d
    feasible: bool
    steps_run: int
    converged: bool
