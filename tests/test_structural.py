"""``structural_rank_loss`` on ``structural_probe``: PCA dimension and Jacobian rank before/after a component.

Feng et al., NeurIPS 2022, Sec. 4.1 (Thm 3) and Fig. 3. Sizes are small (C = 4, S = 4, D = 64).
"""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from suite.cli import main
from suite.data.registry import Dataset
from suite.errors import MetricError
from suite.linalg.rank import FengRule, numerical_rank
from suite.metrics import METRICS
from suite.metrics.rank_diminishing.structural import (
    StructuralRankLossParams,
    feature_jacobian,
    pca_dimension,
    structural_rank_loss,
)
from suite.metrics.registry import MetricContext
from suite.models import BUILTIN_NETS
from suite.models.registry import BuildContext
from suite.models.structural import COMPONENTS, StructuralProbeParams, structural_probe

C, S = 4, 4
D = C * S * S
CPU = MetricContext(device=torch.device("cpu"), seed=0)


def probe(component: str, seed: int = 0, **kw) -> nn.Module:
    params = StructuralProbeParams(component=component, channels=kw.pop("channels", C), size=kw.pop("size", S), **kw)
    return structural_probe(params, BuildContext(seed=seed)).float().eval()


def gaussian(n: int, seed: int = 0, shape: tuple[int, ...] = (C, S, S)) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    return Dataset(inputs=torch.randn((n, *shape), generator=gen))


def measure(model: nn.Module, n: int = 128, **params) -> dict:
    params.setdefault("pca_spectrum", "singular_values")
    return structural_rank_loss(model, gaussian(n), StructuralRankLossParams(**params), CPU)


def f64(model: nn.Module) -> nn.Module:
    return model.double().requires_grad_(False)


# ------------------------------------------------------------------------------------------- model


def test_probe_is_registered_with_two_exposed_stages():
    assert "structural_probe" in BUILTIN_NETS
    model = probe("conv3x3")
    x = gaussian(3).inputs
    assert isinstance(model.fc, nn.Linear) and model.fc.weight.shape == (D, D) and model.fc.bias is None
    torch.testing.assert_close(model(x), model.component(model.fc(x.flatten(1)).view(-1, C, S, S)))
    assert model.before(x).shape == (3, C, S, S) and model(x).shape == (3, C, S, S)


def test_fc_layer_is_the_same_for_every_component_at_one_seed():
    reference = probe("identity", seed=3).fc.weight
    for component in COMPONENTS:
        torch.testing.assert_close(probe(component, seed=3).fc.weight, reference)
    assert not torch.equal(probe("identity", seed=4).fc.weight, reference)


def test_groupnorm_groups_must_divide_channels():
    with pytest.raises(ValidationError, match="divide"):
        StructuralProbeParams(component="groupnorm", channels=4, size=2, groups=3)


# ------------------------------------------------------------------------------------------- Jacobians


def test_fc_alone_is_full_rank_and_its_jacobian_is_the_weight():
    model = f64(probe("identity"))
    x = gaussian(1).inputs[0].double()
    jac = feature_jacobian(model, x, "before")
    torch.testing.assert_close(jac, model.fc.weight, atol=0, rtol=0)
    assert numerical_rank(jac).rank == D
    values = measure(probe("identity"))
    assert values["jacobian_rank_before"] == [D, D, D] and values["jacobian_rank_after"] == [D, D, D]


def test_relu_jacobian_rank_is_the_number_of_active_units():
    model = probe("relu", seed=1)
    data = gaussian(128)
    values = structural_rank_loss(model, data, StructuralRankLossParams(n_jacobian_inputs=4), CPU)
    with torch.no_grad():
        active = [int((model.fc(data.inputs[i].flatten()) > 0).sum()) for i in range(4)]
    assert values["jacobian_rank_after"] == active
    assert values["predicted_jacobian_rank"] == active
    assert all(0 < a < D for a in active)


