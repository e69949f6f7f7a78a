"""Datasets: registered kinds (gaussian, digits, mnist1d, synthetic_images) and :func:`load_dataset`."""

from __future__ import annotations

from typing import Any

from suite.data import digits as _digits  # noqa: F401  (registers digits)
from suite.data import mnist1d as _mnist1d  # noqa: F401  (registers mnist1d)
from suite.data import synthetic as _synthetic  # noqa: F401  (registers gaussian, synthetic_images)
from suite.data.registry import DATASETS, Dataset, register_dataset

__all__ = ["DATASETS", "Dataset", "load_dataset", "register_dataset"]


def load_dataset(entry: Any, seed: int) -> Dataset:
    """Load the dataset a spec entry describes (``entry.kind`` in :data:`DATASETS`), seeded with ``seed``."""
    return DATASETS.get(entry.kind).fn(entry, seed)
