"""Registry of closed-form predictions that ``theory`` checks compare measurements with.

A theory is ``fn(case, values) -> Prediction``: it reads the resolved case (model, dataset and metric
configuration) and, where the formula needs them, the metric's measured intermediates, and returns the
predicted value with the quantities that went into it (shown in the report).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from suite.registry import Registry

if TYPE_CHECKING:
    from suite.spec.expand import Case

__all__ = ["THEORIES", "Prediction", "TheoryDef", "register_theory"]


@dataclass(frozen=True)
class Prediction:
    """A predicted value (number or list) and the intermediate quantities it came from."""

    expected: Any
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TheoryDef:
    name: str
    fn: Callable[[Case, dict[str, Any]], Prediction]
    citation: str
    doc: str


THEORIES: Registry[TheoryDef] = Registry("theory")


def register_theory(citation: str, name: str | None = None):
    """Register ``fn(case, values) -> Prediction`` under its name, with the source it comes from."""
    return THEORIES.decorator(lambda key, fn, doc: TheoryDef(key, fn, citation, doc), name)
