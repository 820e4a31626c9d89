"""The search variants, by kernel name: the engine resolves one per search (`resolve`).

Adding a kernel: its file here (a `Variant` subclass, variants/base.py; a smooth kernel subclasses
variants/smooth.py's `Smooth`) and its name in `VARIANTS`;
its numpy formula, member rule and support bound are one `KernelSpec` line in spotlight/contract/kernel.py
(docs/engine.md, "Adding a kernel").
"""

from __future__ import annotations

from spotlight.contract.params import SearchParams
from worker.engine.problem import Problem
from worker.engine.variants.ball import Ball
from worker.engine.variants.base import Schedule, Variant
from worker.engine.variants.flat import Flat
from worker.engine.variants.gaussian import Gaussian

# one line per kernel: its variant, by the name SearchParams' `kernel` and spotlight/contract/kernel.py SPECS use
VARIANTS: dict[str, type[Variant]] = {v.name: v for v in (Flat, Gaussian, Ball)}


def resolve(problem: Problem, p: SearchParams) -> Variant:
    """The variant of `p.kernel` (a kernel name, "auto" already resolved) for this search's problem."""
    try:
        cls = VARIANTS[p.kernel]
    except KeyError:
        raise ValueError(f"no search variant for kernel {p.kernel!r}; expected one of {sorted(VARIANTS)}") from None
    return cls(problem, p)


__all__ = ["VARIANTS", "Schedule", "Variant", "resolve"]
