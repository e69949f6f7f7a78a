"""Benchmark pair of the Hessian-rank family: ranks through Hessian-vector products vs dense Hessians.

Ours: :func:`suite.metrics.hessian.hvp_rank.sketched_hessian_ranks` (matrix-free float64 ``H_L``, ``H_o``,
``H_f`` products, randomised range sketch and Rayleigh-Ritz, the ``numpy`` rule). Reference:
:func:`suite.metrics.hessian.hvp_rank.dense_hessian_ranks`, the ``hessian_rank`` path (dense
``exact_hessians`` and ``|eigvalsh|``, the same rule). They must agree on all three ranks, which for the
bias-free linear MLPs used here are also Singh et al.'s closed forms. The sketch costs about ``2 rank``
products and ``5 p rank^2`` flops of orthogonalisation, the dense path ``p`` Hessian rows and three
``O(p^3)`` eigenvalue problems: HVP wins where ``rank << p``.
"""

from __future__ import annotations

import torch
from torch import nn

from suite.bench.harness import Pair, register_pair
from suite.metrics.hessian.hvp_rank import dense_hessian_ranks, sketched_hessian_ranks
from suite.metrics.hessian.rank import PARTS

__all__ = ["hessian_hvp_vs_dense"]

# size -> (input dim d, hidden width w, outputs K, samples n, loss)
_SIZES = {
    "small": (16, 8, 4, 20, "mse"),
    "default": (64, 24, 10, 100, "cross_entropy"),
    "large": (32, 64, 2, 10, "mse"),
}


@register_pair(target=None, description="Hessian ranks: HVP sketch + Rayleigh-Ritz vs dense exact Hessians + eigvalsh")
def hessian_hvp_vs_dense(device: torch.device, size: str) -> Pair:
    """Bias-free linear MLP [d, w, w, K] on n Gaussian inputs. Sizes: ``small`` ([16, 8, 8, 4], MSE, p = 224),
    ``default`` ([64, 24, 24, 10], cross-entropy, n = 100, p = 2352, rank H_L / p = 0.55) and ``large``
    ([32, 64, 64, 2], MSE, n = 10, p = 6272, rank H_L = 524: the low-rank regime the sketch is for)."""
    if size not in _SIZES:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(_SIZES)}")
    d, w, k, n, loss = _SIZES[size]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d, w, bias=False), nn.Linear(w, w, bias=False), nn.Linear(w, k, bias=False)).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=gen)
    y = torch.randn(n, k, generator=gen) if loss == "mse" else torch.randint(0, k, (n,), generator=gen)
    p = sum(q.numel() for q in model.parameters())

    def ours() -> list[int]:
        sketches = sketched_hessian_ranks(model, x.to(device), y.to(device), loss)
        return [sketches[part].rank for part in PARTS]

    def reference() -> list[int]:
        return dense_hessian_ranks(model, x.to(device), y.to(device), loss)

    def agree(a: list[int], b: list[int]) -> str | None:
        return None if a == b else f"ranks [H_o, H_f, H_L] differ: HVP {a}, dense {b}"

    return Pair(ours, reference, agree, f"linear MLP [{d}, {w}, {w}, {k}], n = {n}, {loss}, p = {p}")
