"""``svr_null_fit``: the SVR null models (Meller & Berkouk, Thm 2.1, Thm 4.1, Prop. A.1) against the
adjacency coefficients of random weights (App. B.2), and the limits a spec states for it.

``LIMITS`` are the range limits proposed for specs with about 1e5 coefficients per pair and ``c >= 16``
(see the module docstring of :mod:`suite.metrics.svr.null_fit` for the formulas):

* ``ks_distance`` (vs chi2(Z)): model error ``sup|F_Beta - F_chi2| ~ 0.28/c`` (Z = 1), ``0.17/c`` (Z = 9),
  ``0.15/c`` (Z = 25) plus sampling noise ``~ 2/sqrt(N)``: at most 0.0175 + 0.0063 for c = 16; a wrong
  null model (chi2(1) for a conv, or ``c a`` instead of ``c Z a``) gives 0.2-0.9.
* ``ks_distance_exact``: sampling noise only; ``P(sqrt(N) D > 1.95) ~ 0.001`` for i.i.d. samples.
* tail ratios: binomial noise ``sqrt((1-p)/(pN))`` around the exact law's prediction, which is below 1 at
  finite c (down to 0.81 at 2 sigma and 0.44 at 3 sigma for c = 16-32).
* ``moment4_z``: a z-score; ``mean_ratio``: 1 within a few repeat-to-repeat standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import nn

from suite.cli import main
from suite.metrics import METRICS
from suite.metrics.registry import MetricContext
from suite.metrics.svr.maps import SvrMap
from suite.metrics.svr.null_fit import (
    CHUNK_BYTES,
    SvrNullFitParams,
    batched_neurons,
    draw_weights,
    exact_law,
    ks_distance,
    moment4_exact,
    pair_fit,
    sigma_key,
    svr_null_fit,
)
from suite.metrics.svr.significance import beta_law, fourth_moment_fc
from suite.metrics.svr.spectral import adjacency, adjacency_of, decompose

N_NOISE = 2.0  # sqrt(N) * KS above this has probability ~ 0.0007 for an i.i.d. sample (Kolmogorov law)


def ks_limit(c: int, z: int, n: int) -> float:
    """Model error of the chi2(Z) approximation (measured: 0.28/c, 0.17/c, 0.15/c) plus sampling noise."""
    model = 0.30 / c if z == 1 else 0.18 / c
    return model + N_NOISE / math.sqrt(n)


LIMITS = {  # (min, max) for every entry of the flat per-pair lists, N ~ 1e5, c >= 16
    "ks_distance_exact": (0.0, 0.008),
    "tail_ratio_1sigma": (0.93, 1.06),
    "tail_ratio_2sigma": (0.65, 1.12),
    "tail_ratio_3sigma": (0.15, 1.35),
    "tail_z_1sigma": (-4.5, 4.5),
    "tail_z_2sigma": (-4.5, 4.5),
    "tail_z_3sigma": (-4.5, 4.5),
    "mean_ratio": (0.98, 1.02),
    "moment4_rel_error": (0.0, 0.05),
    "moment4_z": (-4.5, 4.5),
}


def violations(values: dict, limits: dict = LIMITS) -> list[str]:
    out = []
    for key, (lo, hi) in limits.items():
        for i, v in enumerate(values[key]):
            if v is None or not lo <= v <= hi:
                out.append(f"{key}[{i}] = {v}")
    for i, p in enumerate(values["pairs"]):
        if not p["ks_distance"] <= ks_limit(p["c"], p["Z"], p["n"]):
            out.append(f"ks_distance[{i}] = {p['ks_distance']}")
    return out


def mlp(widths: list[int]) -> nn.Module:
    return nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])])


def cnn(c_in: int, channels: list[int], k: int) -> nn.Module:
    layers = []
    for c in channels:
        layers.append(nn.Conv2d(c_in, c, k, bias=False))
        c_in = c
    return nn.Sequential(*layers)


def run(model: nn.Module, seed: int = 0, **params) -> dict:
    return svr_null_fit(model, None, SvrNullFitParams(**params), MetricContext(torch.device("cpu"), seed))


@pytest.fixture(scope="module")
def fc_gauss() -> dict:
    """The released notebook's FC 16 -> 64 -> 32 (c = 64), 200 redraws: N = 102400 coefficients."""
    return run(mlp([16, 64, 32]), repeats=200)


@pytest.fixture(scope="module")
def conv_gauss() -> dict:
    """conv 16 -> 16 -> 16, K = 3 (c = 16, Z = 9), 400 redraws: N = 102400."""
    return run(cnn(16, [16, 16], 3), repeats=400)


# ------------------------------------------------------------------------------------ building blocks


