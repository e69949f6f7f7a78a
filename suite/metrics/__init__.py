"""Metrics, one module per family; each registers itself in :data:`METRICS` on import."""

from suite.metrics import weight_spectrum as _weight_spectrum  # noqa: F401  (registers weight_spectrum)
from suite.metrics import rank_diminishing as _rank_diminishing  # noqa: F401  (registers the rank-diminishing metrics)
from suite.metrics import svr as _svr  # noqa: F401  (registers the SVR metrics)
from suite.metrics import hessian as _hessian  # noqa: F401  (registers hessian_rank)
from suite.metrics.registry import METRICS, MetricContext, MetricDef, register_metric

__all__ = ["METRICS", "MetricContext", "MetricDef", "register_metric"]
