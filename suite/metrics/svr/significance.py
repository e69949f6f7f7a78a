"""Null models of SVR adjacency coefficients and the significance thresholds derived from them.

Under the null hypothesis that the two maps' singular vectors are independent and uniform on their
spheres (Meller & Berkouk, Sec. 2.4 and 4.3):

* FC (Thm 2.1, Borel; Diaconis & Freedman): ``<X, Y>^2 ~ (1/c) chi2(1)``; exactly
  ``<X, Y>^2 ~ Beta(1/2, (c-1)/2)`` with mean ``1/c`` and fourth moment ``E<X,Y>^4 = 3/(c^2 + 2c)``
  (Prop. A.1).
* conv (Thm 4.1): ``a ~ 1/(c Z) chi2(Z)`` with ``Z = K^2`` kernel positions; in general ``Z`` is the
  number of kernel positions summed over, ``Z_u Z_v`` (:mod:`suite.metrics.svr.spectral`). The mean is
  ``1/c`` in both cases.

A coefficient is significant when it exceeds the ``1 - p`` quantile of its null law, where ``p`` is the
probability that a null coefficient passes. The released code sets ``p = 1 - Phi(sigma)`` (one-sided
normal tail, 3 sigma by default): then ``c * threshold = 10.27`` (Z = 1), ``3.01`` (Z = 9),
``1.72`` (Z = 49).
"""

from __future__ import annotations

from scipy import stats

__all__ = ["beta_law", "chi2_law", "expected_null_count", "fourth_moment_fc", "sigma_to_tail", "threshold"]


def sigma_to_tail(sigma: float) -> float:
    """``p = 1 - Phi(sigma)``: the one-sided normal tail of ``sigma`` standard deviations (released code)."""
    return float(stats.norm.sf(sigma))


def threshold(shared_dim: int, dof: int, tail_p: float) -> float:
    """Coefficient threshold ``chi2.isf(p, Z) / (c Z)``: a null coefficient exceeds it with probability ``p``."""
    if not 0.0 < tail_p < 1.0:
        raise ValueError(f"tail probability must lie in (0, 1), got {tail_p}")
    return float(stats.chi2.isf(tail_p, dof)) / (shared_dim * dof)


def expected_null_count(n_rows: int, n_cols: int, tail_p: float) -> float:
    """Expected number of significant coefficients among ``n_rows x n_cols`` null ones: ``p n_rows n_cols``."""
    return tail_p * n_rows * n_cols


def fourth_moment_fc(shared_dim: int) -> float:
    """``E <X, Y>^4 = 3 / (c^2 + 2c)`` for independent uniform unit vectors in R^c (Prop. A.1)."""
    return 3.0 / (shared_dim**2 + 2 * shared_dim)


def beta_law(shared_dim: int):
    """The exact law of ``c <X, Y>^2`` for uniform unit vectors in R^c: ``c * Beta(1/2, (c-1)/2)`` (scipy frozen)."""
    if shared_dim < 2:
        raise ValueError("the Beta law needs c >= 2")
    return stats.beta(0.5, (shared_dim - 1) / 2.0, scale=float(shared_dim))


def chi2_law(dof: int):
    """The null model of ``c Z a``: ``chi2(Z)`` (scipy frozen); ``c a`` then follows ``chi2(Z) / Z``."""
    return stats.chi2(dof)

