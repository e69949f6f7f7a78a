"""scikit-learn's bundled handwritten digits (1797 images of 8x8 pixels, 10 classes): real data, offline."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from suite.data.registry import Dataset, register_dataset
from suite.spec.base import SpecModel

__all__ = ["DigitsParams", "digits"]


class DigitsParams(SpecModel):
    """The UCI optical digits shipped with scikit-learn (``sklearn.datasets.load_digits``)."""

    n: int | None = Field(None, ge=1, le=1797, description="Take a seeded random subset of n images.")
    layout: Literal["flat", "image"] = Field("flat", description="flat: (n, 64); image: (n, 1, 8, 8).")
    scale: Literal["unit", "raw", "standard"] = Field(
        "unit", description="unit: pixels / 16 in [0, 1]; raw: 0..16; standard: zero mean, unit variance per pixel."
    )


@register_dataset(DigitsParams)
def digits(params: DigitsParams, seed: int) -> Dataset:
    """scikit-learn digits (Alpaydin & Kaynak 1998): 8x8 grey images with pixel values 0..16."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    if params.n is not None:
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[: params.n]
        idx = idx.sort().values
        x, y = x[idx], y[idx]
    if params.scale == "unit":
        x = x / 16.0
    elif params.scale == "standard":
        x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    if params.layout == "image":
        x = x.reshape(-1, 1, 8, 8)
    return Dataset(inputs=x, targets=y, info={"source": "sklearn.datasets.load_digits", "n": int(x.shape[0])})
