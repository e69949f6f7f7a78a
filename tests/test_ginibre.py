"""``ginibre_lyapunov``: the Ginibre closed form, the gaussian_chain net, QR exponents and rank vs depth.

Feng et al., NeurIPS 2022, Thm 5 and App. A.7: lambda_k = 0.5 (log 2 + digamma((n - k + 1) / 2)).
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from suite.cli import main
from suite.linalg.rank import ExplicitRule, FengRule
from suite.metrics import METRICS
from suite.metrics.rank_diminishing.ginibre import (
    GinibreLyapunovParams,
    chain_weights,
    ginibre_lyapunov,
    qr_exponents,
    recorded_depths,
)
from suite.metrics.registry import MetricContext
from suite.models import BUILTIN_NETS
from suite.models.gaussian_chain import GaussianChainParams, gaussian_chain
from suite.models.registry import BuildContext
from suite.theory import THEORIES
from suite.theory.ginibre import ginibre_exponents, ginibre_standard_errors

EULER_GAMMA = 0.5772156649015329
CPU = MetricContext(device=torch.device("cpu"), seed=0)


def chain(width: int, depth: int, seed: int = 0, std: float = 1.0) -> nn.Module:
    torch.manual_seed(seed)
    return gaussian_chain(GaussianChainParams(width=width, depth=depth, std=std), BuildContext(seed=seed)).float()


def run(model: nn.Module, **params) -> dict:
    return ginibre_lyapunov(model, None, GinibreLyapunovParams(**params), CPU)


def sequential(*weights: torch.Tensor) -> nn.Module:
    layers = []
    for w in weights:
        layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            layer.weight.copy_(w)
        layers.append(layer)
    return nn.Sequential(*layers).double()


# ------------------------------------------------------------------------------------------- theory


def test_n1_exponent_is_expected_log_abs_gaussian():
    # 0.5 (log 2 + digamma(1/2)) with digamma(1/2) = -gamma - 2 log 2, i.e. E log|g| = -(gamma + log 2) / 2
    expected = 0.5 * (math.log(2) - EULER_GAMMA - 2 * math.log(2))
    assert ginibre_exponents(1) == pytest.approx([expected], abs=1e-12)
    assert expected == pytest.approx(-0.6351814227307391, abs=1e-12)


def test_n2_exponents_closed_form():
    # digamma(1) = -gamma
    assert ginibre_exponents(2) == pytest.approx(
        [0.5 * (math.log(2) - EULER_GAMMA), 0.5 * (-math.log(2) - EULER_GAMMA)], abs=1e-12
    )


@pytest.mark.parametrize("m", [1, 2, 3, 7])
def test_exponent_is_expected_log_chi(m):
    """lambda_k = E log chi_{n-k+1}: the |R_kk| of the QR iteration are chi_{n-k+1} (module doc)."""
    n = 8
    k = n - m + 1
    numeric = stats.chi(m).expect(np.log)
    assert ginibre_exponents(n)[k - 1] == pytest.approx(numeric, abs=1e-7)


def test_exponents_decrease_and_shift_by_log_std():
    base = ginibre_exponents(10)
    assert all(a > b for a, b in zip(base, base[1:]))
    shifted = ginibre_exponents(10, std=3.0)
    assert [s - b for s, b in zip(shifted, base)] == pytest.approx([math.log(3.0)] * 10, abs=1e-12)


def test_standard_error_of_smallest_exponent():
    # Var log chi_1 = trigamma(1/2) / 4 = pi^2 / 8
    assert ginibre_standard_errors(5, 200)[-1] == pytest.approx(math.sqrt(math.pi**2 / 8 / 200), rel=1e-12)


def test_registered_theory_uses_model_std_or_values():
    theory = THEORIES.get("ginibre_lyapunov")
    case = SimpleNamespace(id="c", model=SimpleNamespace(source="builtin", name="gaussian_chain", width=4, std=2.0))
    pred = theory.fn(case, {"n": 4, "depth": 100})
    assert pred.expected == pytest.approx([v + math.log(2.0) for v in ginibre_exponents(4)])
    assert pred.details["std"] == 2.0
    other = SimpleNamespace(id="c", model=SimpleNamespace(source="builtin", name="mlp"))
    assert theory.fn(other, {"n": 3, "std": 0.5}).expected == pytest.approx(ginibre_exponents(3, 0.5))


# ------------------------------------------------------------------------------------------- model


def test_gaussian_chain_is_registered_and_builds_square_bias_free_layers():
    assert "gaussian_chain" in BUILTIN_NETS
    model = chain(6, 5, std=1.0)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 5 and all(m.bias is None and tuple(m.weight.shape) == (6, 6) for m in linears)
    assert model.weight_std == 1.0


def test_gaussian_chain_std_scales_the_same_draws():
    a, b = chain(5, 3, seed=4), chain(5, 3, seed=4, std=2.0)
    for wa, wb in zip(chain_weights(a), chain_weights(b)):
        torch.testing.assert_close(wb, 2.0 * wa)


# ------------------------------------------------------------------------------------------- QR exponents


def test_qr_accumulation_equals_qr_of_explicit_product():
    """P_L = Q_L (R_L ... R_1): L * exponents == log|diag R| of a QR of the explicit product (float64)."""
    g = torch.Generator().manual_seed(1)
    n, depth = 5, 5
    weights = [torch.randn(n, n, generator=g, dtype=torch.float64) for _ in range(depth)]
    product = torch.eye(n, dtype=torch.float64)
    for w in weights:
        product = w @ product
    exps = qr_exponents(weights)
    r = torch.linalg.qr(product).R
    torch.testing.assert_close(exps * depth, torch.log(torch.diagonal(r).abs()), atol=1e-9, rtol=0)
    # sum of exponents = (1/L) log|det P| = (1/L) sum log sigma_k(P), exactly
    sigma = torch.linalg.svdvals(product)
    assert float(exps.sum()) == pytest.approx(float(torch.log(sigma).sum()) / depth, abs=1e-10)
    # leading k-volumes are bounded by the top-k singular values: sum_{j<=k} log|R_jj| <= sum_{j<=k} log sigma_j
    assert all(
        float((exps * depth)[:k].sum()) <= float(torch.log(sigma)[:k].sum()) + 1e-9 for k in range(1, n + 1)
    )


def test_sorted_qr_exponents_approach_log_singular_values_of_the_product():
    """Individual exponents equal (1/L) log sigma_k(P) only up to O(1/L); at n = 4, L = 12 within 0.25."""
    model = chain(4, 12, seed=0)
    values = run(model, keep_spectra=False)
    product = torch.eye(4, dtype=torch.float64)
    for w in chain_weights(model):
        product = w.double() @ product
    log_sigma = torch.log(torch.linalg.svdvals(product)) / 12
    assert np.allclose(values["exponents"], log_sigma.numpy(), atol=0.25)
    assert values["top_exponent_from_norm"] == pytest.approx(float(log_sigma[0]), abs=1e-12)


def test_measured_exponents_match_theory_within_tolerance():
    """n = 8, L = 400: std. error of lambda_8 is 0.056; 0.25 is 4.5 of them."""
    values = run(chain(8, 400, seed=0), record_every=100)
    assert values["n"] == 8 and values["depth"] == 400 and values["std"] == 1.0
    assert values["theory_exponents"] == pytest.approx(ginibre_exponents(8))
    assert values["max_abs_deviation"] < 0.25
    assert values["max_abs_z"] < 4.5
    assert values["exponents"] == sorted(values["exponents"], reverse=True)


def test_std_shift_is_applied_to_theory():
    values = run(chain(4, 300, seed=2, std=3.0), record_every=300)
    assert values["std_source"] == "model.weight_std" and values["std"] == 3.0
    assert values["max_abs_deviation"] < 0.3
    assert values["weight_rms"] == pytest.approx(3.0, rel=0.05)


# ------------------------------------------------------------------------------------------- rank vs depth


def test_recorded_depths():
    assert recorded_depths(10, 4) == [1, 4, 8, 10]
    assert recorded_depths(3, 1) == [1, 2, 3]


def test_rank_of_planted_low_rank_layer():
    """A rank-3 layer in an 8-wide chain caps the rank of every later partial product at 3."""
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(8, 8, generator=g, dtype=torch.float64)
    w2 = torch.randn(8, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 8, generator=g, dtype=torch.float64)
    w3 = torch.randn(8, 8, generator=g, dtype=torch.float64)
    values = run(sequential(w1, w2, w3))
    assert values["depths"] == [1, 2, 3]
    assert values["ranks"] == [8, 3, 3]
    assert all(math.isfinite(v) for v in values["exponents"])


def test_zero_layer_gives_rank_zero_and_serialisable_values():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 4, generator=g, dtype=torch.float64)
    values = run(sequential(w, torch.zeros(4, 4, dtype=torch.float64), w))
    assert values["ranks"] == [4, 0, 0]
    json.dumps(values, allow_nan=False)


def test_rank_collapses_to_one_with_depth():
    """n = 4: lambda_1 - lambda_2 = 0.19, so sigma_2 / sigma_1 < 4 * 1.19e-7 after ~80 layers."""
    values = run(chain(4, 300, seed=0), record_every=50)
    assert values["ranks"][0] == 4 and values["ranks"][-1] == 1
    assert values["theory_ranks"][0] == 4 and values["theory_ranks"][-1] == 1
    json.dumps(values, allow_nan=False)


def test_rank_rule_is_taken_from_params():
    values = run(chain(6, 20, seed=0), tolerance=ExplicitRule(rtol=0.5), record_every=20)
    assert values["rule"]["rule"] == "explicit"
    assert values["ranks"][-1] <= run(chain(6, 20, seed=0), tolerance=FengRule(), record_every=20)["ranks"][-1]


def test_non_square_layers_are_rejected():
    from suite.errors import MetricError

    with pytest.raises(MetricError, match="square"):
        run(sequential(torch.randn(4, 3, dtype=torch.float64)))


def test_hooks_render():
    mdef = METRICS.get("ginibre_lyapunov")
    values = run(chain(5, 40, seed=0), record_every=10)
    summary = mdef.summarize(values)
    assert summary["rank at L"] == values["ranks"][-1]
    headers, rows = mdef.details(values)
    assert len(rows) == 5 and len(rows[0]) == len(headers)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = mdef.plot(values)
    assert [title for title, _ in figures] == ["Lyapunov exponents: measured vs theory", "rank vs depth"]
    for _, fig in figures:
        plt.close(fig)


SPEC = """\
name: ginibretest
reference: "Feng et al. 2022, Thm 5"
tier: ci
defaults: {device: cpu, seed: 0}
models:
  - {id: g, source: builtin, name: gaussian_chain, width: 6, depth: 300}