def dense_conv3x3(conv: nn.Conv2d) -> torch.Tensor:
    """The ``(C S S) x (C S S)`` matrix of a 3x3, stride-1, zero-padded convolution, by explicit loops."""
    w = conv.weight.detach().double()
    out_c, in_c = w.shape[:2]
    m = torch.zeros(out_c, S, S, in_c, S, S, dtype=torch.float64)
    for o in range(out_c):
        for i in range(in_c):
            for y in range(S):
                for x in range(S):
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            if 0 <= y + dy < S and 0 <= x + dx < S:
                                m[o, y, x, i, y + dy, x + dx] = w[o, i, dy + 1, dx + 1]
    return m.reshape(out_c * S * S, in_c * S * S)


def test_conv3x3_jacobian_matches_dense_float64_reference():
    model = probe("conv3x3", seed=2)
    reference = dense_conv3x3(model.component) @ model.fc.weight.detach().double()
    x = gaussian(1).inputs[0].double()
    jac = feature_jacobian(f64(probe("conv3x3", seed=2)), x, "after")
    torch.testing.assert_close(jac, reference, atol=1e-12, rtol=0)
    values = measure(model, n_jacobian_inputs=1)
    assert values["jacobian_rank_after"] == [numerical_rank(reference, FengRule()).rank]


def test_batchnorm_jacobian_through_sufficient_statistics_matches_direct():
    model = f64(probe("batchnorm", seed=5))
    batch = gaussian(40).inputs.double()
    for i in (0, 17, 39):
        fast = feature_jacobian(model, batch[i], "after", context=batch, index=i)
        direct = feature_jacobian(model, batch[i], "after", context=batch, index=i, direct=True)
        torch.testing.assert_close(fast, direct, atol=1e-13, rtol=0)


@pytest.mark.parametrize("component", COMPONENTS)
def test_no_component_increases_rank(component):
    values = measure(probe(component, seed=0), n=128)
    sequences = [values["rank_sequence"], values["pca_sequence"], *values["jacobian_sequences"]]
    for seq in sequences:
        assert all(b <= a for a, b in zip(seq, seq[1:])), (component, seq)
    assert all(r <= p for r, p in zip(values["jacobian_rank_after"], values["predicted_jacobian_rank"]))
    assert values["pca_dim_after"] <= values["predicted_pca_dim_after"]
    assert values["rank_sequence"][0] == values["input_dim"] == D
    json.dumps(values, allow_nan=False)


@pytest.mark.parametrize(
    ("component", "jacobian", "pca"),
    [
        ("identity", D, D),
        ("batchnorm", D, D),
        ("layernorm", D - 2, D - 1),  # mean and radial directions; entries sum to zero
        ("instancenorm", D - 2 * C, D - C),
        ("groupnorm", D - 2 * 2, D - 2),
    ],
)
def test_structural_losses_are_exact(component, jacobian, pca):
    values = measure(probe(component, seed=0), n=128)
    assert values["jacobian_rank_after"] == [jacobian] * 3 == values["predicted_jacobian_rank"]
    assert values["pca_dim_after"] == pca == values["predicted_pca_dim_after"]
    assert values["jacobian_loss"] == [D - jacobian] * 3 and values["pca_loss"] == D - pca


def test_layernorm_with_eps_keeps_the_radial_direction_in_exact_arithmetic():
    values = measure(probe("layernorm", seed=0, norm_eps=1e-5), n=128)
    assert values["predicted_jacobian_rank"] == [D - 1] * 3
    assert all(r <= D - 1 for r in values["jacobian_rank_after"])


def test_attention_head_dim_bounds_the_rank():
    values = measure(probe("attention", seed=0, head_dim=2), n=128)
    assert values["predicted_jacobian_rank"] == [S * S * 2] * 3
    assert all(r <= S * S * 2 for r in values["jacobian_rank_after"])
    assert values["pca_dim_after"] <= S * S * 2


# ------------------------------------------------------------------------------------------- PCA


