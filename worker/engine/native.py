"""The fused one-pass CPU step (`fused_step.c`): build it once per machine, load it, run it on threads.

Why a small C kernel rather than another torch formulation: a step is bound by reading X, and the
torch path reads it twice through skinny products that oneDNN and MKL run at ~half a
matrix-vector product's bandwidth (see docs/engine.md for what else was tried). The kernel reads
each row once. It is optional: with no C compiler, a failed build, `SPOTLIGHT_NATIVE_KERNELS=0`, or
anything but float32 on a CPU, the engine uses the torch path, which tests hold equal to it.

Build: `$CC` (default `cc`) with -O3 -march=native, into `$SPOTLIGHT_NATIVE_CACHE` (default
`~/.cache/spotlight/native`), named by a hash of the source, the flags, the compiler's version and
this CPU's feature flags, so machines sharing a home directory never load each other's build. The
library is written to a temporary name and renamed, so concurrent workers race harmlessly; nothing
is loaded from a directory or file that another user could have written (see SECURITY.md).

Threads: as many as the caller says (the search: torch's thread count, or 1 for small problems),
started in C for each pass (ctypes releases the GIL).
The rows are cut into chunks that depend on n only, taken from a shared counter, and each chunk's
sums are added in chunk order: the same bits for any thread count and any timing.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused_step.c")
ABI_VERSION = 3
MAX_RESTARTS_PER_PASS = 8  # the kernel's register budget; more restarts take several passes
STATS = ("total", "weighted_score", "grad_ws", "grad_w", "grad_ws_dist", "grad_w_dist", "min_dist")
_FLAG_SETS = (["-O3", "-march=native"], ["-O3"])  # -march=native is refused by some compilers/CPUs

_lock = threading.Lock()
_state: dict[str, object] = {}


def enabled() -> bool:
    """False when `SPOTLIGHT_NATIVE_KERNELS` is 0/false/no/off."""
    return os.environ.get("SPOTLIGHT_NATIVE_KERNELS", "1").strip().lower() not in {"0", "false", "no", "off"}


def cache_dir() -> Path:
    env = os.environ.get("SPOTLIGHT_NATIVE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spotlight" / "native"


def _cpu_fingerprint() -> str:
    """The CPU's feature flags (what -march=native compiles for), or the machine name elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _private(path: Path) -> bool:
    """Owned by this user and writable by no one else: a library loaded from here runs in the worker."""
    st = path.stat()
    return (not hasattr(os, "getuid") or st.st_uid == os.getuid()) and not st.st_mode & 0o022


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def build(cc: str | None = None, directory: Path | None = None) -> Path | None:
    """Compile the kernel (or find it already compiled); the library's path, or None when no build works."""
    cc = cc or os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        log.warning("native kernel: no C compiler %r on PATH; CPU searches use the slower torch step", cc)
        return None
    directory = directory or cache_dir()
    source = SOURCE.read_bytes()
    version = _compiler_version(cc)
    errors = []
    fingerprint = _cpu_fingerprint()
    targets = [directory / "fused_step-{}.so".format(hashlib.sha256(b"\0".join(
        [source, " ".join(flags).encode(), version.encode(), fingerprint.encode(), cc.encode()])).hexdigest()[:20])
        for flags in _FLAG_SETS]
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(directory) or any(t.exists() and not _private(t) for t in targets):
            log.warning("native kernel: %s is writable by other users or not ours; not loading code from it; "
                        "using the torch step", directory)
            return None
    except OSError as exc:
        log.warning("native kernel: cache directory %s is unusable (%s); using the torch step", directory, exc)
        return None
    for target in targets:  # a build with any flag set (a failed -march=native is not retried first)
        if target.exists():
            return target
    for flags, target in zip(_FLAG_SETS, targets):
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, suffix=".so.tmp")
            os.close(fd)
        except OSError as exc:
            log.warning("native kernel: cache directory %s is not writable (%s); using the torch step", directory, exc)
            return None
        cmd = [cc, *flags, "-fPIC", "-shared", "-pthread", "-o", tmp, str(SOURCE), "-lm"]
        started = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            done = None
            errors.append(str(exc))
        if done is not None and done.returncode == 0:
            os.chmod(tmp, 0o700)  # the linker's mode follows the umask; never group- or world-writable
            os.replace(tmp, target)
            log.info("native kernel: compiled %s in %.1f s", target, time.perf_counter() - started)
            return target
        if done is not None:
            errors.append(done.stderr.strip()[-2000:])
        Path(tmp).unlink(missing_ok=True)
    log.warning("native kernel: build failed; using the torch step:\n%s", "\n".join(errors))
    return None


