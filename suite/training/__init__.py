"""Trained networks for specs: the ``train:`` block, a deterministic trainer and a cache of trained weights.

:class:`TrainConfig` is the spec block (``suite.spec.schema`` adds it to every model entry),
:func:`train_model` trains, :func:`train_or_load` trains once and reuses the weights from the cache.
"""

from suite.training.cache import cache_paths, cache_root, train_or_load, training_definition, training_key
from suite.training.config import TrainConfig
from suite.training.trainer import TRAINER_VERSION, TrainingError, TrainingRecord, evaluate, train_model

__all__ = [
    "TRAINER_VERSION",
    "TrainConfig",
    "TrainingError",
    "TrainingRecord",
    "cache_paths",
    "cache_root",
    "evaluate",
    "train_model",
    "train_or_load",
    "training_definition",
    "training_key",
]
