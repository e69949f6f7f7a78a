"""Benchmark pairs of the rank-diminishing family (partial Jacobian rank).

* ``partial_rank_all_vs_deepest``: every selected layer from one forward-mode pass vs the deepest layer
  alone; the extra layers should cost little (target: all layers <= 1.3x the deepest alone, i.e. a
  "speed-up" >= 1/1.3).
* ``partial_rank_vs_rerun_per_layer``: one pass for all layers vs re-running the network once per layer.
* ``partial_rank_vs_reverse_mode``: ours vs the released code's approach, reverse mode with one backward
  per output element (``torch.autograd.functional.jacobian``), layer by layer; target >= 100x.

Every pair first checks that both sides give the same ranks.
"""

from __future__ import annotations

import torch
from torch import nn

from suite.bench.harness import Pair, register_pair
from suite.linalg.rank import FengRule, numerical_rank
from suite.metrics.rank_diminishing.partial_jacobian import _patch_embedding, forward_jacobians, patch_slices
from suite.models.layers import capture_outputs, select_layers

__all__ = ["partial_rank_all_vs_deepest", "partial_rank_vs_rerun_per_layer", "partial_rank_vs_reverse_mode"]

_SIZES = {
    # size -> (model, image side, patch side)
    "default": ("resnet18", 32, 8),
    "resnet18": ("resnet18", 32, 8),
    "resnet18_224": ("resnet18", 224, 16),
    "resnet50_224": ("resnet50", 224, 16),
    "small_cnn": ("small_cnn", 16, 4),
    "small_cnn32": ("small_cnn", 32, 8),
}


def _small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )


def _setup(size: str, device: torch.device):
    name, side, patch = _SIZES[size]
    torch.manual_seed(0)
    if name == "small_cnn":
        model = _small_cnn()
    else:
        import timm

        model = timm.create_model(name, pretrained=False, zero_init_last=False)
    model = model.eval().to(device)
    image = torch.randn(3, side, side, device=device)
    rows, cols = patch_slices((side, side), [patch, patch], "center")
    embed, primal = _patch_embedding(image, rows, cols, [0, 1, 2], "image")
    names = [m for _, m in select_layers(model, "auto")]
    desc = f"{name} {side}x{side}, patch {patch}x{patch}x3 (K={3 * patch * patch}), {len(names)} points"
    return model, embed, primal, names, desc


def _ranks(jacobians: list[torch.Tensor]) -> list[int]:
    return [numerical_rank(j, FengRule()).rank for j in jacobians]


def _agree(a: list[int], b: list[int]) -> str | None:
    return None if a == b else f"ranks differ: {a} vs {b}"


@register_pair(target=1 / 1.3, description="partial rank: all layers' Jacobians in one pass vs the deepest layer alone (<= 1.3x)")
def partial_rank_all_vs_deepest(device: torch.device, size: str) -> Pair:
    """Ours: the forward-mode pass capturing every point; reference: the same pass capturing only the deepest.

    Only the passes are timed (the SVDs are per layer either way); they must give the same deepest Jacobian.
    """
    model, embed, primal, names, desc = _setup(size, device)

    def ours() -> torch.Tensor:
        return forward_jacobians(model, embed, primal, names).jacobians[-1]

    def reference() -> torch.Tensor:
        return forward_jacobians(model, embed, primal, names[-1:]).jacobians[0]

    def same(a: torch.Tensor, b: torch.Tensor) -> str | None:
        return None if torch.allclose(a, b, rtol=1e-5, atol=1e-6) else "deepest-layer Jacobians differ"

    return Pair(ours, reference, same, desc)


@register_pair(target=None, description="partial rank: all layers in one pass vs re-running the network per layer")
def partial_rank_vs_rerun_per_layer(device: torch.device, size: str) -> Pair:
    model, embed, primal, names, desc = _setup(size, device)

    def ours() -> list[int]:
        return _ranks(forward_jacobians(model, embed, primal, names).jacobians)

    def reference() -> list[int]:
        return [r for name in names for r in _ranks(forward_jacobians(model, embed, primal, [name]).jacobians)]

    return Pair(ours, reference, _agree, desc)


def reverse_mode_jacobians(model: nn.Module, embed, primal: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
    """The released code's approach: per layer, ``torch.autograd.functional.jacobian`` (one backward per
    output element, ``vectorize=False``), reshaped to ``(out_dim, K)``."""
    out = []
    for name in names:
        with capture_outputs(model, [name]) as store:

            def f(p: torch.Tensor, name: str = name) -> torch.Tensor:
                store.clear()
                model(embed(p))
                return store[name].reshape(-1)

            jac = torch.autograd.functional.jacobian(f, primal, vectorize=False)
        out.append(jac.reshape(jac.shape[0], -1).detach())
    return out


@register_pair(target=100.0, description="partial rank: forward mode (ours) vs reverse mode per output element (released code)")
def partial_rank_vs_reverse_mode(device: torch.device, size: str) -> Pair:
    """Jacobians of every point, forward mode vs reverse mode; the ranks (same SVD code) must agree.

    Default size: a small CNN on 32x32 inputs with an 8x8x3 patch, where reverse mode still finishes in
    seconds. Only the Jacobians are timed; the identical rank computation is left out of both sides.
    """
    model, embed, primal, names, desc = _setup("small_cnn32" if size == "default" else size, device)

    def ours() -> list[torch.Tensor]:
        return forward_jacobians(model, embed, primal, names).jacobians

    def reference() -> list[torch.Tensor]:
        return reverse_mode_jacobians(model, embed, primal, names)

    def same_ranks(a: list[torch.Tensor], b: list[torch.Tensor]) -> str | None:
        return _agree(_ranks(a), _ranks(b))

    return Pair(ours, reference, same_ranks, desc)