metrics:
  - id: lyap
    kind: ginibre_lyapunov
    params: {record_every: 30}
    checks:
      - {kind: theory, key: exponents, theory: ginibre_lyapunov, relation: equal, tolerance: {kind: abs, atol: 0.35}}
      - {kind: monotone, key: ranks, direction: non_increasing, slack: 1}
cases:
  explicit: [{model: g, metric: lyap}]
"""


def test_spec_with_theory_check_passes_end_to_end(tmp_path):
    spec = tmp_path / "ginibretest.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    code = main(["run", str(spec), "--no-progress", "--no-report", "--runs-dir", str(tmp_path / "runs"),
                 "--baselines-dir", str(tmp_path / "baselines"), "--reports-dir", str(tmp_path / "reports")])
    assert code == 0


def test_torch_and_numpy_loops_agree():
    """The per-layer loop runs in NumPy on the CPU and in torch elsewhere (e.g. CUDA); both give the same numbers."""
    from suite.metrics.rank_diminishing.ginibre import _walk

    weights = chain_weights(chain(6, 40, seed=3))
    a = _walk(weights, {1, 20, 40}, "cpu", use_numpy=True)
    b = _walk(weights, {1, 20, 40}, "cpu", use_numpy=False)
    torch.testing.assert_close(a[0], b[0], atol=1e-12, rtol=0)
    for pa, pb in zip(a[1], b[1]):
        torch.testing.assert_close(pa, pb, atol=1e-12, rtol=0)
    assert a[2] == pytest.approx(b[2], abs=1e-9) and a[3] == pytest.approx(b[3], rel=1e-12)
