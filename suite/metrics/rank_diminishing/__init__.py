"""Rank-diminishing metrics (Feng et al., NeurIPS 2022); each module registers its metric on import.

* :mod:`.ginibre` -- ``ginibre_lyapunov``: implicit impetus (Thm 4-5, App. A.7), Lyapunov exponents and
  rank vs depth of Gaussian linear chains against the Ginibre closed form.
* :mod:`.structural` -- ``structural_rank_loss``: structural impetus (Sec. 4.1, Fig. 3), PCA dimension and
  Jacobian rank before and after one component.
"""

from suite.metrics.rank_diminishing import ginibre as _ginibre  # noqa: F401  (registers ginibre_lyapunov)
from suite.metrics.rank_diminishing import mlp_rank as _mlp_rank  # noqa: F401  (jacobian_rank, feature_dimension)
from suite.metrics.rank_diminishing import partial_jacobian as _partial_jacobian  # noqa: F401  (partial_jacobian_rank)
from suite.metrics.rank_diminishing import structural as _structural  # noqa: F401  (registers structural_rank_loss)
