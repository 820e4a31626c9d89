#!/usr/bin/env bash
# GPU benchmark: 5 regions (default parameters) on 1 000 000 x 1024 float32 embeddings.
#
#   bash bench/gpu.sh                          # on a CUDA machine: n = 1e6, d = 1024, device auto
#   N=20000 D=256 DEVICE=cpu bash bench/gpu.sh # smoke test anywhere
#
# Prints the device, the data-generation time (excluded) and the wall time of the search, which
# includes moving X to the GPU and standardising it. Goal: <= 10 s on an H200-class GPU.
# The whole script is bounded by `timeout` (5 minutes by default, TIMEOUT_S to change).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
export N="${N:-1000000}" D="${D:-1024}" DEVICE="${DEVICE:-auto}"
exec timeout "${TIMEOUT_S:-300}" "$PYTHON" - <<'PY'
import os, time
import numpy as np
import torch
from spotlight.contract.params import SearchParams
from worker.engine import search

n, d, device = int(os.environ["N"]), int(os.environ["D"]), os.environ["DEVICE"]
params = SearchParams(device=device)
t = time.perf_counter()
rng = np.random.default_rng(0)
x = np.empty((n, d), dtype=np.float32)
for i in range(0, n, 65536):  # chunked, so that generation never holds a float64 n x d copy
    x[i:i + 65536] = np.maximum(rng.standard_normal((min(65536, n - i), d), dtype=np.float32) + 0.3, 0)
cluster = rng.choice(n, size=n // 50, replace=False)  # planted: 2 % of rows shifted along 16 dims, high loss
x[np.sort(cluster), :min(16, d)] += 1.5
loss = rng.exponential(0.5, size=n).astype(np.float32)
loss[cluster] += 2.0
print(f"data: {n} x {d} float32 ({x.nbytes / 2**30:.1f} GiB), generated in {time.perf_counter() - t:.1f} s")
if torch.cuda.is_available():
    print("gpu:", torch.cuda.get_device_name(0))
# Warm-up on a small slice: CUDA context creation and kernel loading are not the search's cost.
search(x[:4096], loss[:4096], params.model_copy(update={"n_spotlights": 1, "steps": 5}))
if torch.cuda.is_available():
    torch.cuda.synchronize()
t = time.perf_counter()
result = search(x, loss, params)
if torch.cuda.is_available():
    torch.cuda.synchronize()
wall = time.perf_counter() - t
steps = [r.steps_run for r in result.regions]
print(f"device {result.device}: {params.n_spotlights} regions ({params.kernel} -> {result.regions[0].kernel}, restarts {params.restarts}, "
      f"cap {params.steps}) on {n} x {d} in {wall:.1f} s (engine's own clock {result.elapsed_s:.1f} s); steps {steps}")
print("all finite:", bool(np.isfinite(result.weights).all()), "| lifts:", [round(r.lift, 2) for r in result.regions])
PY
