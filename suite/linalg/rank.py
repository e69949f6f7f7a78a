"""Numerical rank: singular values in float64 and the threshold rules of the seed papers.

Every rank in ranksuite comes from here. The rules (``../shared/REFERENCE.md`` section 0):

* ``feng`` (Feng et al. 2022, eq. 4 and Sec. 3):
  ``Rank_eps(W) = #{i : sigma_i > eps * sigma_1}`` with ``eps = eps_float32 * N``, where
  ``eps_float32 = 2**-23 ~ 1.19e-7`` and ``N`` is the number of singular values, ``min(M, N)``.
* ``numpy`` (``numpy.linalg.matrix_rank``, used by the Hessian-rank code of Singh et al.):
  ``threshold = sigma_1 * max(M, N) * eps(dtype)``, with ``dtype`` the precision of the matrix as it
  was produced (float32 weights -> float32 eps) unless the rule names one.
* ``explicit``: ``threshold = max(atol, rtol * sigma_1)``.

A singular value counts when it is strictly greater than the threshold. Singular values are always
computed from the matrix itself with ``torch.linalg.svdvals`` in float64, never from ``J^T J`` (which
squares the condition number; the released rank-diminishing code did that in float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EPS_FLOAT32",
    "EPS_FLOAT64",
    "ExplicitRule",
    "FengRule",
    "NumpyRule",
    "RankResult",
    "RankRule",
    "effective_rank",
    "numerical_rank",
    "rank_from_singular_values",
    "rank_threshold",
    "singular_values",
    "stable_rank",
]

EPS_FLOAT32 = float(torch.finfo(torch.float32).eps)  # 2**-23 = 1.1920929e-07
EPS_FLOAT64 = float(torch.finfo(torch.float64).eps)  # 2**-52 = 2.220446e-16
_EPS = {"float32": EPS_FLOAT32, "float64": EPS_FLOAT64}


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FengRule(_Rule):
    """``sigma_i > eps_base * N * sigma_1`` (Feng et al. 2022, eq. 4; paper default eps_base = eps_float32)."""

    rule: Literal["feng"] = "feng"
    eps_base: Literal["float32", "float64"] = Field(
        "float32", description="Machine epsilon multiplied by N; the paper uses float32."
    )


class NumpyRule(_Rule):
    """``sigma_i > sigma_1 * max(M, N) * eps(dtype)`` (numpy.linalg.matrix_rank)."""

    rule: Literal["numpy"] = "numpy"
    dtype: Literal["float32", "float64"] | None = Field(
        None, description="Precision whose epsilon is used; default: the matrix's own dtype."
    )


class ExplicitRule(_Rule):
    """``sigma_i > max(atol, rtol * sigma_1)``."""

    rule: Literal["explicit"] = "explicit"
    rtol: float = Field(0.0, ge=0.0, description="Relative tolerance (times sigma_1).")
    atol: float = Field(0.0, ge=0.0, description="Absolute tolerance.")


RankRule = Annotated[FengRule | NumpyRule | ExplicitRule, Field(discriminator="rule")]


@dataclass(frozen=True)
class RankResult:
    """The numerical rank of one matrix and what it was decided on.

    Attributes:
        rank: number of singular values strictly above ``threshold``.
        threshold: the absolute threshold the rule produced.
        gap: ``sigma_r / sigma_{r+1}``, how well separated the kept values are from the dropped ones;
            ``None`` when there is no ``sigma_{r+1}`` (full rank) or ``r == 0``.
        sigma_max: ``sigma_1``.
        n_singular: number of singular values, ``min(M, N)``.
    """

    rank: int
    threshold: float
    gap: float | None
    sigma_max: float
    n_singular: int


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values, descending, computed in float64.

    Args:
        matrix: tensor of shape ``(..., M, N)``; a batch of matrices is handled in one call.

    Returns:
        float64 tensor of shape ``(..., min(M, N))`` on the matrix's device.

    Wide matrices are decomposed as their transpose (same singular values): LAPACK's divide-and-conquer
    SVD behind ``torch.linalg.svdvals`` is several times faster on tall inputs, where it reduces by QR first.
    """
    if matrix.ndim < 2:
        raise ValueError(f"singular_values needs a matrix of shape (..., M, N); got shape {tuple(matrix.shape)}")
    values = matrix.to(torch.float64)
    if values.shape[-2] < values.shape[-1]:
        values = values.transpose(-2, -1)
    return torch.linalg.svdvals(values)


