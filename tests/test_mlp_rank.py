"""jacobian_rank and feature_dimension on small nets: exact planted ranks, the MLP-50 toy, the decay fit."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from suite.data.registry import Dataset
from suite.metrics import METRICS
from suite.metrics.rank_diminishing.mlp_rank import (
    FeatureDimensionParams,
    JacobianRankParams,
    exponential_decay_fit,
    feature_dimension,
    jacobian_rank,
)
from suite.metrics.registry import MetricContext
from suite.models.builtin import MLPParams, PlantedParams, mlp, planted
from suite.models.registry import BuildContext

CTX = MetricContext(device=torch.device("cpu"), seed=0)


def test_registered():
    assert METRICS.get("jacobian_rank").needs_data
    assert METRICS.get("feature_dimension").params is FeatureDimensionParams


def test_jacobian_equals_jacrev_and_ranks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(2, 5, dtype=torch.float64)
    values = jacobian_rank(model, Dataset(x), JacobianRankParams(n_inputs=2, dtype="float64"), CTX)
    assert values["layers"] == ["0:Linear", "1:Tanh", "2:Linear"]
    ref = torch.func.jacrev(lambda p: model(p[None])[0])(x[0])
    sv = torch.linalg.svdvals(ref)
    measured = torch.tensor(values["singular_values"][2], dtype=torch.float64)
    torch.testing.assert_close(measured, sv, rtol=1e-10, atol=1e-12)
    assert values["ranks"] == [[5, 5, 3], [5, 5, 3]]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_planted_chain_exact_ranks(dtype):
    """Linear chain 10 -> 12 -> 8 -> 9 with inner dims 6, 4, 20: Jacobian rank = running min = [6, 4, 4]."""
    torch.manual_seed(0)
    model = planted(PlantedParams(widths=[10, 12, 8, 9], ranks=[6, 4, 20]), BuildContext(0))
    data = Dataset(torch.randn(64, 10))
    jr = jacobian_rank(model, data, JacobianRankParams(n_inputs=2, dtype=dtype), CTX)
    assert jr["ranks"] == [[6, 4, 4], [6, 4, 4]]
    for on in ("features", "covariance"):
        fd = feature_dimension(model, data, FeatureDimensionParams(rank_of=on, dtype=dtype), CTX)
        assert fd["dims"] == [6, 4, 4], on
        assert fd["input_feature_dim"] == 10


def test_mlp50_toy_rank_decays_with_depth():
    """Feng et al. Sec. 4.3 toy at width 32 (the paper: 1000): 50 linear layers, N(0, 1/n) weights, Gaussian inputs.

    Observed (seed 0): Jacobian rank 32 -> 11 and covariance dimension 32 -> 6 over 50 layers; exponential
    fits with rates 0.026 and 0.036 per layer (r2 0.98 and 0.95; a power law fits with r2 0.91).
    """
    torch.manual_seed(0)
    model = mlp(MLPParams(widths=[32] * 51, activation="identity", bias=False, init="normal"), BuildContext(0))
    data = Dataset(torch.randn(128, 32))
    jr = jacobian_rank(model, data, JacobianRankParams(n_inputs=1), CTX)
    fd = feature_dimension(model, data, FeatureDimensionParams(), CTX)
    assert len(jr["mean_ranks"]) == 50
    for seq in (jr["mean_ranks"], fd["dims"]):
        assert all(a >= b for a, b in zip(seq, seq[1:])), seq
        assert seq[0] == 32 and seq[-1] <= 16, seq
    for fit in (jr["decay_fit"], fd["decay_fit"]):
        assert fit["rate"] > 0.005 and fit["r2"] > 0.8
    assert fd["dims"][-1] <= jr["mean_ranks"][-1]  # eigenvalues of the covariance square the spread


def test_exponential_decay_fit_recovers_rate():
    ranks = [50.0, 50.0, 50.0] + [max(50.0 * math.exp(-0.2 * k), 1.0) for k in range(1, 26)]
    fit = exponential_decay_fit(ranks)
    assert fit["fit_range"][0] == 3  # the last plateau point, 1-based
    assert fit["rate"] == pytest.approx(0.2, rel=0.05)
    assert fit["r2"] > 0.99
    flat = exponential_decay_fit([5, 5, 5])
    assert flat["rate"] is None
    assert exponential_decay_fit([3])["rate"] is None


def test_report_hooks_render():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = planted(PlantedParams(widths=[6, 6, 6], ranks=[4, 2]), BuildContext(0))
    data = Dataset(torch.randn(16, 6))
    cases = (("jacobian_rank", JacobianRankParams(n_inputs=1)), ("feature_dimension", FeatureDimensionParams()))
    for kind, params in cases:
        mdef = METRICS.get(kind)
        values = mdef.fn(model, data, params, CTX)
        assert mdef.summarize(values)["points"] == 2
        assert len(mdef.details(values)[1]) == 2
        for _, fig in mdef.plot(values):
            plt.close(fig)
