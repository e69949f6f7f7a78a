"""Built-in net ``gaussian_chain``: a deep linear chain of i.i.d. Gaussian square matrices.

The setting of Feng et al. (NeurIPS 2022), Theorem 5 and App. A.7: ``F = f_L o ... o f_1`` with every
Jacobian ``J_l = W_l`` an ``n x n`` matrix of i.i.d. ``N(0, std^2)`` entries (the real Ginibre ensemble
when ``std = 1``). The Lyapunov exponents of the product ``W_L ... W_1`` are
``lambda_k = 0.5 * (log 2 + digamma((n - k + 1) / 2)) + log(std)`` (see :mod:`suite.theory.ginibre`).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from suite.models.registry import BuildContext, register_builtin_net
from suite.spec.base import SpecModel

__all__ = ["GaussianChainParams", "gaussian_chain"]


class GaussianChainParams(SpecModel):
    """``depth`` bias-free ``Linear(width, width)`` layers with i.i.d. ``N(0, std^2)`` weights, no activation."""

    width: int = Field(..., ge=1, description="n: every layer maps R^n -> R^n.")
    depth: int = Field(..., ge=1, description="L: number of layers (matrices in the product).")
    std: float = Field(1.0, gt=0.0, description="Entry standard deviation; 1.0: the standard real Ginibre ensemble.")
    bias: bool = Field(False, description="Add a zero-initialised bias (it does not change any Jacobian).")


@register_builtin_net(GaussianChainParams)
def gaussian_chain(params: GaussianChainParams, ctx: BuildContext) -> nn.Module:
    """Deep linear chain of i.i.d. N(0, std^2) n x n matrices (Feng et al. 2022, Thm 5; Ginibre when std = 1).

    Weights are drawn layer by layer, in order, from torch's global RNG in float64 (the runner seeds it with
    the case seed) and stored in the model dtype. The returned ``nn.Sequential`` carries ``weight_std`` (the
    ``std`` it was drawn with), which the ``ginibre_lyapunov`` metric uses to shift the theory by ``log std``.
    """
    n = params.width
    layers = []
    for _ in range(params.depth):
        linear = nn.Linear(n, n, bias=params.bias)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(n, n, dtype=torch.float64) * params.std)
            if linear.bias is not None:
                linear.bias.zero_()
        layers.append(linear)
    model = nn.Sequential(*layers)
    model.weight_std = float(params.std)
    return model