def rank_threshold(
    sigma_max: float, shape: tuple[int, int], rule: FengRule | NumpyRule | ExplicitRule, source_dtype: torch.dtype
) -> float:
    """Absolute threshold of ``rule`` for a matrix of ``shape = (M, N)`` with largest singular value ``sigma_max``.

    Formulas: see the module docstring. ``source_dtype`` is the dtype the matrix was produced in
    (it matters only for the ``numpy`` rule without an explicit dtype).
    """
    m, n = shape
    if isinstance(rule, FengRule):
        return _EPS[rule.eps_base] * min(m, n) * sigma_max
    if isinstance(rule, NumpyRule):
        eps = _EPS[rule.dtype] if rule.dtype else float(torch.finfo(source_dtype).eps)
        return sigma_max * max(m, n) * eps
    if isinstance(rule, ExplicitRule):
        return max(rule.atol, rule.rtol * sigma_max)
    raise TypeError(f"unknown rank rule {rule!r}")


def rank_from_singular_values(
    sigma: torch.Tensor,
    shape: tuple[int, int],
    rule: FengRule | NumpyRule | ExplicitRule,
    source_dtype: torch.dtype = torch.float32,
    scale: float | None = None,
) -> RankResult:
    """Numerical rank from descending singular values ``sigma`` (1-D, length ``min(shape)``).

    ``scale``: decide the threshold with ``max(sigma_1, scale)`` in place of ``sigma_1``, for a matrix
    whose rounding errors are those of a larger one (``H_f = H_L - H_o`` carries errors of size
    ``eps sigma_1(H_L)``, so a numerically-zero ``H_f`` must come out as rank 0, not full rank).
    """
    values = sigma.detach().to("cpu", torch.float64)
    if values.ndim != 1:
        raise ValueError(f"expected a 1-D tensor of singular values; got shape {tuple(values.shape)}")
    sigma_max = float(values[0]) if values.numel() else 0.0
    threshold = rank_threshold(max(sigma_max, scale or 0.0), shape, rule, source_dtype)
    rank = int((values > threshold).sum())
    gap: float | None = None
    if 0 < rank < values.numel():
        below = float(values[rank])
        gap = float(values[rank - 1]) / below if below > 0 else math.inf
    return RankResult(rank=rank, threshold=threshold, gap=gap, sigma_max=sigma_max, n_singular=int(values.numel()))


def numerical_rank(matrix: torch.Tensor, rule: FengRule | NumpyRule | ExplicitRule | None = None) -> RankResult:
    """Numerical rank of one ``(M, N)`` matrix under ``rule`` (default: ``feng``).

    >>> import torch
    >>> a = torch.randn(20, 3, dtype=torch.float64) @ torch.randn(3, 30, dtype=torch.float64)
    >>> numerical_rank(a).rank
    3
    """
    if matrix.ndim != 2:
        raise ValueError(f"numerical_rank needs a 2-D matrix; got shape {tuple(matrix.shape)}")
    rule = rule or FengRule()
    sigma = singular_values(matrix)
    return rank_from_singular_values(sigma, (matrix.shape[0], matrix.shape[1]), rule, matrix.dtype)


def stable_rank(sigma: torch.Tensor) -> float:
    """Stable rank ``||W||_F^2 / ||W||_2^2 = sum_i sigma_i^2 / sigma_1^2`` (Rudelson & Vershynin 2007).

    Zero for the zero matrix.
    """
    values = sigma.to(torch.float64)
    top = float(values.max()) if values.numel() else 0.0
    return float((values**2).sum() / top**2) if top > 0 else 0.0


def effective_rank(sigma: torch.Tensor) -> float:
    """Effective rank ``exp(H(p))`` with ``p_i = sigma_i / sum_j sigma_j`` (Roy & Vetterli 2007, Def. 1).

    ``H`` is the Shannon entropy in nats with ``0 log 0 = 0``; equals ``k`` for ``k`` equal non-zero
    singular values. Zero for the zero matrix.
    """
    values = sigma.to(torch.float64)
    total = float(values.sum())
    if total <= 0:
        return 0.0
    p = values / total
    p = p[p > 0]
    return float(torch.exp(-(p * torch.log(p)).sum()))
