"""pytest-benchmark microbenchmarks of weight_spectrum (not part of the default test run).

Run: ``python -m pytest benchmarks/pytest --benchmark-enable --benchmark-json=benchmarks/results/pytest-benchmark-cpu.json``
"""

import pytest
import torch

from suite.bench.weight_spectrum import _model, numpy_reference_ranks
from suite.linalg.rank import FengRule
from suite.metrics.registry import MetricContext
from suite.metrics.weight_spectrum import WeightSpectrumParams, weight_spectrum

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module", params=["mlp50", "resnet18"])
def model(request):
    net, _ = _model(request.param)
    return net.eval()


def test_weight_spectrum_ours(benchmark, model):
    params = WeightSpectrumParams(tolerance=FengRule(), keep_singular_values=False)
    ctx = MetricContext(device=DEVICE, seed=0)
    net = model.to(DEVICE)
    result = benchmark.pedantic(weight_spectrum, args=(net, None, params, ctx), rounds=3, iterations=1)
    assert result["ranks"] == numpy_reference_ranks(model.cpu())


def test_weight_spectrum_numpy_reference(benchmark, model):
    ranks = benchmark.pedantic(numpy_reference_ranks, args=(model.cpu(),), rounds=3, iterations=1)
    assert len(ranks) > 0
