"""Registry of dataset kinds. A dataset is one decorated function plus one pydantic params model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from suite.registry import Registry

if TYPE_CHECKING:
    import torch

    from suite.spec.base import SpecModel

__all__ = ["DATASETS", "Dataset", "DatasetKind", "register_dataset"]


@dataclass(frozen=True)
class Dataset:
    """Inputs (and targets, when the data has labels) of one dataset.

    Attributes:
        inputs: float tensor of shape ``(n, *sample_shape)``.
        targets: int64 tensor of shape ``(n,)`` or ``None``.
        info: provenance shown in reports (source, sizes, seed).
    """

    inputs: torch.Tensor
    targets: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetKind:
    name: str
    params: type[SpecModel]
    fn: Callable[[Any, int], Dataset]
    doc: str


DATASETS: Registry[DatasetKind] = Registry("dataset kind")


def register_dataset(params: type[SpecModel], name: str | None = None):
    """Register ``fn(params, seed) -> Dataset`` as a dataset kind (spec key ``kind:``)."""
    return DATASETS.decorator(lambda key, fn, doc: DatasetKind(key, params, fn, doc), name)
