"""The Fréchet distance between two Gaussians fitted to feature sets: FVD when the features are I3D's.

``d² = |μ₁ - μ₂|² + tr(Σ₁) + tr(Σ₂) - 2 tr((Σ₁ Σ₂)^½)`` (Dowson & Landau 1982; Heusel et al. 2017 for FID,
Unterthiner et al. 2018 for FVD). Means and covariances are those of the feature rows, the covariance with
the ``n - 1`` denominator (``numpy.cov``), as the common FID/FVD implementations compute them.

The trace of the matrix square root is computed without ``scipy.linalg.sqrtm``: ``Σ₁ Σ₂`` is similar to the
symmetric positive semi-definite ``S = Σ₁^½ Σ₂ Σ₁^½``, so ``tr((Σ₁ Σ₂)^½) = Σᵢ √λᵢ(S)``, with ``Σ₁^½`` and the
eigenvalues from symmetric eigendecompositions in float64 (round-off negatives clipped to 0). This is exact
for the rank-deficient covariances of small sets (fewer clips than feature dimensions), where ``sqrtm`` of
the product warns or returns complex values.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, D)`` feature rows -> mean ``(D,)`` and covariance ``(D, D)`` (float64, ``N - 1`` denominator).

    Raises:
        ValueError: fewer than two rows (no covariance).
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least two feature rows of shape (N, D), got {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((Σ₁ Σ₂)^½)`` for two covariance matrices (see the module docstring)."""
    root = _psd_sqrt(sigma1)
    middle = root @ sigma2 @ root
    values = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(values, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(μ₁, Σ₁) and N(μ₂, Σ₂); >= 0."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched shapes: {mu1.shape}, {sigma1.shape} vs {mu2.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return max(float(value), 0.0)


def frechet_distance_of_features(a: np.ndarray, b: np.ndarray) -> float:
    """FVD-style distance between two ``(N, D)`` / ``(M, D)`` feature sets (each at least two rows)."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
