"""Benchmark pairs of the Hessian-rank family.

Ours: :func:`suite.metrics.hessian.exact.loss_hessian` (rows of ``H_L`` as vector-Jacobian products of
``grad(L)`` with respect to the dict of float64 parameters, from one ``vjp`` vmapped over chunks of unit
cotangents; ``exact_hessians`` adds ``H_o`` from the output Jacobian and one GEMM). Reference: the call a
script would write, ``torch.autograd.functional.hessian`` over the tuple of parameter tensors (one
reverse pass per parameter row), assembled into the dense ``p x p`` matrix. They must agree on ``H_L``
to 1e-9 relative.
"""

from __future__ import annotations

import torch
from torch import nn

from suite.bench.harness import Pair, register_pair
from suite.metrics.hessian.exact import loss_hessian

__all__ = ["autograd_loss_hessian", "hessian_exact_vs_autograd"]

_WIDTHS = {"small": 4, "default": 16, "w16": 16, "w24": 24, "w36": 36}


def autograd_loss_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dense ``H_L`` of the mean cross-entropy of a bias-free linear MLP via ``torch.autograd.functional.hessian``."""
    params = tuple(p.detach().to(torch.float64) for p in model.parameters())
    x64 = x.to(torch.float64)

    def loss_of(*weights: torch.Tensor) -> torch.Tensor:
        h = x64
        for w in weights:
            h = h @ w.T
        return nn.functional.cross_entropy(h, y)

    blocks = torch.autograd.functional.hessian(loss_of, params)
    sizes = [p.numel() for p in params]
    rows = [torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(params))], 1) for i in range(len(params))]
    return torch.cat(rows, 0)


@register_pair(target=5.0, description="exact loss Hessian: torch.func vmapped vjp of grad vs torch.autograd.functional.hessian")
def hessian_exact_vs_autograd(device: torch.device, size: str) -> Pair:
    """Bias-free linear MLP [64, w, w, 10], 100 Gaussian inputs, cross-entropy. Sizes: ``small`` (w = 4),
    ``default``/``w16``, ``w24``, ``w36`` (p = 3960, the released sweep's largest)."""
    if size not in _WIDTHS:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(_WIDTHS)}")
    w = _WIDTHS[size]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, w, bias=False), nn.Linear(w, w, bias=False), nn.Linear(w, 10, bias=False))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(100, 64, generator=gen)
    y = torch.randint(0, 10, (100,), generator=gen)
    p = sum(q.numel() for q in model.parameters())

    def ours() -> torch.Tensor:
        return loss_hessian(model, x, y, "cross_entropy")

    def reference() -> torch.Tensor:
        return autograd_loss_hessian(model, x, y)

    def agree(a: torch.Tensor, b: torch.Tensor) -> str | None:
        err = float((a - b).abs().max() / b.abs().max())
        return None if err <= 1e-9 else f"H_L differs: max relative error {err:.3g}"

    return Pair(ours, reference, agree, f"linear MLP [64, {w}, {w}, 10], n = 100, p = {p}")
