"""Tolerances for comparing measured values with expected ones, elementwise over nested lists."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field

from suite.spec.base import SpecModel

__all__ = ["AbsTolerance", "ExactTolerance", "RelTolerance", "Tolerance", "describe", "mismatches"]


class ExactTolerance(SpecModel):
    """Values must be identical (integers: ranks, dimensions, counts)."""

    kind: Literal["exact"] = "exact"


class AbsTolerance(SpecModel):
    """``|measured - expected| <= atol``."""

    kind: Literal["abs"] = "abs"
    atol: float = Field(..., ge=0.0)


class RelTolerance(SpecModel):
    """``|measured - expected| <= rtol * |expected|`` (plus ``atol`` for values near zero)."""

    kind: Literal["rel"] = "rel"
    rtol: float = Field(..., ge=0.0)
    atol: float = Field(0.0, ge=0.0)


Tolerance = Annotated[ExactTolerance | AbsTolerance | RelTolerance, Field(discriminator="kind")]


def describe(tol: ExactTolerance | AbsTolerance | RelTolerance) -> str:
    """Short text for reports: ``exact``, ``abs 1e-06``, ``rel 0.01``."""
    if isinstance(tol, AbsTolerance):
        return f"abs {tol.atol:g}"
    if isinstance(tol, RelTolerance):
        return f"rel {tol.rtol:g}" + (f" + abs {tol.atol:g}" if tol.atol else "")
    return "exact"


def _close(a: Any, b: Any, tol: ExactTolerance | AbsTolerance | RelTolerance) -> bool:
    if a is None or b is None or isinstance(a, (str, bool)) or isinstance(b, (str, bool)):
        return a == b
    if isinstance(tol, ExactTolerance):
        return a == b
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if isinstance(tol, AbsTolerance):
        return abs(a - b) <= tol.atol
    return abs(a - b) <= tol.rtol * abs(b) + tol.atol


def mismatches(
    measured: Any, expected: Any, tol: ExactTolerance | AbsTolerance | RelTolerance, path: str = ""
) -> list[str]:
    """Human-readable differences between ``measured`` and ``expected`` (empty when they agree).

    Lists are compared elementwise (lengths must match); dicts key by key; anything else with ``tol``.
    """
    if isinstance(expected, list) or isinstance(measured, list):
        if not (isinstance(expected, list) and isinstance(measured, list)):
            return [f"{path or 'value'}: measured {_short(measured)}, expected {_short(expected)}"]
        if len(measured) != len(expected):
            return [f"{path or 'value'}: length {len(measured)}, expected {len(expected)}"]
        out: list[str] = []
        for i, (m, e) in enumerate(zip(measured, expected)):
            out.extend(mismatches(m, e, tol, f"{path}[{i}]"))
        return out
    if isinstance(expected, dict) or isinstance(measured, dict):
        if not (isinstance(expected, dict) and isinstance(measured, dict)) or set(expected) != set(measured):
            return [f"{path or 'value'}: measured {_short(measured)}, expected {_short(expected)}"]
        out = []
        for k in sorted(expected):
            out.extend(mismatches(measured[k], expected[k], tol, f"{path}.{k}" if path else str(k)))
        return out
    if _close(measured, expected, tol):
        return []
    return [f"{path or 'value'}: measured {_short(measured)}, expected {_short(expected)}"]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
