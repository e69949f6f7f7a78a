"""Rank of planted products of thin Gaussian matrices."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from suite.errors import MetricError
from suite.theory.registry import Prediction, register_theory

if TYPE_CHECKING:
    from suite.spec.expand import Case

__all__ = ["planted_product_rank"]


@register_theory("rank of a product of Gaussian factors; e.g. Horn & Johnson, Matrix Analysis, 0.4.5(c)")
def planted_product_rank(case: Case, values: dict[str, Any]) -> Prediction:
    """``rank(A B) = min(k, m, n)`` almost surely for ``A`` (m x k), ``B`` (k x n) with i.i.d. Gaussian entries.

    ``rank(AB) <= min(rank A, rank B) = min(k, m, n)`` (Sylvester's inequality gives the matching lower
    bound ``rank A + rank B - k``), and Gaussian factors have full rank with probability one. Applies to
    ``source: builtin, name: planted``: one prediction per map, in order.
    """
    model = case.model
    if getattr(model, "source", None) != "builtin" or getattr(model, "name", None) != "planted":
        raise MetricError(f"planted_product_rank applies to builtin 'planted' models; case {case.id} has {model.source}")
    widths, ranks = model.widths, model.ranks
    expected = [min(k, fan_out, fan_in) for fan_in, fan_out, k in zip(widths[:-1], widths[1:], ranks)]
    return Prediction(expected, {"widths": list(widths), "inner dims k": list(ranks)})
