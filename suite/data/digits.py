"""scikit-learn's bundled handwritten digits (1797 images of 8x8 pixels, 10 classes): real data, offline."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from suite.data.registry import Dataset, register_dataset
from suite.data.splits import SplitParams, split_indices, split_info, split_sizes

__all__ = ["DIGITS_N", "DigitsParams", "digits"]

DIGITS_N = 1797  # images in sklearn.datasets.load_digits


class DigitsParams(SplitParams):
    """The UCI optical digits shipped with scikit-learn (``sklearn.datasets.load_digits``)."""

    n: int | None = Field(
        None, ge=1, le=DIGITS_N, description="Take a seeded random subset of n images (of the split part, if any)."
    )
    layout: Literal["flat", "image"] = Field("flat", description="flat: (n, 64); image: (n, 1, 8, 8).")
    scale: Literal["unit", "raw", "standard"] = Field(
        "unit",
        description="unit: pixels / 16 in [0, 1]; raw: 0..16; standard: zero mean, unit variance per pixel "
        "(statistics of the train part when split is train or validation, of the loaded images when all).",
    )

    @model_validator(mode="after")
    def _n_fits_the_part(self) -> DigitsParams:
        if self.n is None or self.split == "all":
            return self
        n_train, n_val = split_sizes(DIGITS_N, self.validation_fraction)
        available = n_train if self.split == "train" else n_val
        if self.n > available:
            raise ValueError(
                f"n = {self.n} exceeds the {available} images of the {self.split} part "
                f"(validation_fraction {self.validation_fraction} of {DIGITS_N})"
            )
        return self


@register_dataset(DigitsParams)
def digits(params: DigitsParams, seed: int) -> Dataset:
    """scikit-learn digits (Alpaydin & Kaynak 1998): 8x8 grey images with pixel values 0..16.

    Order of operations: the split part (fixed by ``split_seed``), then the optional subset of ``n``
    images (by the case ``seed``), then scaling, then the layout.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    info = {"source": "sklearn.datasets.load_digits", **split_info(params, x.shape[0])}
    if params.split != "all":
        train = x[split_indices(x.shape[0], "train", params.validation_fraction, params.split_seed)]
        part = split_indices(x.shape[0], params.split, params.validation_fraction, params.split_seed)
        x, y = x[part], y[part]
    if params.n is not None:
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[: params.n]
        idx = idx.sort().values
        x, y = x[idx], y[idx]
    if params.scale == "unit":
        x = x / 16.0
    elif params.scale == "standard":
        reference = x if params.split == "all" else train  # train and validation share the train statistics
        std = reference.std(0)
        # a pixel constant in the reference (std 0) is only centred, as sklearn's StandardScaler does: dividing
        # by a tiny std would blow up the validation images that are not constant there
        x = (x - reference.mean(0)) / torch.where(std > 1e-6, std, torch.ones_like(std))
    if params.layout == "image":
        x = x.reshape(-1, 1, 8, 8)
    return Dataset(inputs=x, targets=y, info={**info, "n": int(x.shape[0])})
