"""Registries of model sources (``timm``, ``builtin``) and of built-in nets (``mlp``, ``planted``, ...).

Adding a source or a built-in net is one decorated function plus one pydantic params model::

    class MyNetParams(SpecModel):
        width: int = 8

    @register_builtin_net(MyNetParams)
    def my_net(params: MyNetParams, ctx: BuildContext) -> torch.nn.Module: ...

The spec schema picks the new entry up from the registry; nothing else names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from suite.registry import Registry

if TYPE_CHECKING:
    import torch

    from suite.spec.base import SpecModel

__all__ = [
    "BUILTIN_NETS",
    "MODEL_SOURCES",
    "BuildContext",
    "ModelBuilder",
    "register_builtin_net",
    "register_model_source",
]


@dataclass(frozen=True)
class BuildContext:
    """What a model builder may use besides its params: the case seed and the target dtype."""

    seed: int
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelBuilder:
    """A registered builder: its params model and the function ``fn(params, ctx) -> nn.Module``."""

    name: str
    params: type[SpecModel]
    fn: Callable[[Any, BuildContext], torch.nn.Module]
    doc: str


MODEL_SOURCES: Registry[ModelBuilder] = Registry("model source")
BUILTIN_NETS: Registry[ModelBuilder] = Registry("builtin net")


def register_model_source(params: type[SpecModel], name: str | None = None):
    """Register ``fn(params, ctx) -> nn.Module`` as a model source (spec key ``source:``)."""
    return MODEL_SOURCES.decorator(lambda key, fn, doc: ModelBuilder(key, params, fn, doc), name)


def register_builtin_net(params: type[SpecModel], name: str | None = None):
    """Register ``fn(params, ctx) -> nn.Module`` as a built-in net (``source: builtin``, ``name:``)."""
    return BUILTIN_NETS.decorator(lambda key, fn, doc: ModelBuilder(key, params, fn, doc), name)
