"""A Domino-style mixture slicer, written here from the paper's description, as the baseline a user
would pick instead of the spotlight (Eyuboglu et al., "Domino: Discovering Systematic Errors with
Cross-Modal Embeddings", ICLR 2022, section 4).

The paper's slicer is a mixture model whose components ("slices") each explain the embeddings (a
gaussian with diagonal covariance over PCA-reduced embeddings), the labels (a categorical) and the
model's predictions (a categorical over predicted probabilities); the label and prediction terms
are up-weighted in the log-likelihood (the paper's default weight: 10) so that slices separate
error types, not only regions of embedding space. It is fitted by EM with more components than
slices wanted (25), and the components where the model errs most become the slices. Each example's
score for a slice is its responsibility (posterior probability of the component).

Here: numpy EM, components initialised by k-means (scikit-learn) on the reduced embeddings; slices
ranked by their responsibility-weighted mean loss (the paper ranks by how far predictions stray
from labels, which for cross-entropy losses is the same ordering in spirit).
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA


def fit_slices(
    embeddings: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    losses: np.ndarray,
    n_slices: int = 5,
    n_components: int = 25,
    pca_components: int = 128,
    y_weight: float = 10.0,
    y_hat_weight: float = 10.0,
    iters: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """Per-example slice scores (n x n_slices, responsibilities), worst slice first."""
    n, d = embeddings.shape
    z = embeddings.astype(np.float64)
    z = PCA(n_components=min(pca_components, d, n), random_state=seed).fit_transform(z)
    z = (z - z.mean(0)) / max(float(z.std()), 1e-12)
    n_classes = probs.shape[1]
    y = np.zeros((n, n_classes))
    y[np.arange(n), labels] = 1.0
    p = np.clip(probs.astype(np.float64), 1e-12, None)
    p /= p.sum(1, keepdims=True)

    assign = KMeans(n_clusters=n_components, n_init=3, random_state=seed).fit_predict(z)
    resp = np.zeros((n, n_components))
    resp[np.arange(n), assign] = 1.0
    for _ in range(iters):
        # M step
        nk = resp.sum(0) + 1e-9
        weights = nk / n
        means = resp.T @ z / nk[:, None]
        var = resp.T @ (z * z) / nk[:, None] - means**2 + 1e-3
        y_probs = (resp.T @ y + 1e-3) / (nk[:, None] + 1e-3 * n_classes)
        y_hat_probs = (resp.T @ p + 1e-3) / (nk[:, None] + 1e-3 * n_classes)
        # E step: log pi + log N(z) + w_y * log P(y) + w_yhat * sum_c p_c log q_c
        log_n = -0.5 * (((z[:, None, :] - means[None]) ** 2) / var[None] + np.log(2 * np.pi * var[None])).sum(2)
        log_lik = (
            np.log(weights)[None]
            + log_n
            + y_weight * (y @ np.log(y_probs).T)
            + y_hat_weight * (p @ np.log(y_hat_probs).T)
        )
        log_lik -= log_lik.max(1, keepdims=True)
        resp = np.exp(log_lik)
        resp /= resp.sum(1, keepdims=True)
    mass = resp.sum(0) + 1e-9
    error = (resp * losses[:, None]).sum(0) / mass
    worst = np.argsort(-error)[:n_slices]
    return resp[:, worst]
