"""Built-in net ``structural_probe``: an FC layer followed by one network component (Feng et al. 2022, Fig. 3).

Feng et al., "Rank Diminishing in Deep Neural Networks", NeurIPS 2022, Sec. 4.1 (Theorem 3) and Sec. 4.3
"Structural Impetus": Gaussian inputs of shape ``C x S x S`` (paper: 128 x 8 x 8), random weights, each
component plugged after a fully connected layer of ``C*S*S`` units (paper: 8,192); PCA dimension of the
features and rank of the Jacobian before and after the component.

The probe is ``forward(x) = component(fc(x.flatten(1)).view(-1, C, S, S))`` with the two stages exposed as
``.fc`` (``Linear(D, D)``, ``D = C*S*S``, no bias) and ``.component``; ``.before(x)`` returns the FC
features in the ``(C, S, S)`` view. Random weights:

* every Linear / Conv / attention projection: i.i.d. ``N(0, 1/fan_in)`` (LeCun normal: unit-variance
  features for unit-variance inputs); conv bias ``N(0, 0.1^2)``;
* norm affine parameters: ``gamma ~ N(1, 0.1^2)``, ``beta ~ N(0, 0.1^2)``.

All are drawn from a ``torch.Generator`` seeded with the case seed, FC weights first, so the FC layer (and
thus the "before" features) is the same for every component at one seed and size.

Components (acting on the ``(C, S, S)`` view; output has the same shape):

* ``conv3x3``: ``Conv2d(C, C, 3, padding=1)``.  * ``fc``: a second ``Linear(D, D)`` on the flattened view.
* ``batchnorm``: ``BatchNorm2d(C, track_running_stats=False)``, i.e. *batch statistics always* (the
  training-mode computation, without updating running stats). With freshly initialised running stats
  (mean 0, var 1) eval-mode BatchNorm is a diagonal affine map and would measure nothing; the paper
  randomises the components and feeds a batch of 5,000, so batch statistics are the meaningful reading.
  The output of one sample then depends on the whole batch: ``batch_coupled`` is True and the metric
  differentiates one sample with the rest of the batch held fixed. torch rejects ``eps = 0`` with batch
  statistics, so ``norm_eps = 0`` means ``1e-30`` for BatchNorm (no effect at unit feature variance).
* ``layernorm``: ``LayerNorm([C, S, S])``; ``instancenorm``: ``InstanceNorm2d(C, affine=True)`` (per-sample
  statistics in train and eval mode); ``groupnorm``: ``GroupNorm(groups, C)``. Norm ``eps`` is ``norm_eps``
  (default 0, the exact normalisation of Theorem 3; torch's default ``1e-5`` does not remove the radial
  direction but shrinks it by ``eps / (var + eps)``, about 1e-5 here, which is within a small factor of
  the feng threshold ``1.19e-7 * D`` at small ``D``, so the measured rank would depend on the size).
* ``attention``: single-head self-attention over the ``S*S`` tokens of dimension ``C``,
  ``softmax((X W_q)(X W_k)^T / sqrt(h)) (X W_v) W_o`` with random ``W_q, W_k, W_v`` (C x h) and ``W_o``
  (h x C), ``h = head_dim`` (default C); no residual, no normalisation.
* ``relu``, ``gelu`` (exact erf GELU), and ``identity`` (a control: nothing may be lost).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from suite.models.registry import BuildContext, register_builtin_net
from suite.spec.base import SpecModel

__all__ = ["COMPONENTS", "SelfAttention", "StructuralProbe", "StructuralProbeParams", "structural_probe"]

Component = Literal[
    "conv3x3", "fc", "batchnorm", "layernorm", "instancenorm", "groupnorm", "attention", "relu", "gelu", "identity"
]
COMPONENTS: tuple[str, ...] = Component.__args__  # type: ignore[attr-defined]


class StructuralProbeParams(SpecModel):
    """An FC layer on the flattened ``C x S x S`` input followed by one component (Feng et al. 2022, Fig. 3)."""

    component: Component = Field(..., description="The component plugged after the FC layer.")
    channels: int = Field(..., ge=1, description="C (paper: 128).")
    size: int = Field(..., ge=1, description="S: features are C x S x S (paper: 8).")
    groups: int = Field(2, ge=1, description="GroupNorm groups (must divide channels).")
    head_dim: int | None = Field(None, ge=1, description="Attention head dimension h (default: channels).")
    norm_eps: float = Field(0.0, ge=0.0, description="eps of the norm layers (0: exact normalisation; torch: 1e-5).")

    @model_validator(mode="after")
    def _groups_divide(self) -> StructuralProbeParams:
        if self.component == "groupnorm" and self.channels % self.groups:
            raise ValueError(f"groups ({self.groups}) must divide channels ({self.channels})")
        return self


class SelfAttention(nn.Module):
    """Single-head self-attention over the ``S*S`` tokens of a ``(B, C, S, S)`` map, no residual."""

    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        self.head_dim = head_dim
        self.q = nn.Linear(channels, head_dim, bias=False)
        self.k = nn.Linear(channels, head_dim, bias=False)
        self.v = nn.Linear(channels, head_dim, bias=False)
        self.o = nn.Linear(head_dim, channels, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        tokens = z.flatten(2).transpose(1, 2)  # (B, T, C)
        scores = self.q(tokens) @ self.k(tokens).transpose(1, 2) / math.sqrt(self.head_dim)
        out = self.o(torch.softmax(scores, dim=-1) @ self.v(tokens))  # (B, T, C)
        return out.transpose(1, 2).reshape(b, c, h, w)


class _FlatLinear(nn.Module):
    """``Linear(D, D)`` applied to the flattened ``(C, S, S)`` map, reshaped back."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z.flatten(1)).view(z.shape)


