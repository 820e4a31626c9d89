"""One home per kernel: spotlight/contract/kernel.py's SPECS is what SearchParams accepts, what the member
rule follows, and the formula the engine optimises (its torch weights equal the numpy ones)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from spotlight.contract import kernel
from spotlight.contract.members import member_min_weight, member_set
from spotlight.contract.params import SearchParams
from worker.engine.variants import VARIANTS


def test_params_accept_exactly_the_registered_kernels_and_auto() -> None:
    schema = SearchParams.model_json_schema()["properties"]["kernel"]
    assert tuple(schema["enum"]) == kernel.KERNEL_CHOICES == ("auto", *kernel.SPECS)
    for name in kernel.KERNEL_CHOICES:
        assert SearchParams(kernel=name).kernel == name
    with pytest.raises(ValidationError):
        SearchParams(kernel="epanechnikov")


def test_every_registered_kernel_has_one_search_variant_of_its_name() -> None:
    assert list(VARIANTS) == list(kernel.SPECS)
    assert all(cls.name == name for name, cls in VARIANTS.items())


@pytest.mark.parametrize("name", list(kernel.SPECS))
def test_the_engine_weighs_as_the_registered_formula(name: str) -> None:
    u = np.linspace(0.0, 6.0, 25)
    radius = 1.5 if kernel.SPECS[name].members == "core" else None
    engine_u = u - radius if radius is not None else u  # the engine measures a core kernel from its edge
    engine = VARIANTS[name].weight(torch.from_numpy(engine_u)).numpy()
    assert np.allclose(engine, kernel.kernel_of(u, name, radius), atol=1e-12)


@pytest.mark.parametrize("name", list(kernel.SPECS))
def test_the_member_rule_is_the_registered_one(name: str) -> None:
    w = np.array([1.0, 1.0, 0.6, 0.3, 0.0])
    members = member_set(w, name)
    rule = kernel.SPECS[name].members
    expected = {"support": [0, 1, 2, 3], "core": [0, 1], "mass": [0, 1, 2]}[rule]  # mass: 2.9 -> 3 rows
    assert members.tolist() == expected
    assert (member_min_weight(w, name, members) == 0.0) == (rule == "support")
    assert (name in kernel.CORE_KERNELS) == (rule == "core") == (kernel.SPECS[name].max_min_u is None)
