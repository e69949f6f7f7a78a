"""MNIST-1D (Greydanus 2020): 1-D signals of length 40 in 10 classes, generated offline.

The data come from ``mnist1d.data.make_dataset`` with the package defaults of
``mnist1d.data.get_dataset_args()`` (``num_samples`` 5000, ``final_seq_length`` 40, ``seed`` 42: the
dataset of the paper). ``get_dataset`` is never called: it would download a pickle from GitHub and write
``./mnist1d_data.pkl`` into the working directory.

The package's own train/test cut (the first 80 % of its shuffled samples) is not used: its two parts are
concatenated back into the full shuffled array and split by :mod:`suite.data.splits`, like digits.

``make_dataset`` seeds python's ``random`` and NumPy's global generator; both states are saved and
restored around it, so loading MNIST-1D never changes the random streams of the caller. Generating the
default 5000 samples takes about 1 s (plus about 0.7 s to import the package, which pulls in
matplotlib), so the arrays are cached in-process by generation arguments.

Reference: S. Greydanus, D. Kobak, "Scaling down deep learning with MNIST-1D", ICML 2024
(arXiv:2011.14439); https://github.com/greydanus/mnist1d.
"""

from __future__ import annotations

import functools
import random
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from suite.data.registry import Dataset, register_dataset
from suite.data.splits import SplitParams, split_indices, split_info

__all__ = ["Mnist1dParams", "generate_mnist1d", "mnist1d"]

N_CLASSES = 10


class Mnist1dParams(SplitParams):
    """MNIST-1D signals from ``mnist1d.data.make_dataset`` (package defaults, never downloaded)."""

    n_samples: int = Field(
        5000, ge=N_CLASSES, description="Samples generated in all (num_samples); a multiple of 10 (equal classes)."
    )
    generator_seed: int = Field(
        42, ge=0, description="Seed of make_dataset; 42 (the package default) gives the data of the paper."
    )
    layout: Literal["flat", "channels"] = Field("flat", description="flat: (n, 40); channels: (n, 1, 40) for Conv1d.")

    @model_validator(mode="after")
    def _whole_classes(self) -> Mnist1dParams:
        if self.n_samples % N_CLASSES:
            raise ValueError(
                f"n_samples must be a multiple of {N_CLASSES} (make_dataset makes n_samples // 10 per class); "
                f"got {self.n_samples}"
            )
        return self


@functools.lru_cache(maxsize=4)
def generate_mnist1d(n_samples: int, generator_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All ``n_samples`` MNIST-1D samples in the package's shuffled order, cached in-process.

    Returns:
        ``(x, y)``: read-only float64 array of shape ``(n_samples, 40)`` (standardised over the whole
        dataset by ``make_dataset``) and int64 labels of shape ``(n_samples,)``.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n_samples
    args.seed = generator_seed
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float64)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@register_dataset(Mnist1dParams)
def mnist1d(params: Mnist1dParams, seed: int) -> Dataset:
    """MNIST-1D (Greydanus 2020): 10 templates of length 12, padded, scaled, sheared, translated, noised."""
    x, y = generate_mnist1d(params.n_samples, params.generator_seed)
    part = split_indices(x.shape[0], params.split, params.validation_fraction, params.split_seed).numpy()
    inputs = torch.from_numpy(x[part]).to(torch.float32)
    targets = torch.from_numpy(y[part])
    if params.layout == "channels":
        inputs = inputs.unsqueeze(1)
    info = {
        "source": "mnist1d.data.make_dataset",
        "generator_seed": params.generator_seed,
        **split_info(params, x.shape[0]),
        "n": int(inputs.shape[0]),
    }
    return Dataset(inputs=inputs, targets=targets, info=info)
