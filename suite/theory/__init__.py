"""Closed forms that theory checks compare with; each registers itself in :data:`THEORIES`."""

from suite.theory import planted as _planted  # noqa: F401  (registers planted_product_rank)
from suite.theory import ginibre as _ginibre  # noqa: F401  (registers ginibre_lyapunov)
from suite.theory import svr as _svr  # noqa: F401  (registers block_orthogonal_dimensions)
from suite.theory import hessian as _hessian  # noqa: F401  (registers linear_fcn_hessian_ranks)
from suite.theory import hessian_cnn as _hessian_cnn  # noqa: F401  (registers linear_cnn_hessian_bounds, linear_cnn_outer_rank)
from suite.theory.registry import THEORIES, Prediction, register_theory

__all__ = ["THEORIES", "Prediction", "register_theory"]
