"""Models: registered sources (``timm``, ``builtin``) and one constructor, :func:`build_model`."""

from __future__ import annotations

from typing import Any

import torch

from suite.models import block_orthogonal as _block_orthogonal  # noqa: F401  (registers block_orthogonal)
from suite.models import builtin as _builtin  # noqa: F401  (registers the built-in nets)
from suite.models import cnn_fc as _cnn_fc  # noqa: F401  (registers cnn_fc)
from suite.models import gaussian_chain as _gaussian_chain, structural as _structural  # noqa: F401  (registers both)
from suite.models import timm_source as _timm_source  # noqa: F401  (registers the timm source)
from suite.models.registry import (
    BUILTIN_NETS,
    MODEL_SOURCES,
    BuildContext,
    register_builtin_net,
    register_model_source,
)

__all__ = ["BUILTIN_NETS", "MODEL_SOURCES", "BuildContext", "build_model", "register_builtin_net", "register_model_source"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_model(entry: Any, ctx: BuildContext) -> torch.nn.Module:
    """Build the model a spec entry describes, seeded with ``ctx.seed``, in eval mode and ``ctx.dtype``.

    ``entry.source == "builtin"`` dispatches on ``entry.name`` in :data:`BUILTIN_NETS`; any other source
    is looked up in :data:`MODEL_SOURCES`.
    """
    torch.manual_seed(ctx.seed)
    if entry.source == "builtin":
        builder = BUILTIN_NETS.get(entry.name)
    else:
        builder = MODEL_SOURCES.get(entry.source)
    model = builder.fn(entry, ctx)
    return model.to(_DTYPES[ctx.dtype]).eval()
