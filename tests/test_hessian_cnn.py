"""Deep linear CNNs (builtin ``cnn_fc``) and the Hessian rank bounds of :mod:`suite.theory.hessian_cnn`.

The bounds (Singh et al., ICML 2023, with derived end blocks) are checked against exact float64 Hessians
(:mod:`suite.metrics.hessian.exact`).

Block ranks are ranks of the column blocks ``H_f[:, layer l]`` (rows: all parameters), decided like
``H_f`` in the ``hessian_rank`` metric: numpy's rule with the float64 epsilon on the scale of ``sigma_1(H_L)``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import pytest
import torch
from pydantic import ValidationError

from suite.data import load_dataset
from suite.errors import MetricError
from suite.linalg.rank import NumpyRule, rank_from_singular_values
from suite.metrics import METRICS
from suite.metrics.hessian.exact import exact_hessians
from suite.metrics.hessian.rank import residual_rank
from suite.metrics.registry import MetricContext
from suite.models import build_model
from suite.models.cnn_fc import CnnFcParams, cnn_fc
from suite.models.registry import BuildContext
from suite.spec import expand_cases
from suite.spec.loader import load_spec_text
from suite.theory import THEORIES
from suite.theory.hessian_cnn import conv_geometry, conv_output_size, linear_cnn_bounds, outer_rank_is_exact, per_layer

pytestmark = pytest.mark.usefixtures("one_thread_module")


def _rank(matrix: torch.Tensor, scale: float | None = None) -> int:
    sigma = torch.linalg.svdvals(matrix)
    return rank_from_singular_values(sigma, tuple(matrix.shape), NumpyRule(), torch.float64, scale=scale).rank


@dataclass
class Measured:
    """Measured ranks: ``p``, data rank ``r``, residual rank ``s``, the three Hessians and the H_f blocks."""

    p: int
    r: int
    s: int
    outer: int
    functional: int
    loss: int
    blocks: list[int]


def _measure(cfg: dict, n: int, loss: str, seed: int = 0, data_rank: int | None = None) -> tuple[Measured, object]:
    """Exact float64 ranks of a random linear ``cnn_fc``, and :func:`linear_cnn_bounds` for its ``r`` and ``s``.

    Gaussian data, in a random ``data_rank``-dimensional subspace when given.
    """
    params = CnnFcParams(**cfg)
    torch.manual_seed(seed)
    net = cnn_fc(params, BuildContext(seed)).double()
    gen = torch.Generator().manual_seed(seed + 1000)
    shape = (n, params.in_channels, *params.input_size)
    x = torch.randn(shape, dtype=torch.float64, generator=gen)
    if data_rank is not None:  # n samples in a random data_rank-dimensional subspace
        coeffs = torch.randn(n, data_rank, dtype=torch.float64, generator=gen)
        basis = torch.randn(data_rank, x[0].numel(), dtype=torch.float64, generator=gen)
        x = (coeffs @ basis).reshape(shape)
    k = params.num_outputs
    if loss == "mse":
        y = torch.randn(n, k, dtype=torch.float64, generator=gen)
    else:
        y = torch.randint(0, k, (n,), generator=gen)
    parts = exact_hessians(net, x, y, loss)
    scale = float(torch.linalg.svdvals(parts.loss)[0])
    sizes = [p.numel() for p in net.parameters()]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    blocks = [_rank(parts.functional[:, a : a + b], scale) for a, b in zip(starts, sizes)]
    r = _rank(x.reshape(n, -1))
    s = residual_rank(net, x, y, loss)
    ranks = (_rank(parts.outer), _rank(parts.functional, scale), _rank(parts.loss))
    measured = Measured(parts.n_params, r, s, *ranks, blocks)
    n_conv = len(params.channels)
    kernels, strides, paddings = (per_layer(v, n_conv) for v in (params.kernel_sizes, params.strides, params.paddings))
    bounds = linear_cnn_bounds(
        list(params.input_size), params.in_channels, list(params.channels), kernels, strides, paddings, k, r, s, loss
    )
    return measured, bounds


def _cfg(input_size: list[int], channels: list[int], kernels: list[int] | int, k: int, **extra) -> dict:
    """Build a ``cnn_fc`` config: ``dims`` from ``input_size``, padding 0 and stride 1 unless ``extra`` says."""
    return {"dims": len(input_size), "input_size": input_size, "channels": channels, "kernel_sizes": kernels,
            "num_outputs": k, "paddings": 0, **extra}


# --- model -----------------------------------------------------------------------------------------------


def test_cnn_fc_shapes_and_parameter_count_1d():
    """d_1 = floor((10 + 2 - 3) / 2) + 1 = 5, d_2 = 5 - 2 + 1 = 4; p = 2*1*3 + 3*2*2 + K*3*4 = 6 + 12 + 24."""
    params = CnnFcParams(
        dims=1, input_size=[10], channels=[2, 3], kernel_sizes=[3, 2], strides=[2, 1], paddings=[1, 0], num_outputs=2
    )
    net = cnn_fc(params, BuildContext(0))
    assert net(torch.randn(7, 1, 10)).shape == (7, 2)
    assert [tuple(p.shape) for p in net.parameters()] == [(2, 1, 3), (3, 2, 2), (2, 12)]
    assert sum(p.numel() for p in net.parameters()) == 42
    geo = params.geometry()
    assert geo.sizes == [10, 5, 4] and geo.channels == [1, 2, 3] and geo.taps == [3, 2] and geo.features == 12
    assert geo.conv_params == [6, 12]


def test_cnn_fc_shapes_2d_with_bias_and_activation():
    """H, W = 5, 6 -> floor((5 + 2 - 3) / 2) + 1 = 3, floor((6 + 2 - 3) / 2) + 1 = 3: d_1 = 9, k_1 = 9 taps."""
    params = CnnFcParams(
        dims=2, in_channels=3, input_size=[5, 6], channels=[2], kernel_sizes=3, strides=2, paddings=1,
        num_outputs=4, bias=True, activation="tanh",
    )
    net = cnn_fc(params, BuildContext(0))
    assert net(torch.randn(2, 3, 5, 6)).shape == (2, 4)
    assert sum(p.numel() for p in net.parameters()) == 2 * 3 * 9 + 2 + 4 * 18 + 4
    assert isinstance(net[1], torch.nn.Tanh) and isinstance(net[2], torch.nn.Flatten)
    assert params.geometry().shapes == [[5, 6], [3, 3]]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"input_size": [4], "kernel_sizes": 5},
            "conv layer 1 (kernel 5, stride 1, padding 0) maps spatial size [4] to [0]",
        ),
        (
            {"input_size": [8], "channels": [2, 2, 2], "kernel_sizes": 3, "strides": 2},
            "conv layer 3 (kernel 3, stride 2, padding 0) maps spatial size [1] to [0]",
        ),
        ({"input_size": [8, 8]}, "input_size needs 1 entry for dims 1"),
        ({"input_size": [8], "kernel_sizes": [3]}, "kernel_sizes needs one entry per conv layer (2) or a single int"),
        ({"input_size": [8], "strides": 0}, "strides entries must be >= 1"),
        ({"input_size": [8], "paddings": [-1, 0]}, "paddings entries must be >= 0"),
    ],
)
def test_cnn_fc_rejects_bad_geometry_with_the_layer_named(fields, message):
    """Validation at the boundary: the message names the layer and the sizes."""
    base = {"dims": 1, "channels": [2, 2], "num_outputs": 3}
    with pytest.raises(ValidationError, match=re.escape(message)):
        CnnFcParams(**{**base, **fields})


def test_spec_error_for_an_empty_layer_points_at_the_model():
    """The pydantic error reaches the spec loader as file:line with the layer named."""
    text = """\
