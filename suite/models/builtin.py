"""Built-in nets: an MLP with configurable widths, activation, bias and init, and planted-rank linear chains."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from suite.models.registry import BuildContext, register_builtin_net
from suite.spec.base import SpecModel

__all__ = ["CNNParams", "MLPParams", "PlantedParams", "cnn", "mlp", "planted"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


class MLPParams(SpecModel):
    """A fully connected net ``widths[0] -> widths[1] -> ... -> widths[-1]``."""

    widths: list[int] = Field(..., min_length=2, description="Layer widths, input first, output last.")
    activation: Literal["relu", "tanh", "gelu", "sigmoid", "identity"] = "relu"
    bias: bool = True
    init: Literal["default", "kaiming", "xavier", "normal", "orthogonal"] = Field(
        "default",
        description="default: torch's Linear init; kaiming: N(0, 2/fan_in); xavier: Glorot normal; "
        "normal: N(0, 1/fan_in); orthogonal: (semi-)orthogonal. Biases start at zero unless default.",
    )

    @model_validator(mode="after")
    def _positive_widths(self) -> MLPParams:
        if any(w < 1 for w in self.widths):
            raise ValueError(f"every width must be >= 1; got {self.widths}")
        return self


def _init_linear(layer: nn.Linear, init: str) -> None:
    if init == "default":
        return
    fan_in = layer.in_features
    with torch.no_grad():
        if init == "kaiming":
            layer.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
        elif init == "xavier":
            nn.init.xavier_normal_(layer.weight)
        elif init == "normal":
            layer.weight.normal_(0.0, (1.0 / fan_in) ** 0.5)
        elif init == "orthogonal":
            nn.init.orthogonal_(layer.weight)
        if layer.bias is not None:
            layer.bias.zero_()


@register_builtin_net(MLPParams)
def mlp(params: MLPParams, ctx: BuildContext) -> nn.Module:
    """MLP: Linear layers with an activation between them (none after the last)."""
    layers: list[nn.Module] = []
    pairs = list(zip(params.widths[:-1], params.widths[1:]))
    for i, (fan_in, fan_out) in enumerate(pairs):
        linear = nn.Linear(fan_in, fan_out, bias=params.bias)
        _init_linear(linear, params.init)
        layers.append(linear)
        if i < len(pairs) - 1:
            layers.append(_ACTIVATIONS[params.activation]())
    return nn.Sequential(*layers)


class PlantedParams(SpecModel):
    """A chain of linear maps ``widths[i] -> widths[i+1]``, map ``i`` of planted rank ``ranks[i]``."""

    widths: list[int] = Field(..., min_length=2, description="Widths, input first.")
    ranks: list[int] = Field(..., min_length=1, description="Inner dimension k of each product A B.")

    @model_validator(mode="after")
    def _lengths(self) -> PlantedParams:
        if len(self.ranks) != len(self.widths) - 1:
            raise ValueError(
                f"ranks needs one entry per map: {len(self.widths) - 1} for widths {self.widths}, got {len(self.ranks)}"
            )
        if any(w < 1 for w in self.widths) or any(k < 0 for k in self.ranks):
            raise ValueError("widths must be >= 1 and ranks >= 0")
        return self


@register_builtin_net(PlantedParams)
def planted(params: PlantedParams, ctx: BuildContext) -> nn.Module:
    """Planted-rank chain: each weight is ``A B / sqrt(k)`` with ``A`` (out x k), ``B`` (k x in) standard Gaussian.

    The product of two thin Gaussian matrices has rank ``min(k, out, in)`` almost surely; the product is
    formed in float64 and stored in the model dtype (see :func:`suite.theory.planted.planted_product_rank`).
    """
    layers = []
    for fan_in, fan_out, k in zip(params.widths[:-1], params.widths[1:], params.ranks):
        a = torch.randn(fan_out, k, dtype=torch.float64)
        b = torch.randn(k, fan_in, dtype=torch.float64)
        linear = nn.Linear(fan_in, fan_out, bias=False)
        with torch.no_grad():
            linear.weight.copy_((a @ b) / max(k, 1) ** 0.5)
        layers.append(linear)
    return nn.Sequential(*layers)


class CNNParams(SpecModel):
    """A plain conv net: ``Conv(k) -> act`` per entry of ``channels``, then optional global pooling and a head."""

    in_channels: int = Field(1, ge=1, description="Channels of the input.")
    channels: list[int] = Field(..., min_length=1, description="Output channels of each conv layer.")
    kernel_sizes: list[int] | int = Field(3, description="One odd kernel size for all layers, or one per layer.")
    dims: Literal[1, 2] = Field(2, description="1: Conv1d on (n, C, L); 2: Conv2d on (n, C, H, W).")
    activation: Literal["relu", "tanh", "gelu", "sigmoid", "identity"] = "relu"
    bias: bool = True
    pool: Literal["none", "avg", "max"] = Field("none", description="Pooling by 2 after each conv but the last.")
    num_classes: int | None = Field(None, ge=1, description="Global average pooling and a Linear head to this many outputs.")

    @model_validator(mode="after")
    def _kernels(self) -> CNNParams:
        ks = self.kernel_sizes if isinstance(self.kernel_sizes, list) else [self.kernel_sizes] * len(self.channels)
        if len(ks) != len(self.channels):
            raise ValueError(f"kernel_sizes needs one entry per conv layer ({len(self.channels)}), got {len(ks)}")
        if any(k < 1 or k % 2 == 0 for k in ks):
            raise ValueError(f"kernel sizes must be odd and >= 1 (same padding); got {ks}")
        if any(c < 1 for c in self.channels):
            raise ValueError(f"every channel count must be >= 1; got {self.channels}")
        return self


@register_builtin_net(CNNParams)
def cnn(params: CNNParams, ctx: BuildContext) -> nn.Module:
    """CNN: same-padded convolutions with an activation after each, optional pooling, optional linear head."""
    conv = nn.Conv1d if params.dims == 1 else nn.Conv2d
    pools = {"avg": nn.AvgPool1d if params.dims == 1 else nn.AvgPool2d, "max": nn.MaxPool1d if params.dims == 1 else nn.MaxPool2d}
    ks = params.kernel_sizes if isinstance(params.kernel_sizes, list) else [params.kernel_sizes] * len(params.channels)
    layers: list[nn.Module] = []
    fan_in = params.in_channels
    for i, (c, k) in enumerate(zip(params.channels, ks)):
        layers += [conv(fan_in, c, k, padding=k // 2, bias=params.bias), _ACTIVATIONS[params.activation]()]
        if params.pool != "none" and i < len(params.channels) - 1:
            layers.append(pools[params.pool](2))
        fan_in = c
    if params.num_classes is not None:
        pool = nn.AdaptiveAvgPool1d(1) if params.dims == 1 else nn.AdaptiveAvgPool2d(1)
        layers += [pool, nn.Flatten(), nn.Linear(fan_in, params.num_classes, bias=params.bias)]
    return nn.Sequential(*layers)
