"""Hessian-rank metrics (Singh et al. 2021, 2023).

* :mod:`.exact` -- dense float64 ``H_L``, ``H_o``, ``H_f`` of a loss through ``torch.func``.
* :mod:`.rank` -- ``hessian_rank``: their numerical ranks with thresholds and gaps.

Closed forms for deep linear networks are in :mod:`suite.theory.hessian`. Not built yet (issue 6): the
linear-CNN bounds, Hessian-vector-product ranks for large nets, sweeps and their plots.
"""

from suite.metrics.hessian import rank as _rank  # noqa: F401  (registers hessian_rank)
