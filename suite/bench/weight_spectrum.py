"""Benchmark pairs of the ``weight_spectrum`` family.

Ours: :func:`suite.metrics.weight_spectrum.weight_spectrum`, maps of equal shape decomposed in one
batched float64 ``torch.linalg.svdvals`` call. Reference: the straightforward per-layer loop a script
would write, ``numpy.linalg.svd(W.astype(float64), compute_uv=False)`` and the feng threshold, one map
at a time. They must give identical ranks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from suite.bench.harness import Pair, register_pair
from suite.linalg.rank import EPS_FLOAT32, FengRule
from suite.metrics.registry import MetricContext
from suite.metrics.weight_spectrum import WeightSpectrumParams, linear_maps, weight_spectrum

__all__ = ["numpy_reference_ranks", "weight_spectrum_vs_numpy"]


def numpy_reference_ranks(model: nn.Module) -> list[int]:
    """Per-layer NumPy loop: ``#{sigma_i > eps32 * min(M, N) * sigma_1}`` (Feng et al. 2022, eq. 4)."""
    ranks = []
    for _, _, w in linear_maps(model, ["*"], ["linear", "conv"]):
        sigma = np.linalg.svd(w.cpu().numpy().astype(np.float64), compute_uv=False)
        ranks.append(int((sigma > EPS_FLOAT32 * min(w.shape) * sigma[0]).sum()))
    return ranks


def _model(size: str) -> tuple[nn.Module, str]:
    torch.manual_seed(0)
    if size == "mlp50":
        layers = [nn.Linear(64, 64) for _ in range(50)]
        return nn.Sequential(*layers), "MLP, 50 maps of 64 x 64"
    import timm

    name = "resnet18" if size in ("default", "resnet18") else size
    model = timm.create_model(name, pretrained=False)
    return model, f"timm {name}, {len(linear_maps(model, ['*'], ['linear', 'conv']))} maps"


@register_pair(target=None, description="weight_spectrum: batched float64 svdvals vs per-layer NumPy SVD loop")
def weight_spectrum_vs_numpy(device: torch.device, size: str) -> Pair:
    """Sizes: ``default``/``resnet18`` (or any timm name), ``mlp50`` (many small maps)."""
    model, described = _model(size)
    model = model.eval()
    params = WeightSpectrumParams(tolerance=FengRule(), keep_singular_values=False)
    ctx = MetricContext(device=device, seed=0)
    model_dev = model.to(device)

    def ours() -> list[int]:
        return weight_spectrum(model_dev, None, params, ctx)["ranks"]

    def reference() -> list[int]:
        return numpy_reference_ranks(model)

    def agree(a: list[int], b: list[int]) -> str | None:
        return None if a == b else f"ranks differ: {a} vs {b}"

    return Pair(ours, reference, agree, described)
