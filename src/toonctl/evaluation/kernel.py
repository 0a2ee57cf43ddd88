"""KVD: the unbiased squared maximum mean discrepancy with the cubic polynomial kernel (as KID, Bińkowski et
al. 2018), on I3D features.

``k(x, y) = (x·y / d + 1)³`` with ``d`` the feature dimension. For sets ``X`` (m rows) and ``Y`` (n rows):

``MMD²ᵤ = Σ_{i≠j} k(xᵢ, xⱼ) / (m(m-1)) + Σ_{i≠j} k(yᵢ, yⱼ) / (n(n-1)) - 2 Σ_{i,j} k(xᵢ, yⱼ) / (mn)``

computed once over all rows (no random subsets: an evaluation has few clips), in float64. The estimator is
unbiased, so it can be slightly negative when the two sets come from one distribution. The value is reported
as is (KID is often quoted x1000; toonctl does not scale it).
"""

from __future__ import annotations

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0):
    """``(x yᵀ γ + c)^degree`` for ``(m, d)`` and ``(n, d)`` rows -> ``(m, n)``; ``γ`` defaults to ``1/d``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, **kernel_args) -> float:
    """The unbiased squared MMD between two ``(m, d)`` / ``(n, d)`` sets (each at least two rows)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(x.shape[0], y.shape[0]) < 2:
        raise ValueError(f"need two sets of at least two rows of one dimension, got {x.shape} and {y.shape}")
    m, n = x.shape[0], y.shape[0]
    k_xx = polynomial_kernel(x, x, **kernel_args)
    k_yy = polynomial_kernel(y, y, **kernel_args)
    k_xy = polynomial_kernel(x, y, **kernel_args)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())
