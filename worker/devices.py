"""How many CUDA devices this worker can compute on, counted without initialising CUDA here.

The worker's parent process must not initialise CUDA (its forked work-horses could not use it
then), so on a CUDA build of torch the count comes from a short child process; a CPU build has
none without asking. The count is published for the API (spotlight/server/capabilities.py).
"""

from __future__ import annotations

import subprocess
import sys

_COUNT_SCRIPT = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"


def detect_cuda_devices(timeout_s: float = 120.0) -> int:
    """CUDA devices this machine's torch sees, without initialising CUDA in this process."""
    try:
        import torch
    except ImportError:
        return 0
    if not torch.version.cuda:  # a CPU build
        return 0
    try:
        out = subprocess.run(
            [sys.executable, "-c", _COUNT_SCRIPT], capture_output=True, text=True, timeout=timeout_s, check=True
        ).stdout
        return int(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return 0
