"""Base class of every model that appears in a spec: unknown keys are errors, instances are frozen."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Id", "SpecModel"]


class SpecModel(BaseModel):
    """``extra="forbid"`` (a misspelt key is an error, not silently ignored) and ``frozen=True``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Id = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64, description="Identifier used in case ids."),
]
