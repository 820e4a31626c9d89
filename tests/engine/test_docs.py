"""The example in `search`'s docstring runs and says what it shows."""

from __future__ import annotations

import doctest
import sys

import worker.engine  # noqa: F401  (registers the submodule)


def test_search_docstring_example_runs() -> None:
    module = sys.modules["worker.engine.search"]
    failures, tried = doctest.testmod(module, verbose=False)
    assert tried > 0 and failures == 0
