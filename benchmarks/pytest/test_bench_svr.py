"""pytest-benchmark microbenchmarks of the SVR on vgg19's 16 conv maps (not part of the default test run).

Run::

    python -m pytest benchmarks/pytest/test_bench_svr.py --benchmark-enable \
        --benchmark-json=benchmarks/results/pytest-benchmark-svr-cpu.json
"""

import pytest

from suite.bench.svr import SIGMA, OursSvr, agree_full, numpy_reference_svr, reference_weights, vgg_model
from suite.metrics.svr.representation import SvrParams, compute_svr, svr_values

LAYERS = ["features.*"]


@pytest.fixture(scope="module")
def vgg19():
    model, _, _ = vgg_model("default")
    return model


@pytest.fixture(scope="module")
def reference(vgg19):
    return numpy_reference_svr(reference_weights(vgg19, LAYERS))


def _ours(model):
    result = compute_svr(model, layers=LAYERS, driver="auto")
    return OursSvr(result, svr_values(result, SvrParams(sigma=SIGMA)))


def test_svr_vgg19_features_ours(benchmark, vgg19, reference):
    ours = benchmark.pedantic(_ours, args=(vgg19,), rounds=3, iterations=1, warmup_rounds=1)
    assert agree_full(ours, reference) is None


def test_svr_vgg19_features_numpy_reference(benchmark, vgg19):
    ref = benchmark.pedantic(numpy_reference_svr, args=(reference_weights(vgg19, LAYERS),), rounds=3, iterations=1)
    assert len(ref.significant) == 15
