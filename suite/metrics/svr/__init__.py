"""Singular Value Representation metrics (Meller & Berkouk); each module registers its metric on import.

* :mod:`.maps` -- which Linear/Conv maps form the chain (and what it means around skip connections).
* :mod:`.spectral` -- spectral neurons, adjacency, internal dimensions, node intensity (pure functions).
* :mod:`.significance` -- null models (chi2, exact Beta law) and thresholds.
* :mod:`.representation` -- ``svr``: the whole representation of a model with significance counts.
* :mod:`.null_fit` -- ``svr_null_fit``: the null models against coefficients of random weights (App. B.2).
* :mod:`.noise_sweep` -- ``svr_noise_sweep``: internal dimensions under rotation noise (App. B.1).
* :mod:`.pruning` -- ``svr_pruning``: accuracy after keeping the top spectral neurons (Sec. 3.1).
"""

from suite.metrics.svr import representation as _representation  # noqa: F401  (registers svr)
from suite.metrics.svr import noise_sweep as _noise_sweep  # noqa: F401  (registers svr_noise_sweep)
from suite.metrics.svr import pruning as _pruning  # noqa: F401  (registers svr_pruning)
from suite.metrics.svr import null_fit as _null_fit  # noqa: F401  (registers svr_null_fit)
