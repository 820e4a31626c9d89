"""tools/mutate.py stays applicable: every mutation's original text is still in its module, once.

The mutation run itself is too slow for `make test` (docs/testing.md); this keeps its list from
going stale silently when a guarded module is edited — update the mutation with the code.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("spotlight_tools_mutate", REPO / "tools" / "mutate.py")
assert _spec is not None and _spec.loader is not None
mutate = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("spotlight_tools_mutate", mutate)  # dataclasses look their module up
_spec.loader.exec_module(mutate)


@pytest.mark.parametrize("mutation", mutate.MUTATIONS, ids=lambda mu: mu.id)
def test_each_mutation_still_applies(mutation) -> None:
    text = (REPO / mutation.path).read_text()
    assert text.count(mutation.before) == 1, f"{mutation.id}: its original text is no longer in {mutation.path} once"
    assert mutation.before != mutation.after
    assert all((REPO / test.split("::")[0]).exists() for test in mutation.tests)


def test_harmless_survivors_name_real_mutations() -> None:
    assert set(mutate.HARMLESS) <= {mu.id for mu in mutate.MUTATIONS}
    assert len({mu.id for mu in mutate.MUTATIONS}) == len(mutate.MUTATIONS)
