"""Hessian-rank metrics (Singh et al. 2021, 2023).

* :mod:`.exact` -- dense float64 ``H_L``, ``H_o``, ``H_f`` of a loss through ``torch.func``.

Closed forms for deep linear networks are in :mod:`suite.theory.hessian`. The ``hessian_rank`` metric,
CNN bounds, Hessian-vector-product ranks and the spec are not built yet (issue 6).
"""
