"""Processes that must not outlive their parent: Linux's parent-death signal, set up in one place.

`spotlight up` gives each child SIGTERM when `up` dies without stopping them; a worker's
work-horse gets SIGKILL when its worker dies (RQ puts the horse in its own process group, so
nothing else would stop it, and it would run on unsupervised while a retry runs elsewhere).
Elsewhere than Linux this does nothing: the heartbeat and `up`'s own shutdown still apply.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies.

    With `parent_pid`, exit at once if the parent is already gone (it died between fork() and
    this call, so the signal will never come).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl: the callers' other guards still hold
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
