"""Closed-form Hessian ranks of deep linear networks (Singh, Bachmann & Hofmann, NeurIPS 2021)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LinearFCNRanks", "linear_fcn_ranks"]


@dataclass(frozen=True)
class LinearFCNRanks:
    """Predicted ranks and the intermediate quantities of Singh et al. (2021), Thm 3 and 4 / Cor. 1."""

    r: int
    s: int
    q: int
    outer: int
    functional: int
    loss: int


def linear_fcn_ranks(data_rank: int, widths: list[int], loss: str = "mse") -> LinearFCNRanks:
    """Ranks of ``H_o``, ``H_f`` and ``H_L`` for a bias-free deep linear net ``d -> M_1 -> ... -> M_{L-1} -> K``.

    With ``r = rank(X^T X)``, ``s = min(r, K)`` and ``q = min(r, K, M_1, ..., M_{L-1})`` (for cross-entropy
    ``K -> K - 1``, since the softmax output Hessian has rank ``K - 1``):

    * ``rank(H_o) = q (r + K - q)``                                  (Singh et al. 2021, Thm 3)
    * ``rank(H_f) = 2 q sum_l M_l + 2 q s - L q^2``                  (Thm 4; sum over hidden widths)
    * ``rank(H_L) = 2 q sum_l M_l - L q^2 + q (r + K)``              (Cor. 1)

    Args:
        data_rank: ``r``, the rank of the (uncentred) input Gram matrix ``X^T X``.
        widths: ``[d, M_1, ..., M_{L-1}, K]``, input first; ``L = len(widths) - 1`` weight matrices.
        loss: ``mse`` or ``cross_entropy``.
    """
    if len(widths) < 2:
        raise ValueError(f"widths needs the input and output sizes at least; got {widths}")
    k = widths[-1] - 1 if loss == "cross_entropy" else widths[-1]
    hidden = widths[1:-1]
    n_maps = len(widths) - 1
    r = data_rank
    s = min(r, k)
    q = min([r, k, *hidden])
    outer = q * (r + k - q)
    functional = 2 * q * sum(hidden) + 2 * q * s - n_maps * q * q
    total = 2 * q * sum(hidden) - n_maps * q * q + q * (r + k)
    return LinearFCNRanks(r, s, q, outer, functional, total)
