"""Closed forms for the Singular Value Representation (Meller & Berkouk)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from suite.errors import MetricError
from suite.theory.registry import Prediction, register_theory

if TYPE_CHECKING:
    from suite.spec.expand import Case

__all__ = ["block_orthogonal_dimensions"]


@register_theory("Meller & Berkouk, SVR, Sec. 3.2 (internal dimensions) and App. B.1 (block-orthogonal validation)")
def block_orthogonal_dimensions(case: Case, values: dict[str, Any]) -> Prediction:
    """Internal dimensions ``(d_out, d_in) = (p, p)`` of ``|P|^2`` for ``P = diag(Q_p, Q_{n-p})`` at zero noise.

    With ``a = |P|^2``: ``B[p, p] = ||Q_p||_F^2 = p``, so ``B[p, p] - p^2/n = p (1 - p/n)``; along the
    edges of the first block ``B[p, j] = j`` gives ``j (1 - p/n)``, increasing in ``j``, and beyond the
    block ``B`` grows by at most the ``Q_{n-p}`` part whose mean ``ij/(n-p)`` is convex in the excess, so
    the maximum of ``B[i, j] - ij/n`` sits at ``(p, p)``. Applies to the builtin ``block_orthogonal``
    net (its first SVR pair) with ``noise: 0``.
    """
    model = case.model
    if getattr(model, "name", None) != "block_orthogonal":
        raise MetricError(f"block_orthogonal_dimensions applies to builtin block_orthogonal models; case {case.id} has {model.source}")
    return Prediction([model.p, model.p], {"n": model.n, "p": model.p, "noise": model.noise})
