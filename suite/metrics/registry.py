"""Registry of metrics. A metric is one decorated function plus one pydantic params model::

    class MyParams(SpecModel):
        tolerance: RankRule = FengRule()

    @register_metric(MyParams, needs_data=True)
    def my_metric(model, data, params: MyParams, ctx: MetricContext) -> dict: ...

The function returns a JSON-serialisable dict of values (lists, numbers, strings); checks address them
by dotted keys (``ranks``, ``layers.0``). ``version`` is part of every case hash: bump it when the
computation changes so stored baselines become stale instead of silently wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from suite.registry import Registry

if TYPE_CHECKING:
    import torch

    from suite.spec.base import SpecModel

__all__ = ["METRICS", "MetricContext", "MetricDef", "register_metric"]


@dataclass(frozen=True)
class MetricContext:
    """Run-time context of a metric call: the device to compute on and the case seed."""

    device: torch.device
    seed: int


@dataclass(frozen=True)
class MetricDef:
    """A registered metric.

    Attributes:
        fn: ``fn(model, data, params, ctx) -> dict`` of JSON-serialisable values.
        params: pydantic model of its parameters.
        needs_data: whether it reads a dataset (data-free metrics get ``dataset: none``).
        version: bumped when the computation changes; part of the case hash.
        summarize: ``values -> {column: cell}`` for the report's per-metric table.
        details: ``values -> (headers, rows)`` for the report's per-case detail table, or ``None``.
        plot: ``values -> [(title, matplotlib Figure), ...]`` for the report's per-case figures, or
            ``None``; the report saves them as PNGs next to the Markdown and links them.
        export: ``values -> [(file name, text), ...]`` of per-case data files (e.g. a graph as GraphML
            and JSON), or ``None``; the report writes them next to the figures, with the same per-case
            file-name prefix, and links them from the case's section. File names should be plain
            (``[A-Za-z0-9_.-]``); files sharing a stem are linked on one line, labelled by the stem's
            last ``-``-separated word (``svr-graph.graphml`` + ``svr-graph.json``: ``Graph: GraphML · JSON``).
    """

    name: str
    fn: Callable[..., dict[str, Any]]
    params: type[SpecModel]
    needs_data: bool
    version: int
    summarize: Callable[[dict[str, Any]], dict[str, Any]] | None
    details: Callable[[dict[str, Any]], tuple[list[str], list[list[Any]]]] | None
    doc: str
    plot: Callable[[dict[str, Any]], list[tuple[str, Any]]] | None = None
    export: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None


METRICS: Registry[MetricDef] = Registry("metric")


def register_metric(
    params: type[SpecModel],
    *,
    needs_data: bool,
    version: int = 1,
    name: str | None = None,
    summarize: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    details: Callable[[dict[str, Any]], tuple[list[str], list[list[Any]]]] | None = None,
    plot: Callable[[dict[str, Any]], list[tuple[str, Any]]] | None = None,
    export: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None,
):
    """Register ``fn(model, data, params, ctx) -> dict`` as the metric kind ``name`` (default: its name).

    ``summarize``, ``details``, ``plot`` and ``export`` are the report hooks described on :class:`MetricDef`.
    """
    return METRICS.decorator(
        lambda key, fn, doc: MetricDef(
            key, fn, params, needs_data, version, summarize, details, doc, plot=plot, export=export
        ),
        name,
    )
