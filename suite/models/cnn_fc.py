"""Built-in net ``cnn_fc``: the deep CNN of Singh, Hofmann & Schölkopf (ICML 2023) -- convolutions, then a dense head.

``F(x) = W^{L+1} flatten(sigma(W^L * sigma(... sigma(W^1 * x))))`` (slides, "Toeplitz framework:
full-fledged CNNs"): ``L`` convolutions (``Conv1d`` or ``Conv2d``) with ``m_l`` filters of kernel size
``k_l``, stride and zero padding, an activation after each, then a flatten and a dense ``Linear``
``m_L d_L -> K`` (the slides' layer ``L + 1``). With ``activation: identity`` and ``bias: false`` this is
the deep linear CNN whose Hessian ranks :mod:`suite.theory.hessian_cnn` bounds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from torch import nn

from suite.models.registry import BuildContext, register_builtin_net
from suite.spec.base import SpecModel
from suite.theory.hessian_cnn import ConvGeometry, conv_geometry, per_layer

__all__ = ["CnnFcParams", "cnn_fc"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"identity": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh}


class CnnFcParams(SpecModel):
    """``L`` convolutions (``Conv1d``/``Conv2d``) with an activation after each, then Flatten and a dense head."""

    dims: Literal[1, 2] = Field(1, description="1: Conv1d on (n, m_0, d_0); 2: Conv2d on (n, m_0, H, W).")
    in_channels: int = Field(1, ge=1, description="m_0, channels of the input.")
    input_size: list[int] = Field(
        ..., min_length=1, max_length=2, description="[d_0] for dims 1, [H, W] for dims 2 (sets the head's size)."
    )
    channels: list[int] = Field(..., min_length=1, description="m_l, filters of conv layer l = 1..L.")
    kernel_sizes: list[int] | int = Field(3, description="Kernel side k (k x k in 2-D), one for all or one per layer.")
    strides: list[int] | int = Field(1, description="Stride, one for all layers or one per layer.")
    paddings: list[int] | int = Field(0, description="Zero padding on each side, one for all layers or one per layer.")
    activation: Literal["identity", "relu", "tanh"] = Field("identity", description="After each conv, not the head.")
    bias: bool = Field(False, description="Biases in the convolutions and the head.")
    num_outputs: int = Field(..., ge=1, description="K, outputs of the dense head.")

    @model_validator(mode="after")
    def _shapes(self) -> CnnFcParams:
        n = len(self.channels)
        if len(self.input_size) != self.dims:
            entries = "1 entry" if self.dims == 1 else "2 entries"
            raise ValueError(f"input_size needs {entries} for dims {self.dims}; got {self.input_size}")
        if any(v < 1 for v in self.input_size):
            raise ValueError(f"input_size entries must be >= 1; got {self.input_size}")
        if any(c < 1 for c in self.channels):
            raise ValueError(f"every channel count must be >= 1; got {self.channels}")
        for field, value, low in (
            ("kernel_sizes", self.kernel_sizes, 1), ("strides", self.strides, 1), ("paddings", self.paddings, 0)
        ):
            values = per_layer(value, n)
            if len(values) != n:
                raise ValueError(f"{field} needs one entry per conv layer ({n}) or a single int; got {len(values)}")
            if any(v < low for v in values):
                raise ValueError(f"{field} entries must be >= {low}; got {values}")
        self.geometry()  # raises ValueError naming the layer whose output would be empty
        return self

    def geometry(self) -> ConvGeometry:
        """Per-layer spatial shapes, sizes ``d_l``, channels ``m_l`` and kernel taps ``k_l`` (``k^2`` in 2-D)."""
        n = len(self.channels)
        return conv_geometry(
            list(self.input_size), self.in_channels, list(self.channels),
            per_layer(self.kernel_sizes, n), per_layer(self.strides, n), per_layer(self.paddings, n),
        )


@register_builtin_net(CnnFcParams)
def cnn_fc(params: CnnFcParams, ctx: BuildContext) -> nn.Module:
    """CNN of Singh et al. (ICML 2023): conv -> activation per layer, Flatten, dense Linear head to K outputs.

    Convolutions use torch's default init and zero padding; the head maps ``m_L d_L`` flattened features
    (channel-major, as ``nn.Flatten`` orders them) to ``num_outputs``. Parameters:
    ``sum_l m_l m_{l-1} k_l + K m_L d_L`` (plus ``sum_l m_l + K`` with biases).
    """
    n = len(params.channels)
    conv = nn.Conv1d if params.dims == 1 else nn.Conv2d
    geo = params.geometry()
    layers: list[nn.Module] = []
    kernels, strides, paddings = (per_layer(v, n) for v in (params.kernel_sizes, params.strides, params.paddings))
    for fan_in, fan_out, k, st, pad in zip(geo.channels[:-1], geo.channels[1:], kernels, strides, paddings):
        layers.append(conv(fan_in, fan_out, k, stride=st, padding=pad, bias=params.bias))
        layers.append(_ACTIVATIONS[params.activation]())
    layers += [nn.Flatten(), nn.Linear(geo.features, params.num_outputs, bias=params.bias)]
    return nn.Sequential(*layers)
