"""Deterministic supervised training of a model on a labelled :class:`~suite.data.Dataset`.

:func:`train_model` runs ``config.epochs`` passes of minibatch training (cross-entropy on logits of shape
``(batch, n_classes)``) with Adam or SGD. Everything random is seeded from ``config.seed`` and nothing
touches the caller's random streams: the shuffling draws from its own ``torch.Generator``, and the
training runs inside ``torch.random.fork_rng`` (seeded with ``config.seed``, for dropout and other
in-model randomness), which restores the global torch state afterwards. Training happens in
``config.dtype`` (float64 by default); the model is handed back in the floating dtype it came in, in eval
mode, with no gradients attached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from suite.data.registry import Dataset
from suite.errors import TrainingError
from suite.training.config import TrainConfig

__all__ = ["TRAINER_VERSION", "TrainingError", "TrainingRecord", "evaluate", "train_model"]

TRAINER_VERSION = 1  # bump when a change to this module changes trained weights (invalidates the cache)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_EVAL_BATCH = 1024



@dataclass(frozen=True)
class TrainingRecord:
    """What one training did.

    Attributes:
        epochs, steps: passes over the data and optimizer steps (``epochs * ceil(n_train / batch_size)``).
        n_train: training samples.
        epoch_loss, epoch_accuracy: per epoch, the mean loss and accuracy over its minibatches, measured
            while training (train mode, weights changing within the epoch).
        final_train_loss, final_train_accuracy: one pass over the training data after training, in eval mode.
        time_s: wall-clock seconds of the training (CUDA-synchronised), evaluation included.
        device, dtype: where and in what precision it trained.
        trainer_version: :data:`TRAINER_VERSION` of the code that trained.
    """

    epochs: int
    steps: int
    n_train: int
    epoch_loss: list[float] = field(default_factory=list)
    epoch_accuracy: list[float] = field(default_factory=list)
    final_train_loss: float = math.nan
    final_train_accuracy: float = math.nan
    time_s: float = 0.0
    device: str = "cpu"
    dtype: str = "float64"
    trainer_version: int = TRAINER_VERSION

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field.

        Returns:
            ``dataclasses.asdict(self)``.
        """
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingRecord:
        """Inverse of :meth:`to_json` (unknown keys are ignored).

        Returns:
            The record.
        """
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def _float_dtype(model: nn.Module) -> torch.dtype:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    raise TrainingError("the model has no floating-point parameters to train")


def _check_data(dataset: Dataset) -> None:
    if dataset.targets is None:
        source = dataset.info.get("source", "this dataset")
        raise TrainingError(f"training needs a dataset with targets (labels); {source} has none")
    n = dataset.inputs.shape[0]
    if dataset.targets.shape != (n,) or dataset.targets.dtype != torch.int64:
        raise TrainingError(
            f"training needs int64 targets of shape ({n},); "
            f"got {dataset.targets.dtype} of shape {tuple(dataset.targets.shape)}"
        )
    if n == 0:
        raise TrainingError("the training dataset is empty")


def _logits(model: nn.Module, x: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Forward ``x``, checking once that the output is ``(batch, C)`` with ``C >= n_classes``."""
    try:
        out = model(x)
    except RuntimeError as exc:
        raise TrainingError(f"the model cannot take the training inputs of shape {tuple(x.shape[1:])}: {exc}") from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] < n_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TrainingError(
            f"cross-entropy needs logits of shape (batch, >= {n_classes} classes); the model outputs {shape}"
        )
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, device: torch.device | str = "cpu") -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``dataset``, in batches of 1024, in the model's dtype.

    The model's mode (train/eval) is left as it is: call ``model.eval()`` first for inference statistics.

    Returns:
        ``(loss, accuracy)``.
    """
    _check_data(dataset)
    device = torch.device(device)
    dtype = _float_dtype(model)
    n = dataset.inputs.shape[0]
    n_classes = int(dataset.targets.max()) + 1
    total_loss, correct = 0.0, 0
    for start in range(0, n, _EVAL_BATCH):
        xb = dataset.inputs[start : start + _EVAL_BATCH].to(device=device, dtype=dtype)
        yb = dataset.targets[start : start + _EVAL_BATCH].to(device)
        out = _logits(model, xb, n_classes)
        total_loss += float(nn.functional.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    return total_loss / n, correct / n


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def train_model(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
) -> TrainingRecord:
    """Train ``model`` in place on ``dataset`` as ``config`` says; same inputs give bitwise-equal weights.

    Args:
        model: any module mapping ``dataset.inputs[:b]`` (shape ``(b, *sample_shape)``) to logits ``(b, C)``.
        dataset: inputs ``(n, *sample_shape)`` and int64 targets ``(n,)`` in ``[0, C)``.
        config: the ``train:`` block.
        device: where to train; the model is moved there and stays there.
        log: called with one line per epoch (progress), if given.

    Returns:
        The :class:`TrainingRecord`. The model is left in its original floating dtype and in eval mode.

    Raises:
        TrainingError: no targets, logits of the wrong shape, inputs the model cannot take, or a loss that
            became NaN or infinite.
    """
    _check_data(dataset)
    device = torch.device(device)
    original = _float_dtype(model)
    dtype = _DTYPES[config.dtype]
    n = dataset.inputs.shape[0]
    n_classes = int(dataset.targets.max()) + 1
    x = dataset.inputs.to(device=device, dtype=dtype)
    y = dataset.targets.to(device)
    model.to(device=device, dtype=dtype)
    optimizer = _optimizer(model, config)
    shuffle = torch.Generator().manual_seed(config.seed)
    epoch_loss: list[float] = []
    epoch_accuracy: list[float] = []
    steps = 0
    _sync(device)
    t0 = time.perf_counter()
    fork_devices = []
    if device.type == "cuda":
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(config.seed)
        model.train()
        for epoch in range(config.epochs):
            order = torch.randperm(n, generator=shuffle).to(device)
            total_loss = torch.zeros((), dtype=dtype, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                out = _logits(model, x[idx], n_classes)
                loss = nn.functional.cross_entropy(out, y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                total_loss += loss.detach() * idx.numel()
                correct += (out.detach().argmax(1) == y[idx]).sum()
            mean_loss = float(total_loss) / n
            if not math.isfinite(mean_loss):
                raise TrainingError(
                    f"the training loss became {mean_loss} in epoch {epoch + 1}; "
                    f"lower lr ({config.lr}) or check the data"
                )
            epoch_loss.append(mean_loss)
            epoch_accuracy.append(int(correct) / n)
            if log is not None:
                log(
                    f"epoch {epoch + 1}/{config.epochs}: loss {mean_loss:.4f}, accuracy {epoch_accuracy[-1]:.3f} "
                    f"({time.perf_counter() - t0:.1f}s)"
                )
    model.zero_grad(set_to_none=True)
    model.eval()
    final_loss, final_accuracy = evaluate(model, Dataset(x, y, dataset.info), device=device)
    model.to(dtype=original)
    _sync(device)
    return TrainingRecord(
        epochs=config.epochs,
        steps=steps,
        n_train=n,
        epoch_loss=epoch_loss,
        epoch_accuracy=epoch_accuracy,
        final_train_loss=final_loss,
        final_train_accuracy=final_accuracy,
        time_s=time.perf_counter() - t0,
        device=str(device),
        dtype=config.dtype,
    )
