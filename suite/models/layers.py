"""Layer selection: which intermediate outputs of a model a per-layer metric measures, and capturing them.

A *point* is ``(label, module_name)``. ``module_name`` is a name from ``model.named_modules()``; the
point is that module's output, captured by a forward hook. A name ending in ``:input``
(e.g. ``head:input``) is the module's first positional *input* instead, captured by a forward pre-hook;
it is how the pooled feature of a ViT or a mixer is reached, whose pooling is a tensor operation
inside ``forward_head`` and not a module.

``select_layers(model, "auto")`` reproduces the layer lists of Feng et al., NeurIPS 2022 (Table 1 and
Fig. 1) for the timm models of the paper:

* ResNets (``timm.models.resnet.ResNet``): the stem (output of ``maxpool``), every residual block
  (``layer1.0``, ``layer1.1``, ...), the pooled feature (``global_pool``) and the logits (``fc``):
  1 + 8 + 2 = 11 points for resnet18 and 1 + 16 + 2 = 19 for resnet50, the ``#Layer`` column of Table 1.
* MLP-Mixer family (``MlpMixer``: gmixer_24_224, resmlp_24_224): every block ``blocks.N``, the pooled
  feature (``head:input``, the token mean after the final norm) and the logits (``head``): 24 + 2 = 26.
* ViT (``VisionTransformer``): every block ``blocks.N``, the pooled feature (``head:input``: the class
  token or token mean after ``fc_norm``) and the logits (``head``): 12 + 2 = 14 for vit_tiny (Table 1 lists
  13 layers; which of the two last points the paper counts is not stated).
* Swin (``SwinTransformer``): every block ``layers.S.blocks.M``, the pooled feature
  (``head.global_pool``) and the logits (``head.fc``): 12 + 2 = 14 for swin_tiny (Table 1 lists 18).
* ``nn.Sequential`` (the built-in MLPs): every child except ``Identity``/``Dropout``/``Flatten``, i.e.
  every Linear (or conv) output and every non-identity activation output.
* Any other model with ``blocks`` or ``layers.S.blocks`` is handled like a ViT / Swin; otherwise ``auto``
  raises and asks for an explicit list.

An explicit list of module names is used as given (labels = the names); an unknown name raises
:class:`LayerSelectionError` naming the closest module names.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from suite.errors import MetricError

__all__ = [
    "INPUT_SUFFIX",
    "LayerSelectionError",
    "capture_outputs",
    "resolve_point",
    "select_layers",
]

INPUT_SUFFIX = ":input"

_SKIP_IN_SEQUENTIAL = (nn.Identity, nn.Dropout, nn.Flatten)


class LayerSelectionError(MetricError):
    """A layer spec names no module of the model, or ``auto`` does not know the model class."""


def _numbered(model: nn.Module, pattern: str) -> list[str]:
    """Return the module names fully matching ``pattern``, in registration (= execution, here) order."""
    rx = re.compile(pattern)
    return [name for name, _ in model.named_modules() if rx.fullmatch(name)]


def _auto(model: nn.Module) -> list[tuple[str, str]]:
    cls = type(model).__name__
    names = dict(model.named_modules())
    if cls == "ResNet" and all(k in names for k in ("maxpool", "layer1", "global_pool", "fc")):
        blocks = _numbered(model, r"layer[1-4]\.\d+")
        return [("stem", "maxpool"), *[(b, b) for b in blocks], ("pool", "global_pool"), ("logits", "fc")]
    if isinstance(model, nn.Sequential):
        points = [
            (f"{n}:{type(m).__name__}", n)
            for n, m in model.named_children()
            if not isinstance(m, _SKIP_IN_SEQUENTIAL)
        ]
        if points:
            return points
    swin_blocks = _numbered(model, r"layers\.\d+\.blocks\.\d+")
    if swin_blocks:
        pts = [(b, b) for b in swin_blocks]
        head = names.get("head")
        if head is not None and "head.global_pool" in names and "head.fc" in names:
            return [*pts, ("pool", "head.global_pool"), ("logits", "head.fc")]
        if isinstance(head, nn.Linear):
            return [*pts, ("pool", "head" + INPUT_SUFFIX), ("logits", "head")]
        return pts
    blocks = _numbered(model, r"blocks\.\d+")
    if blocks:
        pts = [(b, b) for b in blocks]
        head = names.get("head")
        if isinstance(head, nn.Linear):
            return [*pts, ("pool", "head" + INPUT_SUFFIX), ("logits", "head")]
        if head is not None and "head.global_pool" in names and "head.fc" in names:
            return [*pts, ("pool", "head.global_pool"), ("logits", "head.fc")]
        return pts
    raise LayerSelectionError(
        f"layers: auto does not know models of class {cls} (known: timm ResNet, MlpMixer, VisionTransformer, "
        "SwinTransformer, any model with blocks.N or layers.S.blocks.M, nn.Sequential); give an explicit list "
        f"of module names, e.g. {[n for n, _ in model.named_children()][:6]}"
    )


def resolve_point(model: nn.Module, name: str) -> tuple[nn.Module, bool]:
    """Return ``(module, capture_input)`` for a point name (``"layer1.0"`` or ``"head:input"``).

    Raises:
        LayerSelectionError: no module of that name; the message lists the closest names.

    """
    capture_input = name.endswith(INPUT_SUFFIX)
    base = name[: -len(INPUT_SUFFIX)] if capture_input else name
    names = dict(model.named_modules())
    if base not in names or base == "":
        valid = [n for n in names if n]
        close = difflib.get_close_matches(base, valid, n=5, cutoff=0.5)
        if not close:  # prefix matches help for "layer1" vs "layer1.0"-style mistakes
            close = [n for n in valid if n.startswith(base.split(".")[0])][:5]
        hint = f" Close module names: {', '.join(close)}." if close else ""
        raise LayerSelectionError(
            f"model {type(model).__name__} has no module {base!r}.{hint} Append {INPUT_SUFFIX!r} to capture a "
            f"module's input. First top-level modules: {', '.join(n for n, _ in model.named_children())}"
        )
    return names[base], capture_input


def select_layers(model: nn.Module, spec: str | Sequence[str] = "auto") -> list[tuple[str, str]]:
    """Return the measured points of ``model`` as ``[(label, module_name), ...]`` in depth order.

    Args:
        model: the network.
        spec: ``"auto"`` (see the module docstring for what it selects per model class) or an explicit list
            of module names (optionally with the ``:input`` suffix); explicit points are labelled by name.

    Raises:
        LayerSelectionError: an unknown module name (with close matches), an empty list, or ``auto`` on a
            model class it does not know.

    """
    if isinstance(spec, str):
        if spec != "auto":
            raise LayerSelectionError(f"layers must be 'auto' or a list of module names; got {spec!r}")
        return _auto(model)
    points = [(name, name) for name in spec]
    if not points:
        raise LayerSelectionError("layers: the list of module names is empty")
    for _, name in points:
        resolve_point(model, name)
    return points


def _first_tensor(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise LayerSelectionError(f"{where} produced {type(value).__name__}, not a tensor; pick another module")


@contextmanager
def capture_outputs(model: nn.Module, names: Sequence[str], clone: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Hooks that record the tensor at each point name during a forward; yields the (mutable) store.

    ``store[name]`` holds the latest value (a module called twice keeps its last call). Values are cloned
    by default so that a later in-place op of the model (``ReLU(inplace=True)``, ``x += shortcut``) cannot
    change a captured tensor. Works inside ``torch.func`` transforms: the stored values are the
    transformed (dual / batched) tensors of the current call. Hooks are removed on exit.
    """
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            module, capture_input = resolve_point(model, name)
            if capture_input:

                def pre_hook(mod, args, name=name):
                    t = _first_tensor(args, f"input of {name}")
                    store[name] = t.clone() if clone else t

                handles.append(module.register_forward_pre_hook(pre_hook))
            else:

                def hook(mod, args, out, name=name):
                    t = _first_tensor(out, name)
                    store[name] = t.clone() if clone else t

                handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for h in handles:
            h.remove()
