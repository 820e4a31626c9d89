"""The real data both quality benchmarks train on: scikit-learn's handwritten digits, shifted by a
pixel to a few thousand rows, and the small MLP whose penultimate layer gives the embeddings
(`bench.quality`, `bench.quality_modes`)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits


def augmented_digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits (8x8) plus 1-pixel shifts, so the held-out split has a few thousand examples.

    Returns images (N x 64, in [0, 1]), labels, and the id of the original image (splits are made
    on it so that shifted copies of one image never straddle train and test).
    """
    digits = load_digits()
    images = digits.images / 16.0
    out, labels, ids = [], [], []
    for dy, dx in [(0, 0), (0, 1), (0, -1), (1, 0), (-1, 0)]:
        shifted = np.roll(np.roll(images, dy, axis=1), dx, axis=2)
        out.append(shifted.reshape(len(images), -1))
        labels.append(digits.target)
        ids.append(np.arange(len(images)))
    return np.concatenate(out).astype(np.float32), np.concatenate(labels), np.concatenate(ids)


def train_mlp(x: np.ndarray, y: np.ndarray, seed: int, epochs: int = 40) -> torch.nn.Module:
    torch.manual_seed(seed)
    body = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU())
    model = torch.nn.Sequential(body, torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 128):
            idx = order[i : i + 128]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model
