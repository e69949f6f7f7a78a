"""asv benchmarks of the ``weight_spectrum`` family (sized for a 2-core CPU; CUDA when available).

``time_*``: wall time; ``peakmem_*``: peak resident memory of the call; ``track_*``: the speed-up of
ours over the per-layer NumPy reference measured in the same process (suite.bench.harness).
"""

import torch

from suite.bench import run_pair
from suite.bench.weight_spectrum import _model, numpy_reference_ranks
from suite.linalg.rank import FengRule
from suite.metrics.registry import MetricContext
from suite.metrics.weight_spectrum import WeightSpectrumParams, weight_spectrum

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


class WeightSpectrum:
    params = ["resnet18", "mlp50"]
    param_names = ["model"]
    timeout = 300

    def setup(self, size):
        self.model, _ = _model(size)
        self.model_dev = self.model.to(DEVICE)
        self.params_ = WeightSpectrumParams(tolerance=FengRule(), keep_singular_values=False)
        self.ctx = MetricContext(device=DEVICE, seed=0)

    def time_ours(self, size):
        weight_spectrum(self.model_dev, None, self.params_, self.ctx)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    def time_numpy_reference(self, size):
        numpy_reference_ranks(self.model)

    def peakmem_ours(self, size):
        weight_spectrum(self.model_dev, None, self.params_, self.ctx)

    def track_speedup_vs_numpy(self, size):
        return run_pair("weight_spectrum_vs_numpy", DEVICE, size, rounds=3).speedup

    track_speedup_vs_numpy.unit = "x"
