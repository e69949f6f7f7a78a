"""Metrics, one module per family; each registers itself in :data:`METRICS` on import."""

from suite.metrics import weight_spectrum as _weight_spectrum  # noqa: F401  (registers weight_spectrum)
from suite.metrics.registry import METRICS, MetricContext, MetricDef, register_metric

__all__ = ["METRICS", "MetricContext", "MetricDef", "register_metric"]
