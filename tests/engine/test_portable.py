"""Results that hold on any x86-64 CPU, and one implementation of the search step.

torch picks its vectorised kernels (AVX2, AVX-512) by the CPU it runs on, which changes float
rounding. The tests that run whole searches assert only what the objective defines, so they must
pass with torch's plain kernels too: they run here once more in a subprocess with
``ATEN_CPU_CAPABILITY=default`` and one thread, so a rounding-sensitive assertion fails on this
machine instead of on someone else's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import worker.engine

HERE = Path(__file__).resolve().parent
ENGINE = Path(worker.engine.__file__).resolve().parent

# The searches whose assertions a last-bit change could break (planted members, invariances,
# zero weights, later regions elsewhere): a few seconds in all.
ROUNDING_SENSITIVE = [
    "test_search_basic.py::test_planted_region_is_found",
    "test_search_basic.py::test_a_float32_step_is_the_float64_step_on_any_thread_count",
    "test_search_options.py::test_zero_weight_examples_are_ignored",
    "test_search_options.py::test_min_loss_finds_the_region_where_the_model_does_well",
    "test_search_properties.py::test_translating_and_scaling_embeddings_gives_the_same_regions",
    "test_search_properties.py::test_scaling_losses_does_not_change_the_regions",
    "test_search_properties.py::test_later_regions_look_elsewhere",
    "test_search_properties.py::test_each_region_is_a_different_weak_spot",
]


@pytest.mark.slow
def test_rounding_sensitive_tests_pass_with_plain_kernels_on_one_thread() -> None:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    check = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    capability = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True)
    assert capability.stdout.strip() == "DEFAULT"  # the variable is honoured: the run below is what it says
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(HERE / t) for t in ROUNDING_SENSITIVE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=HERE.parent.parent,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout


def test_the_engine_compiles_nothing_and_calls_no_private_op() -> None:
    """No C source ships with the engine, nothing is loaded through ctypes, no private torch op is used."""
    assert not [p.name for p in ENGINE.rglob("*") if p.suffix in {".c", ".h", ".so", ".cpp"}]
    for path in ENGINE.rglob("*.py"):
        text = path.read_text()
        for banned in ("ctypes", "torch.ops.", "_linear_pointwise", "cdll"):
            assert banned not in text, (path.name, banned)