class StructuralProbe(nn.Module):
    """``component(fc(x.flatten(1)).view(-1, C, S, S))``; see the module doc."""

    def __init__(self, params: StructuralProbeParams):
        super().__init__()
        c, s = params.channels, params.size
        self.component_name = params.component
        self.feature_shape = (c, s, s)
        self.dim = c * s * s
        self.batch_coupled = params.component == "batchnorm"
        self.fc = nn.Linear(self.dim, self.dim, bias=False)
        self.component = _component(params)

    def before(self, x: torch.Tensor) -> torch.Tensor:
        """Features after the FC layer, ``(B, C, S, S)``."""
        return self.fc(x.flatten(1)).view(-1, *self.feature_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.component(self.before(x))


def _component(params: StructuralProbeParams) -> nn.Module:
    c, eps = params.channels, params.norm_eps
    name = params.component
    if name == "conv3x3":
        return nn.Conv2d(c, c, 3, padding=1)
    if name == "fc":
        return _FlatLinear(c * params.size * params.size)
    if name == "batchnorm":
        return nn.BatchNorm2d(c, eps=eps or 1e-30, track_running_stats=False)  # torch needs eps > 0 here
    if name == "layernorm":
        return nn.LayerNorm([c, params.size, params.size], eps=eps)
    if name == "instancenorm":
        return nn.InstanceNorm2d(c, eps=eps, affine=True)
    if name == "groupnorm":
        return nn.GroupNorm(params.groups, c, eps=eps)
    if name == "attention":
        return SelfAttention(c, params.head_dim or c)
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unknown component {name!r}")


def _randomise(model: StructuralProbe, gen: torch.Generator) -> None:
    """Redraw every weight from ``gen``: the FC layer first, then the component's modules in order."""
    with torch.no_grad():
        for module in [model.fc, *model.component.modules()]:
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1, generator=gen)
            elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.InstanceNorm2d, nn.GroupNorm)):
                if module.weight is not None:
                    module.weight.normal_(1.0, 0.1, generator=gen)
                    module.bias.normal_(0.0, 0.1, generator=gen)


@register_builtin_net(StructuralProbeParams)
def structural_probe(params: StructuralProbeParams, ctx: BuildContext) -> nn.Module:
    """FC layer of C*S*S units followed by one component, random weights (Feng et al. 2022, Sec. 4.3, Fig. 3).

    Exposes ``.fc``, ``.component``, ``.before(x)``, ``.feature_shape``, ``.dim`` and ``.batch_coupled``
    for the ``structural_rank_loss`` metric. Weights as in the module doc, drawn from a generator seeded
    with the case seed, FC first: for one seed and size every component sees the same FC layer (and the
    same "before" features), so the components are compared on equal terms.
    """
    model = StructuralProbe(params)
    _randomise(model, torch.Generator().manual_seed(ctx.seed))
    return model
