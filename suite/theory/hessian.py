"""Closed-form Hessian ranks of deep linear networks (Singh, Bachmann & Hofmann, NeurIPS 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from suite.errors import MetricError
from suite.theory.registry import Prediction, register_theory

if TYPE_CHECKING:
    from suite.spec.expand import Case

__all__ = ["LinearFCNRanks", "linear_fcn_hessian_ranks", "linear_fcn_ranks"]


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
    * ``rank(H_f) = 2 q sum_l M_l + 2 q s - L q^2``                  (Thm 4, L >= 2; sum over hidden widths;
      ``H_f = 0`` for ``L = 1``, where the output is linear in the parameters)
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
    # one map (L = 1): F is linear in theta, so H_f = 0 (Thm 4 is stated for L >= 2)
    functional = 2 * q * sum(hidden) + 2 * q * s - n_maps * q * q if n_maps >= 2 else 0
    total = 2 * q * sum(hidden) - n_maps * q * q + q * (r + k)
    return LinearFCNRanks(r, s, q, outer, functional, total)


@register_theory("Singh, Bachmann & Hofmann, Analytic Insights into Structure and Rank of Neural Network Hessian Maps, NeurIPS 2021: Thm 3, Thm 4, Cor. 1")
def linear_fcn_hessian_ranks(case: Case, values: dict[str, Any]) -> Prediction:
    """``[rank H_o, rank H_f, rank H_L]`` of a bias-free deep linear MLP (:func:`linear_fcn_ranks`).

    Applies to ``source: builtin, name: mlp`` with ``activation: identity`` and ``bias: false`` under the
    ``hessian_rank`` metric, whose values hold the measured data rank ``r``.
    """
    model = case.model
    if getattr(model, "name", None) != "mlp" or model.activation != "identity" or model.bias:
        raise MetricError(f"linear_fcn_hessian_ranks needs a builtin mlp with activation identity and bias false; case {case.id} is not")
    pred = linear_fcn_ranks(int(values["data_rank"]), list(model.widths), case.metric.params.loss)
    return Prediction(
        [pred.outer, pred.functional, pred.loss],
        {"r": pred.r, "s": pred.s, "q": pred.q, "L": len(model.widths) - 1, "widths": list(model.widths), "loss": case.metric.params.loss},
    )