@pytest.mark.parametrize(
    ("shapes", "kinds", "flatten"),
    [
        ([(12, 5, 1), (7, 12, 1)], ["fc", "fc"], "svr"),
        ([(6, 3, 9), (5, 6, 9)], ["conv", "conv"], "svr"),
        ([(6, 3, 9), (5, 6, 9)], ["conv", "conv"], "co_svr"),
        ([(6, 3, 9), (4, 6, 16)], ["conv", "fc"], "co_svr"),  # FC on a 4x4 feature map: Z_u = 9, Z_v = 16
    ],
)
def test_batched_path_equals_decompose_and_adjacency(shapes, kinds, flatten):
    gen = torch.Generator().manual_seed(3)
    ws = [draw_weights(s, 3, "gaussian", gen) for s in shapes]
    u, _ = batched_neurons(ws[0], kinds[0], flatten)
    _, v = batched_neurons(ws[1], kinds[1], flatten)
    a = adjacency_of(u, v, chunk_bytes=1)  # one next-map neuron per chunk
    for r in range(3):
        prev = decompose(SvrMap("a", kinds[0], ws[0][r], shapes[0]), flatten, driver="svd")
        nxt = decompose(SvrMap("b", kinds[1], ws[1][r], shapes[1]), flatten, driver="svd")
        torch.testing.assert_close(a[r], adjacency(prev, nxt), rtol=0, atol=1e-12)


def test_ks_distance_is_scipy_statistic():
    x = torch.from_numpy(stats.chi2(4).rvs(size=777, random_state=1)).sort().values
    for law in (stats.chi2(4), stats.chi2(1)):
        assert ks_distance(x, law.cdf) == pytest.approx(stats.ks_1samp(x.numpy(), law.cdf).statistic, abs=1e-14)


