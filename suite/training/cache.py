"""On-disk cache of trained weights, keyed by everything that determines them.

Layout, under :func:`cache_root` (``$RANKSUITE_CACHE``, else ``~/.cache/ranksuite``)::

    trained/<key>.safetensors   the model's state dict (parameters and buffers) in its build dtype
    trained/<key>.json          {"key", "definition", "record", "created", "versions"}

``key`` is 16 hex digits of SHA-256 over the canonical JSON (sorted keys) of :func:`training_definition`:
the model entry (without ``id``, ``description``, ``seed`` and ``train``), the ``train:`` block (without
its dataset id), the training dataset entry (without ``id`` and ``description``), the build seed and
dtype, and :data:`~suite.training.trainer.TRAINER_VERSION`. Renaming an id does not retrain; changing
anything else does. The device is not part of the key: weights trained on one device are reused on
another (the JSON records where they were trained).

Both files are written to a temporary file in the same folder and renamed into place (``os.replace``),
weights first, so a reader sees either no entry or a complete one; two processes training the same key
at once both train and the last rename wins with identical content.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from suite.data.registry import Dataset
from suite.training.trainer import TRAINER_VERSION, TrainingError, TrainingRecord, train_model

__all__ = ["cache_paths", "cache_root", "train_or_load", "training_definition", "training_key"]


def cache_root() -> Path:
    """The ranksuite cache folder: ``$RANKSUITE_CACHE`` if set, else ``~/.cache/ranksuite``.

    Returns:
        The folder (not created).
    """
    env = os.environ.get("RANKSUITE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ranksuite"


def training_definition(model_entry: Any, dataset_entry: Any, *, seed: int, dtype: str) -> dict[str, Any]:
    """Everything that determines the trained weights of ``model_entry`` (which must have ``train`` set).

    Returns:
        A JSON-serialisable dict: ``model``, ``train``, ``dataset``, ``seed``, ``dtype``, ``trainer_version``.
    """
    if getattr(model_entry, "train", None) is None:
        raise TrainingError("the model entry has no train: block")
    return {
        "model": model_entry.model_dump(mode="json", exclude={"id", "description", "seed", "train"}),
        "train": model_entry.train.model_dump(mode="json", exclude={"dataset"}),
        "dataset": dataset_entry.model_dump(mode="json", exclude={"id", "description"}),
        "seed": seed,
        "dtype": dtype,
        "trainer_version": TRAINER_VERSION,
    }


def training_key(definition: dict[str, Any]) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of ``definition``.

    Returns:
        The cache key.
    """
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_paths(key: str, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """``(weights, record)`` paths of ``key`` under ``cache_dir`` (default :func:`cache_root`).

    Returns:
        ``<cache>/trained/<key>.safetensors`` and ``<cache>/trained/<key>.json``.
    """
    folder = (cache_dir if cache_dir is not None else cache_root()) / "trained"
    return folder / f"{key}.safetensors", folder / f"{key}.json"


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(text: str) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    return write


def _read_record(path: Path) -> TrainingRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return TrainingRecord.from_json(data["record"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load(model: nn.Module, weights: Path, device: torch.device) -> nn.Module:
    from safetensors.torch import load_model

    try:
        load_model(model, str(weights), strict=True, device=str(device))
    except RuntimeError as exc:  # the architecture no longer fits the stored weights
        raise TrainingError(
            f"cached weights {weights} do not fit the model; delete the file to retrain: {exc}"
        ) from exc
    return model.eval()


def train_or_load(
    model_entry: Any,
    build_fn: Callable[[], nn.Module],
    dataset_entry: Any,
    load_data: Callable[[], Dataset],
    *,
    seed: int,
    dtype: str,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[nn.Module, TrainingRecord, bool]:
    """The model of ``model_entry`` trained as its ``train:`` block says: from the cache, or trained and cached.

    Args:
        model_entry: a spec model entry with ``train`` set.
        build_fn: builds the untrained model (seeded, in the build dtype, on ``device``).
        dataset_entry: the spec entry of ``model_entry.train.dataset``.
        load_data: loads that dataset; called only when training (not on a cache hit).
        seed, dtype: the build seed and dtype (part of the key).
        device: where to train and where the returned model lives.
        cache_dir: cache folder (default :func:`cache_root`).
        log: progress lines while training (never called on a cache hit).

    Returns:
        ``(model, record, cache_hit)``: the trained model in eval mode and build dtype, the record of its
        training (the original one on a hit), and whether the weights came from the cache.
    """
    device = torch.device(device)
    definition = training_definition(model_entry, dataset_entry, seed=seed, dtype=dtype)
    key = training_key(definition)
    weights, record_path = cache_paths(key, cache_dir)
    if weights.is_file() and record_path.is_file():
        record = _read_record(record_path)
        if record is not None:
            return _load(build_fn(), weights, device), record, True
    model = build_fn()
    record = train_model(model, load_data(), model_entry.train, device=device, log=log)

    def write_weights(tmp: Path) -> None:
        from safetensors.torch import save_model

        save_model(model, str(tmp), metadata={"key": key, "trainer_version": str(TRAINER_VERSION)})

    _atomic(weights, write_weights)
    payload = {
        "key": key,
        "definition": definition,
        "record": record.to_json(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"torch": torch.__version__},
    }
    _atomic(record_path, _write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n"))
    return model, record, False