def planted_data(spectrum: list[float], n: int = 60, d: int = 3, seed: int = 0) -> torch.Tensor:
    """``n x d`` data whose centred singular values are exactly ``spectrum`` (plus a constant offset)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(n, len(spectrum), generator=gen, dtype=torch.float64)
    u = torch.linalg.qr(u - u.mean(dim=0)).Q
    v = torch.linalg.qr(torch.randn(d, len(spectrum), generator=gen, dtype=torch.float64)).Q
    return u @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ v.T + 5.0


def test_pca_rule_on_singular_values_vs_eigenvalues():
    """s = [1, 1e-3, 1e-6]: singular rule keeps s > 1.19e-7 * 3; eigenvalue rule keeps s^2 > 1.19e-7 * 3."""
    data = planted_data([1.0, 1e-3, 1e-6])
    sing, spec = pca_dimension(data, FengRule(), "singular_values")
    eig, lam = pca_dimension(data, FengRule(), "eigenvalues")
    assert sing.rank == 3 and eig.rank == 2
    torch.testing.assert_close(lam, spec**2)


def test_pca_of_low_dimensional_data_and_zero_padding():
    data = planted_data([3.0, 2.0, 1.0], n=40, d=20)
    assert pca_dimension(data, FengRule(), "singular_values")[0].rank == 3
    res, lam = pca_dimension(data[:5], FengRule(), "eigenvalues")  # B = 5 < D = 20: centred rank <= 4
    assert lam.numel() == 20 and res.rank == 3


# ------------------------------------------------------------------------------------------- metric plumbing


def test_paper_rule_is_coarser_and_reported():
    values = measure(probe("fc", seed=0), n=128, pca_spectrum="eigenvalues")
    singular = measure(probe("fc", seed=0), n=128, pca_spectrum="singular_values")
    assert values["pca_spectrum"] == "eigenvalues"
    assert values["pca_dim_after"] <= singular["pca_dim_after"]


def test_metric_rejects_other_models_and_wrong_sizes():
    with pytest.raises(MetricError, match="structural_probe"):
        structural_rank_loss(nn.Linear(4, 4), gaussian(8, shape=(4,)), StructuralRankLossParams(), CPU)
    with pytest.raises(MetricError, match="C\\*S\\*S"):
        structural_rank_loss(probe("relu"), gaussian(8, shape=(3, 4, 4)), StructuralRankLossParams(), CPU)


def test_hooks_render():
    mdef = METRICS.get("structural_rank_loss")
    assert mdef.needs_data
    values = measure(probe("layernorm"), n=96, n_jacobian_inputs=2)
    assert mdef.summarize(values)["PCA loss"] == 1
    headers, rows = mdef.details(values)
    assert len(rows) == 3 and all(len(r) == len(headers) for r in rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = mdef.plot(values)
    assert len(figures) == 1
    plt.close(figures[0][1])


SPEC = """\
name: structuraltest
reference: "Feng et al. 2022, Fig. 3"
tier: ci
defaults: {device: cpu, seed: 0}
models:
  - {id: ln, source: builtin, name: structural_probe, component: layernorm, channels: 4, size: 4}
  - {id: relu, source: builtin, name: structural_probe, component: relu, channels: 4, size: 4}
datasets:
  - {id: g, kind: gaussian, shape: [4, 4, 4], n: 128}
metrics:
  - id: loss
    kind: structural_rank_loss
    params: {pca_spectrum: singular_values, n_jacobian_inputs: 2}
    checks:
      - {kind: monotone, key: rank_sequence, direction: non_increasing}
      - {kind: monotone, key: pca_sequence, direction: non_increasing}
      - {kind: monotone, key: jacobian_sequences.1, direction: non_increasing}
      - {kind: theory, key: jacobian_rank_after, expected_key: predicted_jacobian_rank, relation: equal}
cases:
  matrix: {model: [ln, relu], dataset: [g], metric: [loss]}
"""


def test_spec_with_monotone_and_theory_checks_passes_end_to_end(tmp_path):
    spec = tmp_path / "structuraltest.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    code = main(["run", str(spec), "--no-progress", "--no-report", "--runs-dir", str(tmp_path / "runs"),
                 "--baselines-dir", str(tmp_path / "baselines"), "--reports-dir", str(tmp_path / "reports")])
    assert code == 0
