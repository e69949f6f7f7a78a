"""Lyapunov exponents of products of i.i.d. Gaussian (Ginibre) matrices.

Feng et al., "Rank Diminishing in Deep Neural Networks", NeurIPS 2022, Theorem 5 and App. A.7
(Theorem 11 there, citing Newman 1986 / Forrester 2013 [38]): for ``J_F = W_L ... W_1`` with ``W_l``
i.i.d. ``n x n`` standard Gaussian (real Ginibre) matrices, almost surely

    lim_{L -> inf} (1/L) log sigma_k(J_F) = lambda_k = 0.5 * (log 2 + digamma((n - k + 1) / 2)),   k = 1..n

(``digamma = Gamma' / Gamma``; paper eq. (10) states the differences ``lambda_k - lambda_1``, eq. (A93)
the exponents themselves). So ``sigma_k / sigma_1 ~ exp(-L (lambda_1 - lambda_k))`` and the numerical
rank falls to 1 exponentially with depth.

Where the formula comes from: ``W_l Q`` is again Ginibre for any orthogonal ``Q`` (rotation invariance),
so in the QR iteration ``W_l Q_{l-1} = Q_l R_l`` the ``|R_l[k, k]|`` are independent ``chi_{n-k+1}``
variables and ``E log chi_m = 0.5 * (log 2 + digamma(m / 2))``. The QR estimate
``(1/L) sum_l log |R_l[k, k]|`` is therefore *unbiased* at every depth ``L``, with standard deviation
``sqrt(trigamma((n-k+1)/2) / (4 L))`` (``Var log chi_m = trigamma(m/2) / 4``); :func:`ginibre_standard_errors`.

Scaled weights ``W = std * G``: every singular value of the product scales by ``std^L``, so every exponent
shifts by ``log(std)``: ``lambda_k(std) = lambda_k + log std``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from scipy.special import digamma, polygamma

from suite.errors import MetricError
from suite.theory.registry import Prediction, register_theory

if TYPE_CHECKING:
    from suite.spec.expand import Case

__all__ = ["ginibre_exponents", "ginibre_lyapunov", "ginibre_standard_errors"]


def ginibre_exponents(n: int, std: float = 1.0) -> list[float]:
    """Lyapunov exponents ``lambda_1 >= ... >= lambda_n`` of products of ``n x n`` i.i.d. N(0, std^2) matrices.

    ``lambda_k = 0.5 * (log 2 + digamma((n - k + 1) / 2)) + log(std)``, k = 1..n
    (Feng et al. 2022, Thm 5 / eq. (10) and App. A.7 eq. (A93); the ``log std`` shift follows from
    ``sigma_k(std^L P) = std^L sigma_k(P)``).

    >>> round(ginibre_exponents(1)[0], 6)  # 0.5 * (log 2 + digamma(1/2)) = -(gamma + log 2) / 2
    -0.635181
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    if std <= 0:
        raise ValueError(f"std must be > 0; got {std}")
    shift = math.log(std)
    return [0.5 * (math.log(2.0) + float(digamma((n - k + 1) / 2.0))) + shift for k in range(1, n + 1)]


def ginibre_standard_errors(n: int, depth: int) -> list[float]:
    """Exact standard deviation of the depth-``L`` QR estimate of each exponent, ``sqrt(trigamma((n-k+1)/2) / (4 L))``.

    The QR estimate of ``lambda_k`` is the mean of ``L`` i.i.d. ``log chi_{n-k+1}`` (module doc), and
    ``Var log chi_m = Var(0.5 log chi^2_m) = trigamma(m / 2) / 4``. Independent of ``std``.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1; got {depth}")
    return [math.sqrt(float(polygamma(1, (n - k + 1) / 2.0)) / (4.0 * depth)) for k in range(1, n + 1)]


@register_theory(
    "Feng et al., Rank Diminishing in Deep Neural Networks, NeurIPS 2022, Thm 5 eq. (10) and App. A.7 eq. (A93) "
    "(Lyapunov exponents of Ginibre products, Newman 1986)"
)
def ginibre_lyapunov(case: Case, values: dict[str, Any]) -> Prediction:
    """``lambda_k = 0.5 (log 2 + digamma((n-k+1)/2)) + log std``, k = 1..n, for the ``n`` the metric recorded.

    ``n`` comes from ``values["n"]`` (written by the ``ginibre_lyapunov`` metric); ``std`` is the model's
    ``std`` for ``source: builtin, name: gaussian_chain`` (the exponents shift by ``log std``), else the
    ``std`` the metric recorded in ``values["std"]``. The details carry the exact finite-depth standard error
    of each QR estimate, ``sqrt(trigamma((n-k+1)/2) / (4 L))``, to size the tolerance against.
    """
    if "n" not in values:
        raise MetricError("ginibre_lyapunov needs values['n'] (run it on the ginibre_lyapunov metric)")
    n = int(values["n"])
    model = case.model
    if getattr(model, "source", None) == "builtin" and getattr(model, "name", None) == "gaussian_chain":
        if model.width != n:
            raise MetricError(f"gaussian_chain width {model.width} != measured n {n}")
        std, std_from = float(model.std), "model std"
    else:
        std, std_from = float(values.get("std", 1.0)), "metric values"
    expected = ginibre_exponents(n, std)
    details: dict[str, Any] = {"n": n, "std": std, "std from": std_from, "log std shift": math.log(std)}
    if "depth" in values:
        errors = ginibre_standard_errors(n, int(values["depth"]))
        details["depth L"] = int(values["depth"])
        details["max standard error (k = n)"] = round(max(errors), 6)
    return Prediction(expected, details)