name: t
reference: "test"
tier: smoke
models:
  - {id: bad, source: builtin, name: cnn_fc, input_size: [4], channels: [2], kernel_sizes: 5, num_outputs: 2}
datasets:
  - {id: g, kind: gaussian, shape: [1, 4], n: 4}
metrics:
  - {id: h, kind: hessian_rank, checks: [{kind: baseline, key: ranks}]}
cases:
  matrix: {model: [bad], dataset: [g], metric: [h]}
"""
    with pytest.raises(Exception) as info:
        load_spec_text(text, "t.yaml")
    assert "t.yaml:5" in str(info.value) and "conv layer 1" in str(info.value)


# --- spatial arithmetic and the closed forms ----------------------------------------------------------------


def test_conv_output_size_and_effective_positions():
    """``floor((d + 2 pad - k) / stride) + 1``; live-and-used positions worked out by hand."""
    assert [conv_output_size(16, 3, 1, 1), conv_output_size(16, 3, 2, 1), conv_output_size(8, 3, 2, 0)] == [16, 8, 3]
    # kernel 1 stride 2 reads inputs 0, 2, 4, 6, 8 only
    assert conv_geometry([10], 1, [2], [1], [2], [0]).effective == [5, 5]
    # kernel 3 stride 2 on 8: windows 0-2, 2-4, 4-6; input 7 never read
    assert conv_geometry([8], 1, [2], [3], [2], [0]).effective == [7, 3]
    # padding 3 with kernel 2 on 4 positions: 9 outputs, those whose window is all padding are dead
    geo = conv_geometry([4], 1, [1], [2], [1], [3])
    assert geo.sizes == [4, 9] and geo.effective == [4, 5]
    # 2-D: products of the per-axis counts (8 -> 7 used rows, 6 -> 5 used columns)
    geo = conv_geometry([8, 6], 1, [2], [3], [2], [0])
    assert geo.sizes == [48, 6] and geo.effective == [35, 6] and geo.taps == [9]


def test_bounds_by_hand_stride1_mse():
    """1-D d_0 = 8, m = [1, 2, 2], k = 3, same padding, K = 3, r = 8, s = 3 (module doc of hessian_cnn).

    M = [16, 16]; q_o = min(8, 16, 16, 3) = 3; H_o: q_o (r + K - q_o) = 24, per-layer Jacobian caps
    min(6, 3*8) + min(12, 3*8) + min(48, 3*8) = 42, p = 6 + 12 + 48 = 66 -> 24. q_f = 3; blocks:
    l=1 min(9 + 48 - 9, 6, 60) = 6; l=2 min(48 + 48 - 9, 12, 54) = 12; head min(48 + 9 - 9, 48, 18) = 18.
    """
    b = linear_cnn_bounds([8], 1, [2, 2], [3, 3], [1, 1], [1, 1], 3, 8, 3, "mse")
    assert (b.q_o, b.q_f, b.p, b.widths) == (3, 3, 66, [16, 16])
    assert b.outer == 24 and b.outer_paper == 24
    assert b.blocks == [6, 12, 18] and b.blocks_paper == [6, 12, 48]
    assert (b.functional, b.loss) == (36, 60)


def test_bounds_by_hand_cross_entropy_bottleneck_and_low_rank_data():
    """1-D d_0 = 12, m = [1, 1, 3], k = 3, no padding, K = 5 (K' = 4), r = 6 < d_0, s = 4.

    d = [12, 10, 8]; M = [10, 24]; q_o = min(6, 10, 24, 4) = 4; H_o: 4 (6 + 4 - 4) = 24 (the slides' form
    with d_0: 4 (12 + 4 - 4) = 48); Jacobian caps min(3, 4*6) + min(9, 4*6) + min(120, 4*6) = 36;
    p = 3 + 9 + 120 = 132. q_f = 4; blocks l=1 min(16 + 40 - 16, 3, 129) = 3, l=2 min(40 + 96 - 16, 9, 123) = 9,
    head min(96 + 16 - 16, 120, 12) = 12.
    """
    b = linear_cnn_bounds([12], 1, [1, 3], [3, 3], [1, 1], [0, 0], 5, 6, 4, "cross_entropy")
    assert (b.k_eff, b.q_o, b.q_f, b.p, b.geometry.sizes, b.widths) == (4, 4, 4, 132, [12, 10, 8], [10, 24])
    assert (b.outer, b.outer_paper) == (24, 48)
    assert b.blocks == [3, 9, 12] and (b.functional, b.loss) == (24, 48)


def test_data_rank_below_the_bottleneck_sets_q_o():
    """``r = 2`` below every ``M_l`` and ``K``: ``q_o = 2``, ``H_o <= 2 (2 + K - 2) = 2K``; the d_0 form: ``K d_0``."""
    b = linear_cnn_bounds([6, 6], 1, [2, 2], [3, 3], [1, 1], [1, 1], 3, 2, 2, "mse")
    assert (b.q_o, b.outer, b.outer_paper) == (2, 6, 108)


# --- bounds against exact Hessians --------------------------------------------------------------------------


def _random_configs(count: int, seed: int) -> list[tuple[dict, int, str, int | None]]:
    rng = random.Random(seed)
    out: list[tuple[dict, int, str, int | None]] = []
    while len(out) < count:
        dims = rng.choice([1, 1, 2])
        n_conv = rng.choice([1, 2, 2, 3])
        k = rng.choice([1, 2, 3, 5])
        loss = rng.choice(["mse", "cross_entropy"])
        cfg = {
            "dims": dims,
            "in_channels": rng.choice([1, 1, 2]),
            "input_size": [rng.choice([4, 6, 8, 10])] if dims == 1 else [rng.choice([3, 4, 5])] * 2,
            "channels": [rng.choice([1, 2, 3, 4]) for _ in range(n_conv)],
            "kernel_sizes": [rng.choice([1, 2, 3]) for _ in range(n_conv)],
            "strides": [rng.choice([1, 1, 2]) for _ in range(n_conv)],
            "paddings": [rng.choice([0, 0, 1]) for _ in range(n_conv)],
            "num_outputs": max(k, 2) if loss == "cross_entropy" else k,
        }
        try:
            params = CnnFcParams(**cfg)
        except ValidationError:
            continue
        geo = params.geometry()
        p = sum(geo.conv_params) + cfg["num_outputs"] * geo.features
        if p > 300:
            continue
        d0 = params.in_channels * geo.sizes[0]
        n = rng.choice([max(1, d0 // 2), d0 + 3, 2 * d0])
        out.append((cfg, n, loss, rng.choice([None, None, max(1, d0 // 3)])))
    return out


GRID = _random_configs(40, seed=2023)


def test_every_bound_holds_on_random_linear_cnns_and_the_end_blocks_are_attained():
    """No measured rank exceeds its bound on 40 random linear CNNs; the H_o and end-block bounds are attained.

    1-D and 2-D nets with strides 1-2, paddings 0-1, m 1-4, k 1-3, MSE and cross-entropy, n above and
    below d_0, full-rank and rank-deficient data. The first-layer and head blocks are also attained where
    their formula is below both caps (``p_l`` and ``p - p_l``).
    """
    attained = {"outer": 0, "first": 0, "head": 0, "first_by_formula": 0, "head_by_formula": 0}
    for i, (cfg, n, loss, data_rank) in enumerate(GRID):  # 40 nets: about 2 s on one core
        m, b = _measure(cfg, n, loss, seed=i, data_rank=data_rank)
        where = f"net {i}: {cfg}, n={n}, {loss}, data rank {data_rank}"
        assert m.p == b.p, where
        assert m.outer <= b.outer <= b.outer_paper, where
        assert m.functional <= b.functional and m.loss <= b.loss, where
        assert all(x <= y for x, y in zip(m.blocks, b.blocks)), f"{where}: blocks {m.blocks} > {b.blocks}"
        attained["outer"] += m.outer == b.outer
        attained["first"] += m.blocks[0] == b.blocks[0]
        attained["head"] += m.blocks[-1] == b.blocks[-1]
        sides, q = [b.s, *b.widths, b.s], b.q_f
        params = [*b.geometry.conv_params, cfg["num_outputs"] * b.geometry.features]
        for key, j in (("first_by_formula", 0), ("head_by_formula", len(params) - 1)):
            formula = q * sides[j] + q * sides[j + 1] - q * q
            if formula < min(params[j], b.p - params[j]) and m.blocks[j] == formula:
                attained[key] += 1
    assert attained["outer"] >= 25 and attained["first"] >= 30 and attained["head"] >= 15, attained
    assert attained["first_by_formula"] >= 1 and attained["head_by_formula"] >= 1, attained


@pytest.mark.parametrize(
    ("cfg", "n", "loss", "data_rank", "expected_first", "expected_head"),
    [
        # m_0 = 2, m = [1, 3], k = [3, 1], strides [1, 2]: d = [4, 2, 1]; conv 2 reads position 0 of layer 1
        # only, which reads inputs 0-2: c = [3, 1, 1], M = [1, 3]; r = 8, s = 3, q_o = q_f = 1:
        # first block 1*3 + 1*1 - 1 = 3 < min(p_1 = 6, p - p_1 = 12); head 1*3 + 1*3 - 1 = 5 < min(9, 9)
        (_cfg([4], [1, 3], [3, 1], 3, in_channels=2, strides=[1, 2]),
         16, "mse", None, 3, 5),
        # m = [3], k = 3, stride 2 on 4 (d_1 = 1, M_1 = 3, input 3 unread: r_c = 3), CE K = 3 (s = 2): q_f = 2;
        # first 2*2 + 2*3 - 4 = 6 < min(9, 9); head 2*3 + 2*2 - 4 = 6 < min(9, 9): both attained by the formula
        (_cfg([4], [3], 3, 3, strides=2),
         8, "cross_entropy", None, 6, 6),
    ],
)
def test_derived_end_block_bounds_are_attained(cfg, n, loss, data_rank, expected_first, expected_head):
    m, b = _measure(cfg, n, loss, data_rank=data_rank)
    assert (b.blocks[0], b.blocks[-1]) == (expected_first, expected_head)
    assert (m.blocks[0], m.blocks[-1]) == (expected_first, expected_head)


@pytest.mark.parametrize(
    ("cfg", "n", "loss", "data_rank"),
    [
        (_cfg([8], [2, 2], 3, 3, paddings=1), 20, "mse", None),
        (_cfg([8], [2, 3], [3, 5], 4, paddings=[1, 2]), 5, "mse", None),
        (_cfg([6], [2, 4], [1, 3], 3, in_channels=2, paddings=[0, 2]), 20, "cross_entropy", 4),
        (_cfg([4, 4], [1, 2], 3, 4, paddings=1), 30, "cross_entropy", None),
        (_cfg([3, 3], [2], 2, 2, paddings=1), 6, "mse", None),
    ],
)
def test_outer_bound_is_an_equality_for_stride1_non_shrinking_widening_nets(cfg, n, loss, data_rank):
    """``rank(H_o) = K' r = q_o (r + K' - q_o)`` (module doc, "Equality"), also for n < d_0 and rank-deficient data."""
    params = CnnFcParams(**cfg)
    n_conv = len(params.channels)
    kernels, strides, paddings = (per_layer(v, n_conv) for v in (params.kernel_sizes, params.strides, params.paddings))
    assert outer_rank_is_exact(strides, kernels, paddings, [params.in_channels, *params.channels])
    m, b = _measure(cfg, n, loss, data_rank=data_rank)
    assert m.outer == b.outer == b.k_eff * m.r


def test_exact_class_excludes_stride_shrinking_and_narrowing():
    assert outer_rank_is_exact([1, 1], [3, 3], [1, 1], [1, 2, 2])
    assert not outer_rank_is_exact([2, 1], [3, 3], [1, 1], [1, 2, 2])
    assert not outer_rank_is_exact([1, 1], [3, 3], [0, 1], [1, 2, 2])
    assert not outer_rank_is_exact([1, 1], [3, 3], [1, 1], [1, 4, 1])


# --- metric values and the registered theories --------------------------------------------------------------

_SPEC = """\
name: t
reference: "test"
tier: smoke
defaults: {{device: cpu, seed: 0, dtype: float32}}
models:
  - {{id: net, source: builtin, name: cnn_fc, {model}}}
  - {{id: mlp, source: builtin, name: mlp, widths: [8, 4, 3], activation: identity, bias: false}}
