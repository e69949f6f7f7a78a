"""``block_orthogonal``: a two-map linear net whose SVR adjacency is a planted block-orthogonal matrix.

The validation of internal dimensions in Meller & Berkouk, App. B.1: ``P = diag(Q_p, Q_{n-p})`` with
``Q_p``, ``Q_{n-p}`` Haar-distributed orthogonal matrices, noised on the orthogonal group as
``P(eps) = P expm(eps (A - A^T))`` with ``A`` standard Gaussian. The net is

    W_0 = P(eps) diag(s),   W_1 = diag(s),   s = linspace(2, 1, n)

so ``U_0 = P(eps)`` (distinct decreasing singular values pin the singular vectors up to sign) and
``V_1 = I``: the SVR adjacency ``|V_1^T U_0|^2`` is ``|P(eps)|^2`` entrywise, and at ``eps = 0`` the
internal dimensions are ``(p, p)`` (see :func:`suite.theory.svr.block_orthogonal_dimensions`).
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import nn

from suite.models.registry import BuildContext, register_builtin_net
from suite.spec.base import SpecModel

__all__ = ["BlockOrthogonalParams", "block_orthogonal", "haar_orthogonal", "rotation_noise"]


class BlockOrthogonalParams(SpecModel):
    """App. B.1 of Meller & Berkouk: ``n x n`` block-orthogonal ``P`` with blocks ``p`` and ``n - p``, noise ``eps``."""

    n: int = Field(100, ge=2, description="Dimension (paper: 100).")
    p: int = Field(..., ge=1, description="Size of the first orthogonal block (paper: 10, 30, 70, 90).")
    noise: float = Field(0.0, ge=0.0, description="eps in P(eps) = P expm(eps (A - A^T)).")

    @model_validator(mode="after")
    def _block_fits(self) -> BlockOrthogonalParams:
        if self.p >= self.n:
            raise ValueError(f"p must be smaller than n; got p={self.p}, n={self.n}")
        return self


def haar_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-distributed ``n x n`` orthogonal matrix (QR of a Gaussian matrix with the sign fix of Mezzadri 2007)."""
    q, r = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=generator))
    return q * torch.sign(torch.diagonal(r))


def rotation_noise(n: int, eps: float, generator: torch.Generator) -> torch.Tensor:
    """``expm(eps (A - A^T))`` with ``A`` standard Gaussian ``n x n``: a random rotation near the identity (App. B.1)."""
    a = torch.randn(n, n, dtype=torch.float64, generator=generator)
    return torch.linalg.matrix_exp(eps * (a - a.mT))


@register_builtin_net(BlockOrthogonalParams)
def block_orthogonal(params: BlockOrthogonalParams, ctx: BuildContext) -> nn.Module:
    """Two bias-free linear maps ``n -> n -> n`` with SVR adjacency ``|P(eps)|^2`` (module docstring)."""
    gen = torch.Generator().manual_seed(ctx.seed)
    n, p = params.n, params.p
    block = torch.zeros(n, n, dtype=torch.float64)
    block[:p, :p] = haar_orthogonal(p, gen)
    block[p:, p:] = haar_orthogonal(n - p, gen)
    if params.noise > 0:
        block = block @ rotation_noise(n, params.noise, gen)
    s = torch.linspace(2.0, 1.0, n, dtype=torch.float64)
    first, second = nn.Linear(n, n, bias=False), nn.Linear(n, n, bias=False)
    with torch.no_grad():
        first.weight.copy_(block * s)
        second.weight.copy_(torch.diag(s))
    return nn.Sequential(first, second)
