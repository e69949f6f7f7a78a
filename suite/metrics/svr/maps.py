"""Which linear maps form the SVR chain of a model, and the matrices the SVR decomposes.

The SVR (Meller & Berkouk, Sec. 2.2) reads a network as a sequence of linear maps ``A_0, ..., A_n``
with non-linearities between them; consecutive maps share a space (the output of ``A_i`` is the input
of ``A_{i+1}``). :func:`svr_chain` walks the modules in definition order and keeps every ``nn.Linear``
and ``nn.Conv1d/2d/3d`` whose input width equals the output width of the last kept map:

* a conv of weight ``(o, i, K...)`` after a map with ``i`` outputs chains with kernel size ``Z = prod K``;
* a Linear with ``in_features = c * Z`` after a conv with ``c`` output channels chains with ``Z``
  spatial positions: the whole feature map is its kernel (e.g. ``7 x 7 = 49`` for VGG, Sec. 4.2);
  spatial pooling between the two is ignored (Sec. 4.4), so ``Z = 1`` after global pooling;
* a Linear after a Linear chains when ``in_features`` equals the previous ``out_features``.

Maps that do not chain are reported in ``skipped`` with the reason, never dropped silently. In networks
with skip connections (ResNets) the chain is the main path in definition order: a projection shortcut
(``downsample``) reads the block *input*, not the last conv's output, so its width does not chain and it
is skipped; identity shortcuts carry no weights. The SVR edges of such a chain therefore describe how
the residual branch's maps connect to each other, ignoring the signal that bypasses them through the
shortcut. Grouped and depthwise convolutions are block-diagonal maps, not one ``o x (i K^2)`` operator,
and are skipped. For transformers, where attention and MLP maps branch off one residual stream, give
``layers`` patterns that pick one chain (for example ``blocks.*.mlp.fc*``).

Biases are ignored (Sec. 2.2). With ``fold_batchnorm`` an eval-mode BatchNorm directly after a kept
map scales its output rows: ``W <- diag(gamma / sqrt(running_var + eps)) W``; its shift is a bias and is
ignored. The paper's VGG19-bn figure (App. B.3) ignores the scaling, which is the default here.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["SvrMap", "SvrChain", "svr_chain"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class SvrMap:
    """One linear map of the chain.

    Attributes:
        name: module name in ``model.named_modules()``.
        kind: ``"fc"`` (Linear) or ``"conv"``.
        weight: float64 weight, shape ``(o, c, Z)``: ``o`` outputs, ``c`` input channels shared with the
            previous map, ``Z`` kernel positions (``Z = 1`` for an FC map on a vector; for an FC map on a
            conv feature map ``Z`` is the number of spatial positions).
        weight_shape: the module's own weight shape.
        bn_folded: name of the BatchNorm folded into the rows, if any.
    """

    name: str
    kind: str
    weight: torch.Tensor
    weight_shape: tuple[int, ...]
    bn_folded: str | None = None

    @property
    def out_dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[2])


@dataclass
class SvrChain:
    """The maps of the chain in order, and ``(name, reason)`` for every Linear/Conv left out."""

    maps: list[SvrMap] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _weight_3d(module: nn.Module, prev_out: int | None, prev_kind: str | None) -> tuple[torch.Tensor, str] | str:
    """The weight as ``(o, c, Z)`` float64 and its kind, or the reason it does not chain."""
    w = module.weight.detach().to(torch.float64)
    if isinstance(module, _CONV):
        if module.groups != 1:
            return f"grouped convolution (groups={module.groups}) is block-diagonal, not one o x (i K^2) map"
        o, i = w.shape[0], w.shape[1]
        if prev_out is not None and i != prev_out:
            return f"input channels {i} do not match the previous map's {prev_out} outputs (a branch or shortcut)"
        return w.reshape(o, i, -1), "conv"
    o, n_in = w.shape
    if prev_out is None:
        return w.reshape(o, n_in, 1), "fc"
    if prev_kind == "fc" and n_in != prev_out:
        return f"in_features {n_in} do not match the previous map's {prev_out} outputs (a branch or shortcut)"
    if n_in % prev_out != 0:
        return f"in_features {n_in} is not a multiple of the previous conv's {prev_out} output channels"
    return w.reshape(o, prev_out, n_in // prev_out), "fc"


def svr_chain(model: nn.Module, layers: list[str] | None = None, fold_batchnorm: bool = False) -> SvrChain:
    """The SVR chain of ``model``: kept maps in definition order and the skipped ones with reasons.

    Args:
        model: any ``nn.Module``; only its Linear, Conv and (with ``fold_batchnorm``) BatchNorm modules
            are read.
        layers: fnmatch patterns on module names; ``None`` keeps every Linear/Conv that chains.
        fold_batchnorm: scale each map's rows by the following eval-mode BatchNorm.

    Returns:
        The chain; ``maps[i].weight`` has shape ``(o_i, c_i, Z_i)`` with ``c_{i+1} = o_i``.
    """
    chain = SvrChain()
    prev_out: int | None = None
    last_kept = False
    for name, module in model.named_modules():
        if isinstance(module, _BATCHNORM):
            if fold_batchnorm and last_kept and module.num_features == chain.maps[-1].out_dim:
                prev = chain.maps[-1]
                var = module.running_var.detach().to(torch.float64) if module.running_var is not None else None
                if var is None:
                    raise ValueError(f"BatchNorm {name} has no running statistics to fold")
                scale = torch.rsqrt(var + module.eps)
                if module.weight is not None:
                    scale = scale * module.weight.detach().to(torch.float64)
                chain.maps[-1] = SvrMap(prev.name, prev.kind, prev.weight * scale[:, None, None], prev.weight_shape, name)
            last_kept = False
            continue
        if not isinstance(module, (nn.Linear, *_CONV)):
            if not any(True for _ in module.children()):
                last_kept = False  # a leaf in between (activation, pooling, ...): a later BatchNorm is not "directly after"
            continue
        last_kept = False
        if layers is not None and not any(fnmatch.fnmatchcase(name, p) for p in layers):
            continue
        shaped = _weight_3d(module, prev_out, chain.maps[-1].kind if chain.maps else None)
        if isinstance(shaped, str):
            chain.skipped.append((name, shaped))
            continue
        weight, kind = shaped
        chain.maps.append(SvrMap(name, kind, weight, tuple(module.weight.shape)))
        prev_out = weight.shape[0]
        last_kept = True
    return chain


def kernel_size_label(m: SvrMap) -> str:
    """``"3x3"``-style label of a map's kernel, ``"1"`` for FC on vectors."""
    if m.kind == "conv" and len(m.weight_shape) > 2:
        return "x".join(str(k) for k in m.weight_shape[2:])
    side = math.isqrt(m.kernel)
    return f"{side}x{side}" if side * side == m.kernel and m.kernel > 1 else str(m.kernel)
