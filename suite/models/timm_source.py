"""Model source ``timm``: any timm architecture, random init by default, or local weights.

Weights never come from the network: ``weights:`` is a local checkpoint (``.safetensors`` through
safetensors, anything else through ``torch.load(weights_only=True)``), and ``pretrained: true`` resolves
only from the local Hugging Face hub cache or torch hub's checkpoint folder; a missing file raises
:class:`~suite.errors.MissingResource`, which the runner reports as *skipped* in the ``paper`` tier and
as an error elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from torch import nn

from suite.errors import MissingResource
from suite.models.registry import BuildContext, register_model_source
from suite.registry import suggest
from suite.spec.base import SpecModel

__all__ = ["TimmParams", "timm"]


def timm_model_names(pattern: str | None = None) -> list[str]:
    """Architecture names timm knows (``timm.list_models``), optionally filtered by an fnmatch pattern."""
    import timm as _timm

    return list(_timm.list_models(pattern or ""))


class TimmParams(SpecModel):
    """A timm model by name (``timm.create_model``)."""

    name: str = Field(..., description="timm architecture name, e.g. resnet18 (see `ranksuite ls models 'timm:*'`).")
    pretrained: bool = Field(False, description="Load pretrained weights from the local cache only (offline).")
    weights: str | None = Field(None, description="Local checkpoint path (.safetensors, .pt/.pth state dict).")
    input_size: list[int] | None = Field(
        None, min_length=3, max_length=3, description="[C, H, W] of the inputs metrics should use."
    )
    kwargs: dict[str, int | float | bool | str] = Field(
        default_factory=dict, description="Extra keyword arguments for timm.create_model (e.g. num_classes)."
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        import timm as _timm

        if not _timm.is_model(name):
            close = suggest(name, timm_model_names(f"{name[:3]}*") or timm_model_names())
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            raise ValueError(
                f"unknown timm model {name!r}{hint}. List the valid names with `ranksuite ls models 'timm:*'`"
            )
        return name

    @model_validator(mode="after")
    def _one_weight_source(self) -> TimmParams:
        if self.pretrained and self.weights:
            raise ValueError("give either pretrained: true or weights: <path>, not both")
        return self


def load_state_dict(path: Path) -> dict:
    """Read a state dict from a local ``.safetensors`` or torch checkpoint (``weights_only=True``)."""
    if not path.is_file():
        raise MissingResource(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            return state[key]
    return state


def cached_pretrained_file(name: str) -> Path | None:
    """The local file of timm's default pretrained weights for ``name``, or ``None`` when not cached.

    Looks in the Hugging Face hub cache (``hf_hub_id`` of the pretrained config) and in torch hub's
    ``checkpoints`` folder (``url``); nothing is fetched, so an offline machine answers at once.
    """
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except (RuntimeError, ValueError, KeyError):
        return None
    if cfg is None:
        return None
    if getattr(cfg, "hf_hub_id", None):
        from huggingface_hub import try_to_load_from_cache

        for filename in (getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin"):
            if filename:
                found = try_to_load_from_cache(cfg.hf_hub_id, filename)
                if isinstance(found, str) and Path(found).is_file():
                    return Path(found)
    if getattr(cfg, "url", None):
        import torch

        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        if candidate.is_file():
            return candidate
    return None


@register_model_source(TimmParams)
def timm(params: TimmParams, ctx: BuildContext) -> nn.Module:
    """timm model: random init with the case seed, a local checkpoint, or pretrained weights from the local cache."""
    import timm as _timm

    kwargs = dict(params.kwargs)
    if params.pretrained:
        cached = cached_pretrained_file(params.name)
        if cached is None:
            raise MissingResource(
                f"pretrained weights for {params.name!r} are not in the local cache (Hugging Face hub cache or "
                f"torch hub checkpoints); ranksuite never downloads. Fetch them once on a connected machine, or "
                f"pass weights: <path to a local checkpoint>"
            )
        model = _timm.create_model(params.name, pretrained=True, pretrained_cfg_overlay={"file": str(cached)}, **kwargs)
    else:
        model = _timm.create_model(params.name, pretrained=False, **kwargs)
    if params.weights:
        state = load_state_dict(Path(params.weights).expanduser())
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"checkpoint {params.weights} does not fit {params.name}: missing {list(missing)[:5]}, "
                f"unexpected {list(unexpected)[:5]}"
            )
    return model.eval()
