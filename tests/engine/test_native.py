"""The fused one-pass CPU step (worker/engine/fused_step.c via native.py) against the torch path.

The torch path is the reference here (it is itself tested against a naive autograd of the formula
in test_search_basic.py); the kernel must give its objective, gradient and projection, on the
cases that exercise every branch of the C code: both kernels, zero weights, the barrier active and
slack, the support projection (second pass), row and dimension tails, more restarts than one pass
takes, one and several threads.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from spotlight.params import SearchParams
from worker.engine import core, native, search

pytestmark = pytest.mark.skipif(
    native.library() is None, reason="no C compiler here, or SPOTLIGHT_NATIVE_KERNELS=0: the torch path runs instead"
)


def _problem(n: int, d: int, r: int, masked: bool, case: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * 0.7 + 0.3
    scores = torch.rand(n, generator=g) * 2
    weights = torch.rand(n, generator=g) + 0.2
    if masked:
        weights[::5] = 0.0
    mu = torch.randn(d, r, generator=g) * 0.4
    theta = torch.linspace(-0.5, 1.0, r)[None, :] + (20.0 if case == "projected" else 0.0)
    total = float(weights.sum())
    size, slack = (0.3 * total, 0.6 * total) if case == "barrier_active" else (0.01 * total, 0.02 * total)
    return x, scores, weights, mu, theta, size, slack


def _step(data, x_dtype, scores, weights, mu, theta, kernel, size, slack):
    active = None if bool((weights > 0).all()) else weights > 0
    t = x_dtype
    return core.objective_and_gradient(data, mu.to(t), theta.to(t), scores.to(t), weights.to(t), active, kernel,
                                       size, slack, 1.5, None)


def _close(a: torch.Tensor, ref: torch.Tensor, rel: float) -> bool:
    scale = float(ref.abs().max()) or 1.0
    return a.shape == ref.shape and float((a.double() - ref.double()).abs().max()) <= rel * scale


@pytest.mark.parametrize("kernel", ["gaussian", "flat"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("case", ["barrier_active", "barrier_slack", "projected"])
@pytest.mark.parametrize("n,d,r", [(1001, 7, 3), (3000, 48, 4), (257, 1, 1), (2000, 33, 9)])
def test_fused_step_equals_the_torch_path(kernel: str, masked: bool, case: str, n: int, d: int, r: int) -> None:
    x, scores, weights, mu, theta, size, slack = _problem(n, d, r, masked, case)
    fast = _step(core.EmbeddingMatrix(x, native=True), torch.float32, scores, weights, mu, theta, kernel, size, slack)
    # The reference is the float64 torch path, except for a region projected down to one or two
    # examples in one dimension: there the float32 expanded form's cancellation (distances ~1e-5 of
    # |x|^2; the gradient's sum g x - mu sum g) dominates whatever path computes it. The objective is
    # then compared with the float32 torch path, which rounds the distances the same way, and the
    # gradient is only required to be finite.
    collapsed = case == "projected" and d == 1
    ref_dtype = torch.float32 if collapsed else torch.float64
    ref = _step(core.EmbeddingMatrix(x.to(ref_dtype), native=False), ref_dtype, scores, weights, mu, theta, kernel,
                size, slack)
    if case == "projected":
        assert (fast[3] < 1).all()  # the second pass, with the true projection, ran
    if case == "barrier_active":
        assert (ref[0].penalised < ref[0].value).any()
    assert fast[1].dtype == torch.float32 and fast[1].shape == (d, r) and fast[2].shape == (1, r)
    assert _close(fast[3], ref[3], 1e-5)
    for a, b in [(fast[0].value, ref[0].value), (fast[0].penalised, ref[0].penalised), (fast[0].total, ref[0].total)]:
        assert _close(a, b, 1e-5), (a, b)
    if collapsed:
        assert torch.isfinite(fast[1]).all() and torch.isfinite(fast[2]).all()
        return
    # the gradient of a float32 step: distances are float32 (the expanded form), sums are float64
    assert _close(fast[1], ref[1], 2e-4), (fast[1] - ref[1]).abs().max()
    assert _close(fast[2], ref[2], 2e-4), (fast[2], ref[2])


def test_fused_step_gives_the_same_bits_on_any_thread_count() -> None:
    """Chunks depend on n only and their sums are added in chunk order, whoever computed them."""
    x, scores, weights, mu, theta, size, slack = _problem(20_000, 64, 4, False, "barrier_slack")
    data = core.EmbeddingMatrix(x, native=True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = _step(data, torch.float32, scores, weights, mu, theta, "gaussian", size, slack)
        b = _step(data, torch.float32, scores, weights, mu, theta, "gaussian", size, slack)
        torch.set_num_threads(1)
        c = _step(data, torch.float32, scores, weights, mu, theta, "gaussian", size, slack)
    finally:
        torch.set_num_threads(before)
    for other in (b, c):
        assert torch.equal(a[1], other[1]) and torch.equal(a[2], other[2])
        assert torch.equal(a[0].penalised, other[0].penalised) and torch.equal(a[0].total, other[0].total)


def test_the_native_step_never_makes_the_transposed_copy() -> None:
    """The torch path keeps X^T for its backward pass (2x the memory); the one-pass step needs none."""
    x, scores, weights, mu, theta, size, slack = _problem(3000, 16, 4, False, "barrier_slack")
    fast = core.EmbeddingMatrix(x, native=True)
    _step(fast, torch.float32, scores, weights, mu, theta, "gaussian", size, slack)
    assert fast._xt is None
    slow = core.EmbeddingMatrix(x, native=False)
    _step(slow, torch.float32, scores, weights, mu, theta, "gaussian", size, slack)
    assert slow._xt is not None


def test_a_search_finds_the_same_regions_with_and_without_the_kernel() -> None:
    rng = np.random.default_rng(3)
    n, d = 6000, 24
    x = rng.normal(size=(n, d)).astype(np.float32)
    planted = rng.random(n) < 0.05  # a failing pocket: shifted along 3 dimensions, high loss
    x[planted, :3] += 2.5
    loss = (rng.exponential(0.3, size=n) + 1.5 * planted).astype(np.float32)
    params = SearchParams(n_spotlights=2, device="cpu", seed=1)
    fast = search(x, loss, params)
    with native.switched(False):
        slow = search(x, loss, params)
    assert all(r.feasible for r in fast.regions + slow.regions)
    # The planted region: the same optimum, compared where the loss defines it (its 3 planted
    # dimensions, its weighted loss, its members). Along the 21 dimensions that carry no signal the
    # objective is flat and rounding alone moves the centre; the weaker second region sits on such a
    # flat landscape altogether, so only its feasibility is compared.
    a, b = fast.regions[0], slow.regions[0]
    assert abs(a.weighted_loss - b.weighted_loss) <= 0.01 * b.weighted_loss
    assert np.abs(a.center[:3] - b.center[:3]).max() <= 0.1
    ap_fast, ap_slow = (average_precision_score(planted, res.weights[:, 0]) for res in (fast, slow))
    assert ap_slow > 0.5 and abs(ap_fast - ap_slow) <= 0.03, (ap_fast, ap_slow)


def test_fused_pass_refuses_what_it_cannot_read() -> None:
    x = torch.randn(100, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="float32"):
        native.fused_pass(x, x[:, 0].contiguous(), x[:, 1].contiguous(), x[:, 2].contiguous(),
                          np.zeros((4, 1), np.float32), np.ones(1, np.float32), "gaussian")


def test_build_is_cached_and_falls_back_without_a_working_compiler(tmp_path: Path, caplog) -> None:
    first = native.build(directory=tmp_path / "cache")
    assert first is not None and first.exists()
    stamp = first.stat().st_mtime_ns
    assert native.build(directory=tmp_path / "cache") == first and first.stat().st_mtime_ns == stamp
    assert native.build(cc="no-such-compiler-here", directory=tmp_path / "none") is None
    with caplog.at_level(logging.WARNING, logger="worker.engine.native"):
        assert native.build(cc="false", directory=tmp_path / "broken") is None  # a "compiler" that always fails
    assert "build failed" in caplog.text
    assert not list((tmp_path / "broken").glob("*.so*"))  # no half-written library left behind


def test_a_compiler_refusing_march_native_gets_the_portable_build_once(tmp_path: Path) -> None:
    """Some compilers or CPUs refuse -march=native: the portable flags are used, and a later process
    finds that build instead of trying (and failing) -march=native again."""
    calls = tmp_path / "calls"
    fake = tmp_path / "picky-cc"
    fake.write_text('#!/bin/sh\necho "$*" >> ' + str(calls) + '\ncase "$*" in *-march=native*) exit 1;; esac\n'
                    'case "$*" in *--version*) exec cc --version;; esac\nexec cc "$@"\n')
    fake.chmod(0o755)
    first = native.build(cc=str(fake), directory=tmp_path / "cache")
    assert first is not None and native._bind(first) is not None
    builds = [line for line in calls.read_text().splitlines() if "-shared" in line]
    assert len(builds) == 2 and "-march=native" in builds[0] and "-march=native" not in builds[1]
    assert native.build(cc=str(fake), directory=tmp_path / "cache") == first
    assert len([line for line in calls.read_text().splitlines() if "-shared" in line]) == 2


def test_the_library_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """GNU ld keeps the 0600 of the temporary file it writes into; build() also sets the mode itself,
    for linkers that recreate their output with the umask's mode."""
    before = os.umask(0o002)  # group-writable files by default, as on many desktops
    try:
        built = native.build(directory=tmp_path / "cache")
    finally:
        os.umask(before)
    assert built is not None and not built.stat().st_mode & 0o022
    assert native.build(directory=tmp_path / "cache") == built  # and so it is loaded, not refused


