"""Pin the engine's output on seeded inputs, to show a refactor changes no result.

Runs `worker.engine.search` on two inputs (a synthetic planted blob with labels, predictions and
zero-weight rows; tests/engine/assets/real_minilm.npz) for every kernel, shape, evidence setting,
entropy penalty and sizing the params allow, and saves each search's region weights and objective
values to one .npz. Run it before and after a change, then compare:

    python -m bench.engine_identity --out /tmp/before.npz
    python -m bench.engine_identity --out /tmp/after.npz --compare /tmp/before.npz

Torch on CPU with one thread, so the same code gives the same bits; the comparison reports the
largest absolute difference of each array (identical code: 0; a reordered float sum: ~1e-6).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import torch

from worker.engine import search

ASSET = Path(__file__).resolve().parent.parent / "tests" / "engine" / "assets" / "real_minilm.npz"


def _inputs() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    n, d = 500, 6
    x = rng.normal(size=(n, d)).astype(np.float32)
    labels = rng.integers(0, 3, n)
    predictions = np.where(rng.random(n) < 0.8, labels, rng.integers(0, 3, n))
    hot = np.linalg.norm(x - 1.0, axis=1) < 1.6
    loss = (hot * 2.0 + rng.random(n) + (labels != predictions)).astype(np.float32)
    w = rng.integers(0, 3, n).astype(np.float64)
    w[:5] = 0.0
    with np.load(ASSET) as f:
        real = {
            "x": f["embeddings"].astype(np.float32),
            "loss": f["losses"].astype(np.float32),
            "labels": f["labels"].astype(np.int64),
            "predictions": f["predictions"].astype(np.int64),
            "w": np.ones(len(f["losses"])),
        }
    return {"synthetic": {"x": x, "loss": loss, "labels": labels, "predictions": predictions, "w": w}, "real": real}


def _cases() -> list[tuple[str, dict[str, Any]]]:
    out = []
    evidences = [
        ("noev", {"evidence_weight": 0.0}),
        ("learned", {"evidence_weight": 1.0}),  # each region's own evidence precision (the only rule since 2026-12-07)
    ]
    for kernel, shape, (ev_name, ev), ent, sizing in itertools.product(
        ["flat", "gaussian", "ball", "auto"], ["spherical", "diagonal"], evidences, [0.0, 0.5], ["fixed", "grow"]
    ):
        params = {
            "kernel": kernel,
            "shape": shape,
            "label_entropy_coeff": ent,
            "sizing": sizing,
            "n_spotlights": 2,
            "steps": 60,
            "restarts": 4,
            "device": "cpu",
            "seed": 3,
            **ev,
        }
        out.append((f"{kernel}-{shape}-{ev_name}-ent{ent}-{sizing}", params))
    return out


def run(out: Path) -> dict[str, np.ndarray]:
    torch.set_num_threads(1)
    saved: dict[str, np.ndarray] = {}
    for data_name, data in _inputs().items():
        for name, params in _cases():
            if data_name == "real" and params["shape"] == "diagonal" and params["label_entropy_coeff"] > 0:
                continue  # the slowest corner (autograd over 384 columns); the synthetic input covers it
            try:
                res = search(
                    data["x"],
                    data["loss"],
                    params,
                    labels=data["labels"],
                    predictions=data["predictions"],
                    sample_weights=data["w"],
                )
            except (pydantic.ValidationError, ValueError) as exc:
                print(f"{data_name}/{name}: refused ({type(exc).__name__})")
                continue
            key = f"{data_name}/{name}"
            saved[key + "/weights"] = res.weights
            saved[key + "/values"] = np.array(
                [[r.weighted_loss, r.total_weight, float(r.steps_run)] for r in res.regions], dtype=np.float64
            )
            saved[key + "/centers"] = np.stack([np.asarray(r.center, dtype=np.float64) for r in res.regions])
    np.savez_compressed(out, **saved)
    return saved


def compare(now: dict[str, np.ndarray], before_path: Path) -> int:
    with np.load(before_path) as f:
        before = {k: f[k] for k in f.files}
    worst, bad = 0.0, 0
    for key in sorted(set(before) | set(now)):
        if key not in before or key not in now:
            print(f"{key}: only in {'before' if key in before else 'after'}")
            bad += 1
            continue
        a, b = before[key], now[key]
        if a.shape != b.shape:
            print(f"{key}: shape {a.shape} -> {b.shape}")
            bad += 1
            continue
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        worst = max(worst, diff)
        if diff > 0:
            print(f"{key}: max |diff| {diff:.3g}")
    print(f"{len(now)} arrays, {bad} missing or reshaped, largest difference {worst:.3g}")
    return 1 if bad or worst > 1e-5 else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path, default=None, help="an earlier --out to compare with")
    args = parser.parse_args()
    started = time.perf_counter()
    now = run(args.out)
    print(f"{len(now)} arrays in {time.perf_counter() - started:.0f} s -> {args.out}")
    return compare(now, args.compare) if args.compare is not None else 0


if __name__ == "__main__":
    raise SystemExit(main())
