"""FVD's Fréchet distance and KVD's unbiased MMD against closed forms and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from toonctl.evaluation.frechet import frechet_distance, frechet_distance_of_features, gaussian_stats
from toonctl.evaluation.kernel import mmd2_unbiased, polynomial_kernel


def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(40, 8))
    assert frechet_distance_of_features(x, x) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_rank_deficient_sets_with_themselves_is_zero():
    x = np.random.default_rng(1).normal(size=(5, 32))  # fewer rows than dimensions, as with few clips
    assert frechet_distance_of_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_gaussians_sharing_eigenvectors_is_the_closed_form():
    # Σ1 = R diag(a) Rᵀ, Σ2 = R diag(b) Rᵀ: d² = |μ1 - μ2|² + Σ (√a - √b)²
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 16.0])
    r = _rotation(3, 2)
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1 + 0 + 4 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()  # 5 + 1 + 1 + 1
    got = frechet_distance(mu1, r @ np.diag(a) @ r.T, mu2, r @ np.diag(b) @ r.T)
    assert got == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(8.0)


def test_frechet_distance_of_general_gaussians_matches_the_eigenvalues_of_the_product():
    rng = np.random.default_rng(3)
    m1, m2 = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(4), m2 @ m2.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    # Σ1 Σ2 is not symmetric but has real positive eigenvalues: tr((Σ1 Σ2)^½) = Σ √λ
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_gaussian_stats_use_the_unbiased_covariance_and_need_two_rows():
    x = np.array([[0.0, 0.0], [2.0, 2.0]])
    mu, sigma = gaussian_stats(x)
    np.testing.assert_allclose(mu, [1.0, 1.0])
    np.testing.assert_allclose(sigma, [[2.0, 2.0], [2.0, 2.0]])
    with pytest.raises(ValueError, match="two feature rows"):
        gaussian_stats(x[:1])


def test_polynomial_kernel_defaults_to_the_cubic_kid_kernel():
    x, y = np.array([[1.0, 2.0]]), np.array([[3.0, -1.0]])
    assert polynomial_kernel(x, y)[0, 0] == pytest.approx((1 / 2 + 1) ** 3)  # x·y = 1, d = 2


def test_unbiased_mmd_on_hand_computed_cases():
    # d = 1, k(a, b) = (ab + 1)³. X = {1, 1}, Y = {-1, -1}: k_xx = k_yy = 8 off the diagonal, k_xy = 0
    assert mmd2_unbiased(np.array([[1.0], [1.0]]), np.array([[-1.0], [-1.0]])) == pytest.approx(16.0)
    # X = {0, 1}, Y = {0, 2}: within X 1, within Y 1, across (1 + 1 + 1 + 27) / 4 = 7.5 -> 1 + 1 - 15
    assert mmd2_unbiased(np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])) == pytest.approx(-13.0)


def test_unbiased_mmd_of_one_distribution_is_near_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(200, 6)), rng.normal(size=(200, 6))
    same = mmd2_unbiased(x, y)
    shifted = mmd2_unbiased(x, y + 1.0)
    assert abs(same) < 0.05 < shifted
