"""Dotted keys into nested values (``ranks.0``, ``layers.fc.rank``, ``model.widths.1``), shared by checks and series."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from suite.registry import suggest

__all__ = ["walk"]


def walk(node: Any, parts: Sequence[str]) -> tuple[Any, str | None]:
    """``(value, None)`` at ``parts`` below ``node`` (dict keys, list indices, negative ones too), or
    ``(None, why)`` naming the first part that fails, with a did-you-mean for a near-miss dict key."""
    done: list[str] = []
    for part in parts:
        if isinstance(node, dict):
            if part not in node:
                here = ".".join(done) or "top level"
                close = suggest(part, [str(k) for k in node], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                return None, f"no {part!r} at {here}{hint}; have: {', '.join(map(str, node)) or 'nothing'}"
            node = node[part]
        elif isinstance(node, list):
            if not (part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node)):
                return None, f"index {part!r} out of range at {'.'.join(done)} (a list of {len(node)})"
            node = node[int(part)]
        else:
            return None, f"{'.'.join(done)} is {node!r}, not a mapping or list"
        done.append(part)
    return node, None
