"""Synthetic data shared by the whitening, ANN and tuning tests (deterministic by seed)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def random_shape(d: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """A well-conditioned but clearly non-spherical SPD shape matrix with trace d."""
    A = rng.standard_normal((d, d))
    S = A @ A.T / d + 0.1 * np.eye(d)
    return S * d / np.trace(S)


def normalised(S: NDArray[np.float64]) -> NDArray[np.float64]:
    """Scale a scatter to trace d, the normalisation Tyler's shape is defined up to."""
    return S * S.shape[0] / np.trace(S)


def multivariate_t(
    n: int, shape: NDArray[np.float64], df: float, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Student-t rows with scatter ``shape``: Gaussian / sqrt(chi2_df / df)."""
    L = np.linalg.cholesky(shape)
    g = rng.standard_normal((n, shape.shape[0])) @ L.T
    w = rng.chisquare(df, size=n) / df
    return g / np.sqrt(w)[:, None]


def clustered_vectors(
    n: int, dim: int, n_clusters: int, rng: np.random.Generator, spread: float = 4.0
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Unit-variance Gaussian blobs around ``n_clusters`` centres; returns (vectors, centres).

    Well-separated clusters are where a sparse HNSW graph (small M, small ef) misses true
    neighbours, which the ANN and tuning tests rely on.
    """
    centres = rng.standard_normal((n_clusters, dim)) * spread
    labels = rng.integers(0, n_clusters, size=n)
    X = centres[labels] + rng.standard_normal((n, dim))
    return X.astype(np.float32), centres


def queries_near(
    centres: NDArray[np.float64], n: int, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Fresh points from the same blobs (not copies of indexed vectors)."""
    picks = rng.integers(0, centres.shape[0], size=n)
    return (centres[picks] + rng.standard_normal((n, centres.shape[1]))).astype(np.float32)