def test_nothing_is_loaded_from_a_cache_others_can_write(tmp_path: Path, caplog) -> None:
    cache = tmp_path / "cache"
    built = native.build(directory=cache)
    assert built is not None
    built.chmod(0o666)  # a library someone else could have replaced
    with caplog.at_level(logging.WARNING, logger="worker.engine.native"):
        assert native.build(directory=cache) is None
    built.chmod(0o600)
    cache.chmod(0o777)  # a directory where someone else could plant one
    assert native.build(directory=cache) is None
    assert "writable by other users" in caplog.text
    cache.chmod(0o700)
    assert native.build(directory=cache) == built


def test_a_library_of_another_abi_version_is_not_used(monkeypatch) -> None:
    path = native.build()
    assert path is not None
    monkeypatch.setattr(native, "ABI_VERSION", native.ABI_VERSION + 1)
    assert native._bind(path) is None


def test_the_switch_turns_the_kernel_off_per_process() -> None:
    code = "from worker.engine import native, core; import torch; print(native.available(), core.EmbeddingMatrix(torch.ones(3, 2)).native)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "SPOTLIGHT_NATIVE_KERNELS": "0"})
    assert out.stdout.split() == ["False", "False"]


def test_the_kernels_vectorised_exp_is_within_one_ulp() -> None:
    """The gaussian kernel's exp runs 16 lanes at a time in the C code (not libm's scalar expf)."""
    x = -np.linspace(0.0, 87.0, 1_000_003, dtype=np.float32)
    out = np.empty_like(x)
    native.library().spotlight_vexpf(x.ctypes.data, out.ctypes.data, x.size)
    exact = np.exp(x.astype(np.float64))
    assert np.max(np.abs(out - exact) / exact) < 1.5 * np.finfo(np.float32).eps
    assert out[0] == 1.0