def _bind(path: Path) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(path))
        if lib.spotlight_fused_step_abi() != ABI_VERSION:
            log.warning("native kernel: %s has the wrong ABI version; using the torch step", path)
            return None
    except (OSError, AttributeError) as exc:
        log.warning("native kernel: cannot load %s (%s); using the torch step", path, exc)
        return None
    p, long_, int_ = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    lib.spotlight_fused_pass.argtypes = [p, long_, long_, p, p, p, p, p, p, int_, int_, int_, p, p]
    lib.spotlight_fused_pass.restype = int_
    lib.spotlight_vexpf.argtypes = [p, p, long_]
    lib.spotlight_vexpf.restype = None
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernel, built on first use; None when disabled or unavailable (decided once per process)."""
    with _lock:
        if "lib" not in _state:
            path = build() if enabled() else None
            _state["lib"] = _bind(path) if path is not None else None
        return _state["lib"]  # type: ignore[return-value]


def available() -> bool:
    """Whether new `EmbeddingMatrix`es use the kernel (see `switched`)."""
    forced = _state.get("forced")
    return library() is not None if forced is None else bool(forced) and library() is not None


@contextlib.contextmanager
def switched(on: bool) -> Iterator[None]:
    """Turn the kernel off (or back on, where available) for searches started inside the block:
    for side-by-side benchmarks and tests of the torch path."""
    before = _state.get("forced")
    _state["forced"] = on
    try:
        yield
    finally:
        _state["forced"] = before


def fused_pass(
    x: torch.Tensor,
    sq_norms: torch.Tensor,
    weights: torch.Tensor,
    weighted_scores: torch.Tensor,
    mu: np.ndarray,
    a: np.ndarray,
    kernel: str,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One pass over X for every restart: (stats R x 7, h 2R x d), both float64 numpy arrays.

    x (n x d), sq_norms, weights, weighted_scores (n): contiguous float32 CPU tensors; mu (d x R)
    the centres and a (R) the scale of each restart's squared distances (u = a D), float32 arrays.
    stats columns are `STATS`; h rows are sum_i ws_i e_ri x_i (first R) and sum_i w_i e_ri x_i
    (last R), where e is the kernel value (gaussian) or the in-support indicator (flat). Numpy, not
    torch, for everything R- or d-sized: a step makes ~40 such small ops, and torch's per-op
    overhead was a tenth of the step at d = 512.
    """
    lib = library()
    if lib is None:
        raise RuntimeError("the native kernel is not available")
    n, d = x.shape
    r_all = mu.shape[1]
    for t in (x, sq_norms, weights, weighted_scores):
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError("fused_pass needs contiguous float32 CPU tensors")
    flat = {"flat": 1, "gaussian": 0}[kernel]
    threads = max(1, threads if threads is not None else torch.get_num_threads())
    stats = np.empty((r_all, 7))
    h = np.empty((2 * r_all, d))
    for r0 in range(0, r_all, MAX_RESTARTS_PER_PASS):
        r = min(MAX_RESTARTS_PER_PASS, r_all - r0)
        mt = np.ascontiguousarray(mu[:, r0 : r0 + r].T, dtype=np.float32)
        mm = np.ascontiguousarray((mt * mt).sum(1), dtype=np.float32)
        ar = np.ascontiguousarray(a[r0 : r0 + r], dtype=np.float32)
        st = np.empty((r, 7))
        hr = np.empty((2 * r, d))
        code = lib.spotlight_fused_pass(
            x.data_ptr(), d, n, sq_norms.data_ptr(), weights.data_ptr(), weighted_scores.data_ptr(),
            mt.ctypes.data, mm.ctypes.data, ar.ctypes.data, flat, r, threads, st.ctypes.data, hr.ctypes.data)
        if code == -2:
            raise MemoryError("native kernel: no memory for the per-chunk sums")
        if code != 0:
            raise RuntimeError(f"native kernel refused its arguments (code {code})")
        stats[r0 : r0 + r] = st
        h[r0 : r0 + r] = hr[:r]
        h[r_all + r0 : r_all + r0 + r] = hr[r:]
    return stats, h
