"""Hessian-vector products (suite.metrics.hessian.hvp) against the dense float64 Hessians, the sketched rank
(suite.metrics.hessian.sketch) against planted spectra and dense ranks, and the ``hessian_rank_hvp`` metric
against the dense ``hessian_rank`` path and the linear-FCN closed forms of Singh et al. (2021)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from suite.bench import PAIRS
from suite.data.registry import Dataset
from suite.errors import MetricError
from suite.linalg.rank import EPS_FLOAT64, ExplicitRule, FengRule, NumpyRule, numerical_rank
from suite.metrics import METRICS
from suite.metrics.hessian.exact import exact_hessians
from suite.metrics.hessian.hvp import hessian_operators
from suite.metrics.hessian.hvp_rank import HessianRankHVPParams, hessian_rank_hvp
from suite.metrics.hessian.rank import HessianRankParams, hessian_rank
from suite.metrics.hessian.sketch import sketch_rank
from suite.metrics.registry import MetricContext
from suite.theory.hessian import linear_fcn_ranks

pytestmark = pytest.mark.usefixtures("one_thread_module")

CTX = MetricContext(torch.device("cpu"), 0)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def _conv(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 5, 3)).double()


def _linear(widths: list[int], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])])


def _targets(n: int, k: int, loss: str, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if loss == "mse":
        return torch.randn(n, k, dtype=torch.float64, generator=gen)
    return torch.randint(0, k, (n,), generator=gen)


def _planted(n: int, eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    """``U diag(eigenvalues) U^T`` with ``U`` ``(n, len(eigenvalues))`` orthonormal (seeded), float64."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(n, len(eigenvalues), dtype=torch.float64, generator=gen)).Q
    return (u * torch.tensor(eigenvalues, dtype=torch.float64)) @ u.T


