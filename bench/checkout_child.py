"""Run one function of a benchmark file in a fresh interpreter that imports another checkout's code.

Why: side-by-side benchmarks (`bench.small_job`, `bench.real_jitter`) compare two versions of the
engine in one run. Each version must be imported in a process of its own (a module is imported once
per process), and the function that measures must be the same file for both, so the file is executed
in the child rather than imported from the checkout under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def call_in_checkout(checkout: Path, script: str, call: str) -> Any:
    """The JSON value of `call` (an expression over the names `script` defines), evaluated in a fresh
    Python whose imports come from `checkout` first; a RuntimeError with the child's stderr if it fails."""
    script = str(Path(script).resolve())
    code = (
        f"ns = {{'__name__': 'bench_child', '__file__': {script!r}}}; exec(open({script!r}).read(), ns); "
        f"import json; print(json.dumps(eval({call!r}, ns)))"
    )
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=checkout, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{checkout}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
