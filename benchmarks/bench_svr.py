"""asv benchmarks of the SVR family (sized for a 2-core CPU; the SVR runs on the CPU in float64).

``time_*``: wall time; ``peakmem_*``: peak resident memory of the call; ``track_*``: the speed-up of
ours (``compute_svr`` + ``svr_values``) over the per-layer NumPy reference measured in the same process
(:mod:`suite.bench.svr`, :mod:`suite.bench.harness`). Cases: ``features`` = the 16 conv maps of timm
``vgg19`` (full SVR, seconds), ``small`` = the whole SVR of a vgg19 stand-in at 1/16 width (well under a
second). The whole ``vgg19`` (minutes for the reference) is left to ``ranksuite bench svr_vgg19``.

Run as a script for a one-shot component breakdown of both sides (not a measurement)::

    python benchmarks/bench_svr.py --pair svr_vgg19_features --size default
"""

import torch

from suite.bench import run_pair
from suite.bench.svr import SIGMA, numpy_reference_svr, reference_weights, vgg_model
from suite.metrics.svr.representation import SvrParams, compute_svr, svr_values

CPU = torch.device("cpu")

# case -> (pair, size, layers)
_CASES = {
    "features": ("svr_vgg19_features", "default", ["features.*"]),
    "small": ("svr_vgg19", "small", None),
}


class Svr:
    params = list(_CASES)
    param_names = ["case"]
    timeout = 600

    def setup(self, case):
        _, size, self.layers = _CASES[case]
        self.model, _, _ = vgg_model(size)
        self.weights = reference_weights(self.model, self.layers)
        self.params_ = SvrParams(sigma=SIGMA)

    def _ours(self):
        return svr_values(compute_svr(self.model, layers=self.layers, driver="auto"), self.params_)

    def time_ours(self, case):
        self._ours()

    def time_numpy_reference(self, case):
        numpy_reference_svr(self.weights)

    def peakmem_ours(self, case):
        self._ours()

    def peakmem_numpy_reference(self, case):
        numpy_reference_svr(self.weights)

    def track_speedup_vs_numpy(self, case):
        pair, size, _ = _CASES[case]
        return run_pair(pair, CPU, size, rounds=3).speedup

    track_speedup_vs_numpy.unit = "x"


if __name__ == "__main__":
    from suite.bench.svr import main

    main()