# ------------------------------------------------------------------------------ operators


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize(("make", "input_shape"), [(_mlp, (4,)), (_conv, (2, 7))], ids=["mlp", "conv1d"])
def test_products_equal_the_dense_hessian_columns(make, input_shape, loss):
    """``H V`` for ``V = I`` (all columns) equals the dense H_L, H_o, H_f of exact_hessians to 1e-10 relative,
    with the block vmapped and looped."""
    net = make()
    x = torch.randn(6, *input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = _targets(6, 3, loss)
    dense = exact_hessians(net, x, y, loss)
    eye = torch.eye(dense.n_params, dtype=torch.float64)
    for batching in ("vmap", "loop"):
        ops = hessian_operators(net, x, y, loss, batching=batching)
        assert ops.n_params == dense.n_params == sum(p.numel() for p in net.parameters())
        for part in ("loss", "outer", "functional"):
            matrix = getattr(dense, part)
            product = getattr(ops, part)(eye)
            err = float((product - matrix).abs().max() / matrix.abs().max())
            assert err < 1e-10, (batching, part, err)
    # a single vector is one column; the functional part is not trivially zero here (tanh, non-zero residual)
    v = torch.randn(dense.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ops.functional(v), dense.functional @ v, rtol=1e-10, atol=1e-12)
    assert float(dense.functional.abs().max()) > 1e-3 * float(dense.loss.abs().max())


def test_float32_model_is_evaluated_in_float64_and_left_alone():
    net = _linear([5, 4, 3])
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    ops = hessian_operators(net, x, y, "cross_entropy")
    out = ops.loss(torch.eye(ops.n_params, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert net[0].weight.dtype == torch.float32
    torch.testing.assert_close(out, exact_hessians(net, x, y, "cross_entropy").loss, rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------------------------ sketched rank


def test_sketch_recovers_planted_ranks_of_indefinite_matrices():
    """Exact low rank with mixed signs and a spread of magnitudes (1 to 1e-6): the rank, sigma_1 and the
    threshold of the numpy rule, after fewer products than n."""
    n = 300
    for rank, seed in [(3, 0), (40, 1), (90, 2)]:
        gen = torch.Generator().manual_seed(seed)
        mags = torch.logspace(0, -6, rank, dtype=torch.float64)
        signs = torch.randint(0, 2, (rank,), generator=gen) * 2 - 1
        h = _planted(n, (mags * signs).tolist(), seed)
        res = sketch_rank(lambda v: h @ v, n, seed=seed)
        assert res.rank == rank == numerical_rank(h, NumpyRule()).rank
        assert res.sigma_max == pytest.approx(1.0, rel=1e-12)
        assert res.threshold == pytest.approx(n * EPS_FLOAT64, rel=1e-12)
        assert res.converged and not res.exact
        assert res.matvecs == 2 * res.sketch_size and res.sketch_size < n
        assert res.sketch_size - res.rank >= 10
        assert res.gap is not None and res.gap > 1e6  # the next Ritz value is rounding, ~1e-16


def test_sketch_resolves_eigenvalues_straddling_the_threshold():
    """Planted eigenvalues at +-3 and 0.3 times the numpy threshold beside large ones: only the +-3 count,
    as in the dense rank; and a continuous spectrum across 16 decades (factor 1.2 apart) under three rules."""
    n = 400
    tau = n * EPS_FLOAT64
    eig = [1.0, -0.5, 0.25, -1e-3, 1e-6] + [3 * tau] * 5 + [-3 * tau] * 5 + [0.3 * tau] * 5 + [-0.3 * tau] * 5
    h = _planted(n, eig, seed=4)
    res = sketch_rank(lambda v: h @ v, n)
    assert res.rank == 15 == numerical_rank(h, NumpyRule()).rank
    assert 2 * tau < float(res.ritz[14]) < 4 * tau  # the +-3 tau eigenvalues, resolved
    assert float(res.ritz[15]) < 0.5 * tau

    gen = torch.Generator().manual_seed(5)
    mags = torch.logspace(0, -16, 200, dtype=torch.float64)
    h = _planted(n, (mags * (torch.randint(0, 2, (200,), generator=gen) * 2 - 1)).tolist(), seed=5)
    for rule, expected in [(NumpyRule(), 163), (FengRule(), 54), (ExplicitRule(rtol=1e-6), 75)]:
        res = sketch_rank(lambda v: h @ v, n, rule)
        assert res.rank == expected == numerical_rank(h, rule).rank, rule
        assert res.matvecs < 2 * n


def test_sketch_is_not_fooled_by_mixed_signs():
    """40 eigenvalues at +-1 beside 200 at +-3 thresholds: a first block holds part of the +-3 tau eigenspace,
    whose Ritz values mix the signs and sit near zero, passing for spare directions. The count must survive
    one more block; without that rule the sketch stopped at rank 50 with k = 64 (reported as converged)."""
    n = 1500
    tau = n * EPS_FLOAT64
    h = _planted(n, [1.0, -1.0] * 20 + [3 * tau, -3 * tau] * 100, seed=1)
    assert numerical_rank(h, NumpyRule()).rank == 240
    for block in (8, 32, 64):
        res = sketch_rank(lambda v: h @ v, n, block=block)
        assert (res.rank, res.converged, res.exact) == (240, True, False), block


def test_sketch_finds_eigenvalues_of_any_multiplicity():
    """100 copies of 1 and 60 of -2 with blocks of 8: fresh Gaussian images find every copy (a block Krylov
    method would find at most 8 copies of each)."""
    n = 300
    h = _planted(n, [1.0] * 100 + [-2.0] * 60, seed=6)
    res = sketch_rank(lambda v: h @ v, n, block=8)
    assert res.rank == 160
    assert torch.allclose(res.ritz[:60], torch.full((60,), 2.0, dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(res.ritz[60:160], torch.ones(100, dtype=torch.float64), rtol=1e-12)


def test_sketch_scale_zero_operator_full_rank_and_max_sketch():
    n = 50
    zero = torch.zeros(n, n, dtype=torch.float64)
    res = sketch_rank(lambda v: zero @ v, n, block=16)
    assert (res.rank, res.sketch_size, res.converged) == (0, 32, True)  # one block, confirmed by a second
    # rounding noise of a large operator is rank 0 on that operator's scale (the H_f rule of hessian_rank)
    noise = 1e-15 * _planted(n, [1.0] * 10, seed=7)
    res = sketch_rank(lambda v: noise @ v, n, scale=1.0, block=16)
    assert res.rank == 0 and res.threshold == pytest.approx(n * EPS_FLOAT64)
    assert sketch_rank(lambda v: noise @ v, n, block=16).rank == 10  # on its own scale it has rank 10
    # full rank: the sketch grows to n, where it is exact
    full = _planted(n, torch.linspace(1, 2, n).tolist(), seed=8)
    res = sketch_rank(lambda v: full @ v, n, block=16)
    assert (res.rank, res.sketch_size, res.exact, res.converged) == (n, n, True, True)
    # a cap below the rank: a lower bound, flagged as not converged
    res = sketch_rank(lambda v: full @ v, n, block=16, max_sketch=20)
    assert (res.sketch_size, res.converged, res.rank) == (20, False, 20)
    with pytest.raises(ValueError, match="growth > 1"):
        sketch_rank(lambda v: full @ v, n, growth=1.0)


def test_sketch_is_reproducible_with_its_seed():
    h = _planted(120, [(j - 15) / 15 for j in range(31)], seed=9)  # includes an exact 0
    a = sketch_rank(lambda v: h @ v, 120, seed=3)
    b = sketch_rank(lambda v: h @ v, 120, seed=3)
    assert a.rank == b.rank == 30
    assert torch.equal(a.ritz, b.ritz)


# ------------------------------------------------------------------------------ the metric


def _gaussian_data(n: int, d: int, seed: int = 1) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    return Dataset(torch.randn(n, d, generator=gen), torch.randint(0, 4, (n,), generator=gen))


@pytest.mark.parametrize(
    ("widths", "n", "loss"),
    [
        ([8, 5, 5, 3], 20, "mse"),
        ([10, 6, 6, 6, 4], 5, "mse"),  # r = 5 < d
        ([8, 2, 5, 4], 20, "cross_entropy"),  # bottleneck q = 2
        ([12, 6, 6, 4], 30, "cross_entropy"),
    ],
)
def test_metric_equals_dense_ranks_and_singh_formulas_on_linear_fcns(widths, n, loss):
    net = _linear(widths)
    data = _gaussian_data(n, widths[0])
    params = HessianRankHVPParams(loss=loss, block=8, cross_check_max_params=10_000)
    values = hessian_rank_hvp(net, data, params, CTX)
    pred = linear_fcn_ranks(values["data_rank"], widths, loss)
    assert values["ranks"] == values["exact_ranks"] == [pred.outer, pred.functional, pred.loss]
    dense = hessian_rank(net, data, HessianRankParams(loss=loss), CTX)
    assert dense["ranks"] == values["ranks"]
    assert (values["data_rank"], values["residual_rank"]) == (dense["data_rank"], dense["residual_rank"])
    for part in ("outer", "functional", "loss"):  # the same threshold, from the same sigma_1
        assert values[part]["threshold"] == pytest.approx(dense[part]["threshold"], rel=1e-9)


def test_metric_equals_dense_ranks_on_a_relu_net_with_biases():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 4))
    data = _gaussian_data(12, 6)
    for loss in ("mse", "cross_entropy"):
        values = hessian_rank_hvp(net, data, HessianRankHVPParams(loss=loss, block=16, cross_check_max_params=10_000), CTX)
        dense = hessian_rank(net, data, HessianRankParams(loss=loss), CTX)
        assert values["ranks"] == values["exact_ranks"] == dense["ranks"]
        assert 0 < values["rank_loss"] < values["n_params"]


def test_metric_stops_early_on_a_low_rank_hessian():
    """[32, 64, 64, 2] with MSE on 10 samples: p = 6272, rank H_L = 2q(M_1 + M_2) - 3q^2 + q(r + K) = 524
    (q = 2); the sketches end a block or two past each rank, far below p products."""
    widths = [32, 64, 64, 2]
    net = _linear(widths)
    values = hessian_rank_hvp(net, _gaussian_data(10, 32), HessianRankHVPParams(loss="mse", block=64), CTX)
    pred = linear_fcn_ranks(values["data_rank"], widths, "mse")
    assert values["n_params"] == 6272 and values["data_rank"] == 10
    assert values["ranks"] == [pred.outer, pred.functional, pred.loss] == [20, 508, 524]
    for part, rank in zip(("outer", "functional", "loss"), values["ranks"]):
        info = values[part]
        assert rank + 10 <= info["sketch"] <= rank + 2 * 64 + 10
        assert info["matvecs"] == 2 * info["sketch"] < values["n_params"] // 4
        assert not info["exact"]
        assert all(r < info["threshold"] * 1e-2 for r in info["ritz_below"])
    assert values["matvecs"] == [values[p]["matvecs"] for p in ("outer", "functional", "loss")]
    assert "exact_ranks" not in values


def test_metric_refuses_an_unconverged_sketch_and_reports():
    net = _linear([8, 5, 5, 3])
    data = _gaussian_data(20, 8)
    with pytest.raises(MetricError, match="max_sketch"):
        hessian_rank_hvp(net, data, HessianRankHVPParams(loss="mse", block=8, max_sketch=16), CTX)
    values = hessian_rank_hvp(net, data, HessianRankHVPParams(loss="mse", block=8, cross_check_max_params=100), CTX)
    mdef = METRICS.get("hessian_rank_hvp")
    row = mdef.summarize(values)
    assert row["rank H_L"] == values["rank_loss"] and row["dense agrees"] == "yes"
    headers, rows = mdef.details(values)
    assert headers[-1] == "dense rank" and [r[-1] for r in rows] == values["exact_ranks"]
    assert [r[1] for r in rows] == values["ranks"]


def test_benchmark_pair_agrees_at_the_small_size():
    pair = PAIRS.get("hessian_hvp_vs_dense").make(torch.device("cpu"), "small")
    ours, reference = pair.ours(), pair.reference()
    assert pair.agree(ours, reference) is None
    pred = linear_fcn_ranks(16, [16, 8, 8, 4], "mse")  # r = 16: 20 Gaussian samples in 16 dims
    assert ours == [pred.outer, pred.functional, pred.loss]
    assert pair.agree([1, 2, 3], reference).startswith("ranks [H_o, H_f, H_L] differ")
    with pytest.raises(ValueError, match="known: small, default, large"):
        PAIRS.get("hessian_hvp_vs_dense").make(torch.device("cpu"), "huge")
