"""Numerical rank rules, singular values, stable/effective rank, and the weight_spectrum metric."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from suite.errors import MetricError
from suite.linalg.rank import (
    EPS_FLOAT32,
    EPS_FLOAT64,
    ExplicitRule,
    FengRule,
    NumpyRule,
    effective_rank,
    numerical_rank,
    rank_from_singular_values,
    rank_threshold,
    singular_values,
    stable_rank,
)
from suite.metrics import METRICS, MetricContext
from suite.metrics.weight_spectrum import WeightSpectrumParams, weight_spectrum

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    """An ``n x k`` matrix with orthonormal columns (QR of a Gaussian), float64."""
    q, r = torch.linalg.qr(torch.randn(n, k, dtype=F64, generator=_gen(seed)))
    return q * torch.sign(torch.diagonal(r))


def with_singular_values(m: int, n: int, sigma: list[float], seed: int = 0) -> torch.Tensor:
    """``U diag(sigma) V^T`` with random orthonormal ``U`` (m x p), ``V`` (n x p), ``p = len(sigma) <= min(m, n)``."""
    p = len(sigma)
    u, v = orthonormal(m, p, seed), orthonormal(n, p, seed + 1000)
    return u @ torch.diag(torch.tensor(sigma, dtype=F64)) @ v.T


def thin_product(m: int, k: int, n: int, seed: int = 0) -> torch.Tensor:
    """``A B`` with Gaussian ``A`` (m x k), ``B`` (k x n): rank ``min(k, m, n)`` almost surely."""
    g = _gen(seed)
    return torch.randn(m, k, dtype=F64, generator=g) @ torch.randn(k, n, dtype=F64, generator=g)


# ------------------------------------------------------------------------------------------ known ranks


@pytest.mark.parametrize(("m", "k", "n"), [(20, 3, 30), (30, 7, 20), (16, 16, 16), (12, 40, 9), (25, 1, 25)])
def test_product_of_thin_gaussians_has_rank_min_k_m_n(m, k, n):
    a = thin_product(m, k, n, seed=m + k + n)
    for rule in (FengRule(), NumpyRule(), ExplicitRule(rtol=1e-10)):
        result = numerical_rank(a, rule)
        assert result.rank == min(k, m, n), rule
        assert result.n_singular == min(m, n)


def test_default_rule_is_feng():
    a = with_singular_values(20, 20, [1.0, 0.5, 1e-6, 1e-12])
    # feng: 2**-23 * 20 = 2.4e-6 -> keeps 2; a looser rule keeps 1e-6 too
    result = numerical_rank(a)
    assert result.rank == 2
    assert result.threshold == pytest.approx(2.0**-23 * 20, rel=1e-12)
    assert numerical_rank(a, ExplicitRule(rtol=1e-9)).rank == 3


def test_zero_matrix_has_rank_zero_and_no_gap():
    for rule in (FengRule(), NumpyRule(), ExplicitRule(atol=0.0)):
        result = numerical_rank(torch.zeros(7, 5, dtype=F64), rule)
        assert result.rank == 0
        assert result.gap is None
        assert result.sigma_max == 0.0
        assert result.threshold == 0.0
        assert result.n_singular == 5


def test_full_rank_has_no_gap():
    a = with_singular_values(9, 6, [3.0, 2.0, 1.5, 1.0, 0.7, 0.5])
    result = numerical_rank(a)
    assert result.rank == 6
    assert result.gap is None
    assert result.sigma_max == pytest.approx(3.0, rel=1e-12)


def test_gap_is_ratio_of_last_kept_to_first_dropped():
    a = with_singular_values(10, 8, [4.0, 2.0, 0.5, 1e-9, 1e-10])
    result = numerical_rank(a)
    assert result.rank == 3
    # sigma_4 = 1e-9 is well measured in float64 (absolute error ~ 1e-15)
    assert result.gap == pytest.approx(0.5 / 1e-9, rel=1e-4)


def test_gap_is_inf_when_dropped_value_is_exactly_zero():
    result = rank_from_singular_values(torch.tensor([2.0, 1.0, 0.0], dtype=F64), (3, 3), FengRule())
    assert result.rank == 2
    assert result.gap == math.inf


# ------------------------------------------------------------------ thresholds: just above / just below


def _spectrum_around(threshold: float, top: float = 1.0) -> list[float]:
    """Two values clearly above, one 1% above, one 1% below and one far below ``threshold``: rank 3."""
    return [top, 0.5 * top, 1.01 * threshold, 0.99 * threshold, 0.01 * threshold]


@pytest.mark.parametrize(("m", "n"), [(20, 20), (30, 20), (20, 50)])
def test_feng_threshold_is_eps32_times_min_dim_times_sigma1(m, n):
    top = 3.0
    thr = 2.0**-23 * min(m, n) * top
    a = with_singular_values(m, n, _spectrum_around(thr, top), seed=m * n)
    result = numerical_rank(a, FengRule())
    assert result.threshold == pytest.approx(thr, rel=1e-12)
    assert result.rank == 3
    assert result.gap == pytest.approx(1.01 / 0.99, rel=1e-6)


def test_feng_with_float64_eps_base():
    top, n = 1.0, 12
    thr = EPS_FLOAT64 * n * top
    assert rank_threshold(top, (n, 2 * n), FengRule(eps_base="float64"), torch.float32) == pytest.approx(thr)
    # just above / below a float64-eps threshold cannot be resolved by an SVD; test the rule on exact values
    sigma = torch.tensor(_spectrum_around(thr, top), dtype=F64)
    assert rank_from_singular_values(sigma, (n, 2 * n), FengRule(eps_base="float64")).rank == 3


@pytest.mark.parametrize(("m", "n"), [(20, 20), (30, 20), (20, 50)])
def test_numpy_rule_uses_max_dim_and_explicit_dtype(m, n):
    top = 2.0
    thr = top * max(m, n) * EPS_FLOAT32
    a = with_singular_values(m, n, _spectrum_around(thr, top), seed=m + n)
    result = numerical_rank(a, NumpyRule(dtype="float32"))
    assert result.threshold == pytest.approx(thr, rel=1e-12)
    assert result.rank == 3
    # feng on the same non-square matrix uses min(M, N): different threshold, different count
    if m != n:
        feng = numerical_rank(a, FengRule())
        assert feng.threshold == pytest.approx(2.0**-23 * min(m, n) * top, rel=1e-12)
        assert feng.rank == 4


def test_numpy_rule_takes_eps_from_source_dtype():
    m, n, top = 10, 40, 1.0
    thr32 = top * max(m, n) * EPS_FLOAT32
    sigma = torch.tensor(_spectrum_around(thr32, top), dtype=F64)
    assert rank_from_singular_values(sigma, (m, n), NumpyRule(), torch.float32).rank == 3
    assert rank_from_singular_values(sigma, (m, n), NumpyRule(), torch.float32).threshold == pytest.approx(thr32)
    # with float64 eps the same values are all far above the threshold
    assert rank_from_singular_values(sigma, (m, n), NumpyRule(), torch.float64).rank == 5
    assert rank_from_singular_values(sigma, (m, n), NumpyRule(dtype="float64"), torch.float32).rank == 5


def test_numpy_rule_on_float32_matrix_uses_float32_eps():
    """A rank-3 matrix stored in float32 has rounding noise far above a float64 threshold."""
    a = thin_product(24, 3, 32, seed=5).to(torch.float32)
    assert numerical_rank(a, NumpyRule()).rank == 3  # eps from the matrix: float32
    assert numerical_rank(a, NumpyRule(dtype="float64")).rank == 24  # float32 rounding noise counts
    assert numerical_rank(a, NumpyRule()).threshold == pytest.approx(
        float(singular_values(a)[0]) * 32 * EPS_FLOAT32, rel=1e-12
    )


@pytest.mark.parametrize(
    ("rtol", "atol", "expected_thr"),
    [(1e-3, 0.0, 2e-3), (0.0, 5e-4, 5e-4), (1e-3, 5e-2, 5e-2), (1e-2, 1e-3, 2e-2)],
)
def test_explicit_rule_is_max_of_atol_and_rtol_sigma1(rtol, atol, expected_thr):
    top = 2.0
    a = with_singular_values(15, 12, _spectrum_around(expected_thr, top), seed=7)
    result = numerical_rank(a, ExplicitRule(rtol=rtol, atol=atol))
    assert result.threshold == pytest.approx(expected_thr, rel=1e-12)
    assert result.rank == 3


def test_threshold_is_strict():
    sigma = torch.tensor([1.0, 0.25, 0.25, 0.1], dtype=F64)
    # a value equal to the threshold does not count
    assert rank_from_singular_values(sigma, (4, 4), ExplicitRule(atol=0.25)).rank == 1
    assert rank_from_singular_values(sigma, (4, 4), ExplicitRule(atol=0.2499999)).rank == 3


def test_rank_input_validation():
    with pytest.raises(ValueError, match="2-D"):
        numerical_rank(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="1-D"):
        rank_from_singular_values(torch.zeros(2, 3), (2, 3), FengRule())
    with pytest.raises(ValueError, match=r"\(\.\.\., M, N\)"):
        singular_values(torch.zeros(5))


# ------------------------------------------------------------------------------------ singular values


def test_singular_values_batched_shape_dtype_and_order():
    batch = torch.randn(5, 7, 4, generator=_gen(1))  # float32 input
    sigma = singular_values(batch)
    assert sigma.shape == (5, 4)
    assert sigma.dtype == F64
    assert bool((sigma[:, :-1] >= sigma[:, 1:]).all())
    for i in range(5):
        expected = torch.linalg.svdvals(batch[i].to(F64))
        torch.testing.assert_close(sigma[i], expected)
    deeper = singular_values(torch.randn(2, 3, 6, 9, generator=_gen(2)))
    assert deeper.shape == (2, 3, 6)


def test_singular_values_recovers_planted_spectrum():
    planted = [5.0, 3.0, 1.0, 0.25]
    sigma = singular_values(with_singular_values(11, 9, planted, seed=3))
    assert sigma.shape == (9,)
    torch.testing.assert_close(sigma[:4], torch.tensor(planted, dtype=F64), rtol=1e-12, atol=1e-12)
    assert float(sigma[4:].abs().max()) < 1e-13


# -------------------------------------------------------------------------- stable and effective rank


@pytest.mark.parametrize("k", [1, 2, 5, 17])
def test_k_equal_singular_values_give_stable_and_effective_rank_k(k):
    sigma = torch.cat([torch.full((k,), 3.0, dtype=F64), torch.zeros(4, dtype=F64)])
    assert stable_rank(sigma) == pytest.approx(k, rel=1e-12)
    assert effective_rank(sigma) == pytest.approx(k, rel=1e-12)


def test_stable_and_effective_rank_of_known_spectrum():
    sigma = torch.tensor([2.0, 1.0, 1.0], dtype=F64)
    assert stable_rank(sigma) == pytest.approx((4 + 1 + 1) / 4)
    p = [0.5, 0.25, 0.25]
    assert effective_rank(sigma) == pytest.approx(math.exp(-sum(x * math.log(x) for x in p)))
    # computed from a matrix with that spectrum
    measured = singular_values(with_singular_values(6, 5, [2.0, 1.0, 1.0], seed=9))
    assert stable_rank(measured) == pytest.approx(1.5, rel=1e-10)
    assert effective_rank(measured) == pytest.approx(2 * math.sqrt(2), rel=1e-10)  # exp(1.5 log 2)


def test_stable_and_effective_rank_of_zero_spectrum():
    zeros = torch.zeros(6, dtype=F64)
    assert stable_rank(zeros) == 0.0
    assert effective_rank(zeros) == 0.0


def test_stable_rank_is_scale_invariant_and_at_most_rank():
    sigma = torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=F64)
    assert stable_rank(sigma * 1e6) == pytest.approx(stable_rank(sigma))
    assert effective_rank(sigma * 1e-6) == pytest.approx(effective_rank(sigma))
    assert 1.0 <= stable_rank(sigma) <= 4.0
    assert stable_rank(sigma) < effective_rank(sigma) < 4.0


# --------------------------------------------------------------------------------- weight_spectrum


def _planted_net(conv_rank: int = 3, lin_rank: int = 2) -> nn.Module:
    """Conv2d(3 -> 8, 3x3) of planted rank (as an 8 x 27 matrix) and Linear(10 -> 6) of planted rank."""
    g = _gen(11)
    conv = nn.Conv2d(3, 8, kernel_size=3, bias=True)
    lin = nn.Linear(10, 6, bias=True)
    with torch.no_grad():
        w = torch.randn(8, conv_rank, dtype=F64, generator=g) @ torch.randn(conv_rank, 27, dtype=F64, generator=g)
        conv.weight.copy_(w.reshape(8, 3, 3, 3))
        conv.bias.fill_(100.0)  # biases are ignored
        a, b = torch.randn(6, lin_rank, dtype=F64, generator=g), torch.randn(lin_rank, 10, dtype=F64, generator=g)
        lin.weight.copy_(a @ b)
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), lin)


def _ctx() -> MetricContext:
    return MetricContext(device=torch.device("cpu"), seed=0)


def test_weight_spectrum_on_conv_and_linear_of_planted_rank():
    model = _planted_net(3, 2)
    values = weight_spectrum(model, None, WeightSpectrumParams(), _ctx())
    assert values["layers"] == ["0", "3"]
    assert values["kinds"] == ["conv2d", "linear"]
    assert values["shapes"] == [[8, 27], [6, 10]]
    assert values["ranks"] == [3, 2]
    assert values["full_ranks"] == [8, 6]
    assert values["n_layers"] == 2
    assert values["rule"] == {"rule": "feng", "eps_base": "float32"}
    conv_matrix = model[0].weight.detach().reshape(8, 27)
    expected_sigma = torch.linalg.svdvals(conv_matrix.to(F64))
    assert values["singular_values"][0] == pytest.approx(expected_sigma.tolist(), rel=1e-10, abs=1e-12)
    assert len(values["singular_values"][1]) == 6
    assert values["sigma_max"][0] == pytest.approx(float(expected_sigma[0]), rel=1e-12)
    assert values["thresholds"][0] == pytest.approx(2.0**-23 * 8 * float(expected_sigma[0]), rel=1e-12)
    assert values["gaps"][0] == pytest.approx(float(expected_sigma[2] / expected_sigma[3]), rel=1e-6)
    assert values["stable_ranks"][1] == pytest.approx(stable_rank(torch.tensor(values["singular_values"][1])))
    assert values["effective_ranks"][0] <= 3.0 + 1e-6


def test_weight_spectrum_rules_and_filters():
    model = _planted_net(4, 5)
    numpy_vals = weight_spectrum(model, None, WeightSpectrumParams(tolerance=NumpyRule()), _ctx())
    assert numpy_vals["ranks"] == [4, 5]
    # numpy rule with the weights' float32 eps: sigma_1 * max(M, N) * eps32
    assert numpy_vals["thresholds"][0] == pytest.approx(numpy_vals["sigma_max"][0] * 27 * EPS_FLOAT32, rel=1e-12)
    big_atol = weight_spectrum(model, None, WeightSpectrumParams(tolerance=ExplicitRule(atol=1e9)), _ctx())
    assert big_atol["ranks"] == [0, 0]
    assert big_atol["gaps"] == [None, None]
    convs = weight_spectrum(model, None, WeightSpectrumParams(layer_types=["conv"], keep_singular_values=False), _ctx())
    assert convs["layers"] == ["0"]
    assert "singular_values" not in convs
    by_name = weight_spectrum(model, None, WeightSpectrumParams(layers=["3"]), _ctx())
    assert by_name["layers"] == ["3"]
    assert by_name["ranks"] == [5]
    with pytest.raises(MetricError, match="nomatch"):
        weight_spectrum(model, None, WeightSpectrumParams(layers=["nomatch*"]), _ctx())


def test_weight_spectrum_batches_equal_shapes_correctly():
    """Maps of equal shape are decomposed in one batched call; each must keep its own spectrum."""
    g = _gen(4)
    layers = []
    for k in (1, 3, 6):
        lin = nn.Linear(6, 6, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(6, k, dtype=F64, generator=g) @ torch.randn(k, 6, dtype=F64, generator=g))
        layers.append(lin)
    values = weight_spectrum(nn.Sequential(*layers), None, WeightSpectrumParams(), _ctx())
    assert values["ranks"] == [1, 3, 6]
    assert values["gaps"][2] is None


def test_weight_spectrum_is_registered_and_summarized():
    mdef = METRICS.get("weight_spectrum")
    assert mdef.needs_data is False
    values = weight_spectrum(_planted_net(3, 2), None, WeightSpectrumParams(), _ctx())
    summary = mdef.summarize(values)
    assert summary["maps"] == 2
    assert summary["rank-deficient maps"] == 2
    assert summary["sum rank / sum min(M,N)"] == "5/14"
    headers, rows = mdef.details(values)
    assert headers[0] == "layer" and len(rows) == 2
    assert rows[0][2] == "8 x 27"


def test_scale_sets_the_threshold_of_a_matrix_of_rounding_noise():
    """Singular values at 1e-16 of a reference scale 1.0: rank 0 against the scale, full against themselves."""
    from suite.linalg.rank import NumpyRule, rank_from_singular_values

    sigma = torch.tensor([3e-16, 2e-16, 1e-16], dtype=torch.float64)
    own = rank_from_singular_values(sigma, (3, 3), NumpyRule(), torch.float64)
    scaled = rank_from_singular_values(sigma, (3, 3), NumpyRule(), torch.float64, scale=1.0)
    assert own.rank == 3
    assert scaled.rank == 0 and scaled.threshold == 3 * 2.0**-52 and scaled.sigma_max == 3e-16
    assert rank_from_singular_values(sigma * 1e16, (3, 3), NumpyRule(), torch.float64, scale=1.0).rank == 3
