"""Fixed train/validation splits shared by the labelled datasets (digits, mnist1d).

A split is a permutation of the sample indices drawn from its own generator seeded with ``split_seed``
(independent of the case seed): the first ``round(validation_fraction * n)`` permuted indices are the
validation part, the rest the train part. Both parts are returned sorted, so they keep the source order,
are disjoint, and together cover every index. The same ``split_seed`` and fraction give the same split
in every run and on every machine (``torch.randperm`` on a CPU generator).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from suite.spec.base import SpecModel

__all__ = ["Split", "SplitParams", "split_indices", "split_info", "split_sizes"]

Split = Literal["train", "validation", "all"]


class SplitParams(SpecModel):
    """The split fields of a labelled dataset: which part to take and how the parts are drawn."""

    split: Split = Field(
        "all", description="train or validation: one part of a fixed split by split_seed; all: every sample."
    )
    validation_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Share of the samples in the validation part (rounded to a count)."
    )
    split_seed: int = Field(
        0, ge=0, description="Seed of the split permutation; independent of the case seed, so the parts stay fixed."
    )


def split_sizes(n_total: int, validation_fraction: float) -> tuple[int, int]:
    """``(n_train, n_validation)`` of a split of ``n_total`` samples; both parts get at least one sample.

    Raises:
        ValueError: ``n_total < 2`` (nothing to split).
    """
    if n_total < 2:
        raise ValueError(f"cannot split {n_total} sample(s) into train and validation parts")
    n_val = min(max(round(validation_fraction * n_total), 1), n_total - 1)
    return n_total - n_val, n_val


def split_indices(n_total: int, split: Split, validation_fraction: float, split_seed: int) -> torch.Tensor:
    """Sorted int64 indices, shape ``(n_part,)``, of one part of the split of ``range(n_total)``.

    ``split="all"`` returns ``arange(n_total)``. Otherwise ``perm = randperm(n_total)`` from a generator
    seeded with ``split_seed``; validation is ``perm[:n_val]``, train ``perm[n_val:]`` (see
    :func:`split_sizes`), each sorted.

    Returns:
        The indices of the requested part.
    """
    if split == "all":
        return torch.arange(n_total)
    _, n_val = split_sizes(n_total, validation_fraction)
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(split_seed))
    part = perm[:n_val] if split == "validation" else perm[n_val:]
    return part.sort().values


def split_info(params: Any, n_total: int) -> dict[str, Any]:
    """Provenance of a split for ``Dataset.info``: the split fields and the size of the part taken.

    Returns:
        ``{"split", "n_total"}`` for ``split="all"``; with ``"validation_fraction"``, ``"split_seed"`` and
        ``"n_split"`` otherwise.
    """
    if params.split == "all":
        return {"split": "all", "n_total": n_total}
    n_train, n_val = split_sizes(n_total, params.validation_fraction)
    return {
        "split": params.split,
        "validation_fraction": params.validation_fraction,
        "split_seed": params.split_seed,
        "n_total": n_total,
        "n_split": n_train if params.split == "train" else n_val,
    }
