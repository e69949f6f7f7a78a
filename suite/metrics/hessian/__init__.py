"""Hessian-rank metrics (Singh et al. 2021, 2023).

* :mod:`.exact` -- dense float64 ``H_L``, ``H_o``, ``H_f`` of a loss through ``torch.func``.
* :mod:`.rank` -- ``hessian_rank``: their numerical ranks with thresholds and gaps.
* :mod:`.hvp` -- the same three Hessians as matrix-free float64 block operators (Hessian-vector products).
* :mod:`.sketch` -- numerical rank of a symmetric operator from a randomised range sketch and Rayleigh-Ritz.
* :mod:`.hvp_rank` -- ``hessian_rank_hvp``: the ranks through products, for nets too large for dense Hessians.

Closed forms for deep linear FCNs are in :mod:`suite.theory.hessian`, the bounds for deep linear CNNs (the
builtin ``cnn_fc``) in :mod:`suite.theory.hessian_cnn`; sweeps and their plots are spec-level ``series:``
(:mod:`suite.compare.series`).
"""

from suite.metrics.hessian import hvp_rank as _hvp_rank  # noqa: F401  (registers hessian_rank_hvp)
from suite.metrics.hessian import rank as _rank  # noqa: F401  (registers hessian_rank)
