"""The ``train:`` block of a model entry: how to train the freshly built model before it is measured.

Example (a spec's ``models:`` entry)::

    - id: mlp
      source: builtin
      name: mlp
      widths: [64, 32, 10]
      train: {dataset: digits_train, epochs: 5, optimizer: adam, lr: 0.01}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from suite.spec.base import Id, SpecModel

__all__ = ["TrainConfig"]


class TrainConfig(SpecModel):
    """Supervised training of a model on a labelled dataset of the spec, with shuffled minibatches.

    The trained weights are cached by a hash of the model, this config, the training dataset, the build seed
    and dtype (see :mod:`suite.training.cache`), so a spec trains each model once per machine.
    """

    dataset: Id = Field(..., description="Id of a dataset of the spec (with targets) to train on.")
    epochs: int = Field(..., ge=1, description="Passes over the training dataset.")
    optimizer: Literal["sgd", "adam"] = Field("adam", description="torch.optim.SGD or torch.optim.Adam.")
    lr: float = Field(..., gt=0.0, description="Learning rate (constant).")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="SGD momentum (sgd only).")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 penalty coefficient passed to the optimizer.")
    batch_size: int = Field(64, ge=1, description="Minibatch size; the last batch of an epoch may be smaller.")
    seed: int = Field(0, ge=0, description="Seed of the shuffling (and of dropout, if any); not the build seed.")
    dtype: Literal["float32", "float64"] = Field(
        "float64",
        description="Precision of training; the model is returned in its build dtype. float64 makes the trained "
        "weights far less sensitive to reduction order (thread count, BLAS, device) than float32.",
    )
    loss: Literal["cross_entropy"] = Field("cross_entropy", description="Mean cross-entropy of logits and labels.")

    @model_validator(mode="after")
    def _momentum_is_sgd_only(self) -> TrainConfig:
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"momentum applies to optimizer sgd only; got optimizer {self.optimizer!r}")
        return self