datasets:
  - {{id: g, kind: gaussian, shape: {shape}, n: {n}}}
metrics:
  - id: h
    kind: hessian_rank
    params: {{loss: {loss}, labels: random}}
    checks:
      - {{kind: theory, key: ranks, theory: linear_cnn_hessian_bounds, relation: bound}}
cases:
  matrix: {{model: [net, mlp], dataset: [g], metric: [h]}}
"""


def _case_values(model: str, shape: str, n: int, loss: str, case_index: int = 0):
    spec = load_spec_text(_SPEC.format(model=model, shape=shape, n=n, loss=loss), "t.yaml").spec
    case = expand_cases(spec)[case_index]
    net = build_model(case.model, BuildContext(seed=case.seed, dtype=case.dtype))
    data = load_dataset(case.dataset, case.seed)
    ctx = MetricContext(torch.device("cpu"), case.seed)
    values = METRICS.get("hessian_rank").fn(net, data, case.metric.params, ctx)
    return case, values


def test_metric_reports_residual_rank_and_the_theory_bounds_hold():
    """MSE with Gaussian targets (K = 3 < r = 8): s = rank(delta^T X) = 3; CE with K = 3: s = K - 1 = 2."""
    model = "dims: 1, input_size: [8], channels: [2, 2], kernel_sizes: 3, paddings: 1, num_outputs: 3"
    for loss, s in (("mse", 3), ("cross_entropy", 2)):
        case, values = _case_values(model, "[1, 8]", 12, loss)
        assert values["residual_rank"] == s and values["data_rank"] == 8
        pred = THEORIES.get("linear_cnn_hessian_bounds").fn(case, values)
        assert all(m <= b for m, b in zip(values["ranks"], pred.expected))
        assert pred.details["s"] == s and pred.details["d_l"] == [8, 8, 8] and pred.details["m_l"] == [1, 2, 2]
        exact = THEORIES.get("linear_cnn_outer_rank").fn(case, values)
        assert values["rank_outer"] == exact.expected == (3 if loss == "mse" else 2) * 8


def test_residual_rank_is_zero_at_zero_residual():
    torch.manual_seed(0)
    net = cnn_fc(CnnFcParams(input_size=[6], channels=[2], num_outputs=2), BuildContext(0)).double()
    x = torch.randn(5, 1, 6, dtype=torch.float64)
    assert residual_rank(net, x, net(x).detach(), "mse") == 0


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("dims: 1, input_size: [8], channels: [2], num_outputs: 3, activation: relu", "activation relu"),
        ("dims: 1, input_size: [8], channels: [2], num_outputs: 3, bias: true", "activation identity, bias True"),
    ],
)
def test_theories_refuse_nonlinear_or_biased_nets(model, why):
    case, values = _case_values(model, "[1, 8]", 6, "mse")
    for name in ("linear_cnn_hessian_bounds", "linear_cnn_outer_rank"):
        with pytest.raises(MetricError, match=f"needs a builtin cnn_fc with activation identity and bias false.*{why}"):
            THEORIES.get(name).fn(case, values)


def test_theories_refuse_other_models_and_outer_rank_refuses_strides():
    model = "dims: 1, input_size: [8], channels: [2], strides: 2, num_outputs: 3"
    spec = load_spec_text(_SPEC.format(model=model, shape="[1, 8]", n=6, loss="mse"), "t.yaml").spec
    mlp_case = expand_cases(spec)[1]
    with pytest.raises(MetricError, match="case mlp/g/h has builtin model mlp"):
        THEORIES.get("linear_cnn_hessian_bounds").fn(mlp_case, {"data_rank": 6, "residual_rank": 3, "n_params": 44})
    case, values = _case_values(model, "[1, 8]", 6, "mse")
    THEORIES.get("linear_cnn_hessian_bounds").fn(case, values)  # the bound applies
    with pytest.raises(MetricError, match="holds only for stride 1"):
        THEORIES.get("linear_cnn_outer_rank").fn(case, values)