def test_exact_law_and_moment():
    # Z = 1 is the paper's c Beta(1/2, (c-1)/2) and its fourth moment 3/(c^2 + 2c) (Prop. A.1)
    assert exact_law(64, 1, 1).kwds == beta_law(64).kwds and exact_law(64, 1, 1).args == beta_law(64).args
    assert moment4_exact(64, 1, 1) == fourth_moment_fc(64)
    for c, zu, zv in [(16, 1, 9), (64, 25, 1), (7, 1, 1)]:
        z = zu * zv
        law = exact_law(c, zu, zv)
        assert law.mean() == pytest.approx(z)  # E a = 1/c
        assert moment4_exact(c, zu, zv) == pytest.approx(law.moment(2) / (c * z) ** 2, rel=1e-12)
    assert exact_law(16, 9, 16) is None and moment4_exact(16, 9, 16) is None
    # the Beta law by simulation: a = |X^T Y|_F^2, X on S^{c-1}, Y on S^{cZ-1}
    gen = torch.Generator().manual_seed(0)
    c, z, n = 8, 4, 20000
    x = torch.randn(n, c, generator=gen, dtype=torch.float64)
    y = torch.randn(n, c, z, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    y = y / y.flatten(1).norm(dim=1)[:, None, None]
    a = torch.einsum("nk,nkz->nz", x, y).square().sum(1)
    assert ks_distance((a * c * z).sort().values, exact_law(c, 1, z).cdf) < N_NOISE / math.sqrt(n)


def test_sigma_keys_are_dotted_path_safe():
    assert [sigma_key(s) for s in (1, 2.0, 2.5)] == ["tail_ratio_1sigma", "tail_ratio_2sigma", "tail_ratio_2p5sigma"]
    with pytest.raises(ValueError):
        SvrNullFitParams(sigmas=[1.0, 1])
    with pytest.raises(ValueError):
        SvrNullFitParams(sigmas=[0.0])


# ------------------------------------------------------------------------------- the null model holds


def test_gaussian_fc_matches_exact_law(fc_gauss):
    (p,) = fc_gauss["pairs"]
    c, n = 64, 200 * 16 * 32
    assert (p["c"], p["Z"], p["n"], p["shape"]) == (c, 1, n, [32, 16])
    assert p["ks_distance_exact"] < N_NOISE / math.sqrt(n)
    assert p["ks_distance"] < ks_limit(c, 1, n)
    assert abs(p["moment4_z"]) < 4
    assert p["moment4_exact"] == pytest.approx(3 / (c * c + 2 * c))
    assert abs(p["mean_ratio"] - 1) < 4 * p["mean_ratio_se"]
    assert violations(fc_gauss) == []


def test_fc_tail_at_3_sigma_is_lighter_than_chi2(fc_gauss):
    """The Beta tail is lighter than chi2(1): the 3 sigma test fires less often than nominal (ratio < 1)."""
    (p,) = fc_gauss["pairs"]
    tail = p["tail_ratios"][2]
    pnom = stats.norm.sf(3.0)
    q = stats.chi2.isf(pnom, 1)  # 10.27: c times the released code's 3 sigma threshold
    predicted = stats.beta(0.5, (64 - 1) / 2).sf(q / 64) / pnom  # P(<X,Y>^2 > q/c), computed independently
    assert predicted == pytest.approx(tail["exact_ratio"]) and 0.6 < predicted < 0.8
    assert tail["sigma"] == 3.0 and tail["quantile"] == pytest.approx(10.273, abs=1e-3)
    assert tail["ratio"] < 1.0
    assert abs(tail["ratio"] - predicted) < 4 * tail["ratio_se"]
    assert tail["count"] == round(tail["ratio"] * pnom * p["n"])


def test_conv_gaussian_passes_limits(conv_gauss):
    (p,) = conv_gauss["pairs"]
    assert (p["c"], p["Z"], p["Z_u"], p["Z_v"], p["n"]) == (16, 9, 1, 9, 102400)
    assert p["mean_ratio"] == pytest.approx(1.0, abs=1e-12)  # M_prev = c: rows of the adjacency sum to 1
    assert violations(conv_gauss) == []


def test_uniform_weights_behave_like_gaussian(fc_gauss, conv_gauss):
    fc = run(mlp([16, 64, 32]), repeats=200, distribution="uniform")
    conv = run(cnn(16, [16, 16], 3), repeats=400, distribution="uniform")
    assert violations(fc) == [] and violations(conv) == []
    for uni, gauss in ((fc, fc_gauss), (conv, conv_gauss)):
        assert uni["ks_distance"][0] == pytest.approx(gauss["ks_distance"][0], abs=0.004)
        assert uni["tail_ratio_1sigma"][0] == pytest.approx(gauss["tail_ratio_1sigma"][0], abs=0.03)
        assert uni["ks_distance"] != gauss["ks_distance"]


# ---------------------------------------------------------------------------- a wrong null model fails


def test_wrong_null_models_fail_the_limits(conv_gauss):
    """The same coefficients, read with chi2(1) (the FC model) or scaled by c instead of c Z, fail."""
    gen = torch.Generator().manual_seed(0)
    u, _ = batched_neurons(draw_weights((16, 16, 9), 400, "gaussian", gen), "conv", "svr")
    _, v = batched_neurons(draw_weights((16, 16, 9), 400, "gaussian", gen), "conv", "svr")
    a = adjacency_of(u, v, CHUNK_BYTES)  # as the metric
    right = pair_fit(a, 16, 1, 9, [1.0, 2.0, 3.0])
    assert right["ks_distance"] == conv_gauss["pairs"][0]["ks_distance"]  # same draws as the metric
    as_fc = pair_fit(a, 16, 1, 1, [1.0, 2.0, 3.0])  # x = c a against chi2(1)
    assert as_fc["ks_distance"] > 0.2 and as_fc["ks_distance_exact"] > 0.2
    # c a ~ chi2(9)/9 rarely passes the chi2(1) quantiles 1.99 (1 sigma) and 10.27 (3 sigma)
    assert as_fc["tail_ratios"][0]["ratio"] < 0.3 and as_fc["tail_ratios"][2]["ratio"] < 0.01
    c_only = pair_fit(a / 9, 16, 1, 9, [1.0, 2.0, 3.0])  # x = c a (instead of c Z a) against chi2(Z)
    assert c_only["ks_distance"] > 0.8 and c_only["ks_distance_exact"] > 0.8
    for wrong in (as_fc, c_only):
        limits_hit = [
            wrong["ks_distance"] > ks_limit(16, 9, wrong["n"]),
            wrong["ks_distance_exact"] > LIMITS["ks_distance_exact"][1],
            not LIMITS["tail_ratio_1sigma"][0] <= wrong["tail_ratios"][0]["ratio"] <= LIMITS["tail_ratio_1sigma"][1],
            not LIMITS["tail_ratio_3sigma"][0] <= wrong["tail_ratios"][2]["ratio"] <= LIMITS["tail_ratio_3sigma"][1],
            abs(wrong["moment4_z"]) > 4.5,
        ]
        assert all(limits_hit), limits_hit


def test_chi2_fourth_moment_is_detected_for_small_c():
    """3/c^2 (the chi2 model's moment, Prop. A.1 Remark) instead of 3/(c^2 + 2c) is off by 2/c: a large z."""
    values = run(mlp([8, 16, 8]), repeats=2000)
    (p,) = values["pairs"]
    assert abs(p["moment4_z"]) < 4
    assert abs(p["moment4"] - p["moment4_chi2"]) / p["moment4_se"] > 10


# ------------------------------------------------------------------------------ determinism and layout


def test_same_seed_same_values_and_layout():
    model = cnn(4, [8, 8, 8], 3)
    first = run(model, seed=5, repeats=6, sigmas=[1.0, 2.5])
    assert first == run(model, seed=5, repeats=6, sigmas=[1.0, 2.5])
    assert first["ks_distance"] != run(model, seed=6, repeats=6, sigmas=[1.0, 2.5])["ks_distance"]
    keys = {"ks_distance", "ks_distance_exact", "tail_ratio_1sigma", "tail_ratio_2p5sigma", "tail_z_1sigma",
            "tail_z_2p5sigma", "mean_ratio", "moment4_rel_error", "moment4_z", "pairs", "maps", "skipped"}
    assert keys <= set(first)
    assert all(len(first[k]) == 2 for k in keys - {"pairs", "maps", "skipped"})
    curve = first["pairs"][0]["survival"]
    assert len(curve["c_a"]) == 60 and curve["empirical"][0] <= 1.0 and curve["chi2"][0] == 1.0
    assert curve["empirical"] == sorted(curve["empirical"], reverse=True)
    # the weights of the model are never read
    with torch.no_grad():
        for prm in model.parameters():
            prm.mul_(-3.0)
    assert first == run(model, seed=5, repeats=6, sigmas=[1.0, 2.5])


def test_no_exact_law_gives_none():
    """co-SVR conv followed by an FC map on a 4x4 feature map: Z_u = 9, Z_v = 16, no closed form."""
    model = nn.Sequential(nn.Conv2d(3, 6, 3, bias=False), nn.Flatten(), nn.Linear(6 * 16, 5, bias=False))
    values = run(model, repeats=4, flatten="co_svr")
    (p,) = values["pairs"]
    assert (p["c"], p["Z"]) == (6, 144)
    assert values["ks_distance_exact"] == [None] and values["moment4_z"] == [None]
    assert values["tail_z_3sigma"] == [None] and p["survival"]["exact"] is None
    assert values["ks_distance"][0] > 0


def test_summarize_details_plot(fc_gauss, conv_gauss):
    mdef = METRICS.get("svr_null_fit")
    assert not mdef.needs_data
    row = mdef.summarize(fc_gauss)
    assert row["pairs"] == 1 and row["coefficients"] == 102400
    headers, rows = mdef.details(conv_gauss)
    assert headers[:4] == ["pair", "c", "Z", "N"] and rows[0][1:4] == [16, 9, 102400]
    figures = mdef.plot(conv_gauss)
    assert len(figures) == 1
    import io

    buf = io.BytesIO()
    figures[0][1].savefig(buf, format="png", dpi=40)
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_chain_needs_two_maps():
    from suite.errors import MetricError

    with pytest.raises(MetricError, match="at least two"):
        run(nn.Sequential(nn.Linear(4, 3)), repeats=2)


# ------------------------------------------------------------------------------------------ end to end

SPEC = """\
name: nullfit
reference: "Meller & Berkouk App. B.2: SVR null models against random weights"
tier: ci
defaults: {device: cpu, seed: 0}
models:
  - {id: fc, source: builtin, name: mlp, widths: [16, 64, 32], bias: false}
  - {id: conv, source: builtin, name: cnn, in_channels: 16, channels: [16, 16], kernel_sizes: 3, bias: false}
metrics:
  - id: nullfit
    kind: svr_null_fit
    params: {repeats: 100, distribution: gaussian}
    checks:
      - {kind: range, key: ks_distance, max: 0.03, why: "0.3/c + 2/sqrt(N)"}
      - {kind: range, key: ks_distance_exact, max: 0.0125, why: "2/sqrt(N), N >= 25600"}
      - {kind: range, key: tail_ratio_1sigma, min: 0.9, max: 1.1}
      - {kind: range, key: moment4_z, min: -4.5, max: 4.5}
cases:
  matrix: {model: [fc, conv], metric: [nullfit]}
"""


def test_end_to_end_cli(write_spec, tmp_path, capsys):
    spec = write_spec(SPEC)
    dirs = ["--runs-dir", str(tmp_path / "runs"), "--baselines-dir", str(tmp_path / "b")]
    dirs += ["--reports-dir", str(tmp_path / "r")]
    code = main(["run", str(spec), "--run-id", "ok", "--no-progress", *dirs])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "8 pass" in out
    report = (tmp_path / "r" / "nullfit.md").read_text(encoding="utf-8")
    assert "svr_null_fit" in report or "nullfit" in report
    assert list((tmp_path / "r" / "nullfit").glob("*.png"))
    # the same run with a limit below the chi2 model error of c = 64 fails and names the value
    write_spec(SPEC.replace("max: 0.03,", "max: 0.001,"))
    code = main(["run", str(spec), "--run-id", "tight", "--no-progress", "--no-report", *dirs])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "FAIL" in out and "range:ks_distance" in out and "outside [-inf, 0.001]" in out
