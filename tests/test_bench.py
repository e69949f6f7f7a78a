"""The performance harness: ours-vs-reference pairs, timing verdicts, benchmark wiring."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from suite.bench import PAIRS, Pair, register_pair, run_pair, time_callable
from suite.bench.weight_spectrum import numpy_reference_ranks
from suite.compare.engine import timing_verdict
from suite.linalg.rank import FengRule
from suite.metrics.registry import MetricContext
from suite.metrics.weight_spectrum import WeightSpectrumParams, weight_spectrum
from suite.spec.schema import TimingPolicy

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def test_time_callable_counts_rounds_and_takes_the_median():
    calls = []
    timing = time_callable(lambda: calls.append(1), CPU, rounds=4, warmup=2)
    assert len(calls) == 6
    assert len(timing.times_s) == 4
    assert timing.median_s == sorted(timing.times_s)[1] / 2 + sorted(timing.times_s)[2] / 2


def test_pair_that_disagrees_is_refused_before_timing():
    @register_pair(target=2.0, description="test pair, deliberately wrong", name="_test_disagreeing_pair")
    def _make(device, size):
        return Pair(lambda: [1, 2], lambda: [1, 3], lambda a, b: None if a == b else f"{a} != {b}", "tiny")

    with pytest.raises(AssertionError, match=r"disagree: \[1, 2\] != \[1, 3\]"):
        run_pair("_test_disagreeing_pair", CPU)


def test_weight_spectrum_pair_agrees_with_the_numpy_reference_and_reports_a_ratio():
    result = run_pair("weight_spectrum_vs_numpy", CPU, "mlp50", rounds=2)
    assert result.size == "MLP, 50 maps of 64 x 64"
    assert result.speedup == pytest.approx(result.reference.median_s / result.ours.median_s)
    assert len(result.ours.times_s) == len(result.reference.times_s) == 2


def test_numpy_reference_matches_ours_on_a_planted_rank_net():
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(30, 20, bias=False), torch.nn.Linear(20, 10, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(20, 4) @ torch.randn(4, 30))
    ours = weight_spectrum(net, None, WeightSpectrumParams(tolerance=FengRule()), MetricContext(CPU, 0))["ranks"]
    assert ours == numpy_reference_ranks(net) == [4, 10]


@pytest.mark.parametrize(
    ("time_s", "baseline_s", "policy", "status"),
    [
        (0.30, 0.10, TimingPolicy(), "warn"),  # 3x slower: warning by default
        (0.30, 0.10, TimingPolicy(fail=True), "fail"),  # the spec asks for failure
        (0.14, 0.10, TimingPolicy(), None),  # 1.4x is within the default 1.5x
        (0.02, 0.001, TimingPolicy(), None),  # under min_seconds: timer noise, never flagged
        (0.30, None, TimingPolicy(), None),  # no baseline timing
    ],
)
def test_timing_verdict(time_s, baseline_s, policy, status, tmp_path):
    from suite.spec import expand_cases, load_spec

    spec = tmp_path / "t.yaml"
    spec.write_text(
        "name: t\nreference: r\ntier: smoke\nmodels: [{id: m, source: builtin, name: mlp, widths: [4, 3]}]\n"
        "metrics: [{id: s, kind: weight_spectrum}]\ncases: {matrix: {model: [m], metric: [s]}}\n"
    )
    case = expand_cases(load_spec(spec).spec)[0]
    verdict = timing_verdict(case, time_s, baseline_s, policy, "cpu")
    if status is None:
        assert verdict is None
    else:
        assert verdict.status == status
        assert verdict.details["ratio"] == pytest.approx(time_s / baseline_s, rel=1e-3)
        assert "3.00x slower" in verdict.reason


def test_report_shows_a_timing_warning_when_the_baseline_timing_is_lowered(tmp_path):
    import yaml

    from suite.cli import main

    spec = tmp_path / "slow.yaml"
    spec.write_text(
        "name: slow\nreference: r\ntier: smoke\ntiming: {min_seconds: 0.0}\n"
        "models: [{id: big, source: builtin, name: mlp, widths: [300, 300, 300]}]\n"
        "metrics: [{id: s, kind: weight_spectrum, checks: [{kind: baseline, key: ranks}]}]\n"
        "cases: {matrix: {model: [big], metric: [s]}}\n"
    )
    dirs = ["--runs-dir", str(tmp_path / "runs"), "--baselines-dir", str(tmp_path / "bl"), "--reports-dir", str(tmp_path / "rep")]
    assert main(["run", str(spec), *dirs, "--no-progress"]) == 4  # no baseline yet
    assert main(["baseline", "update", "latest", *dirs[:4]]) == 0
    path = tmp_path / "bl" / "slow.yaml"
    data = yaml.safe_load(path.read_text())
    data["cases"]["big/none/s"]["timing"]["cpu"] /= 100  # pretend it used to be 100x faster
    path.write_text(yaml.safe_dump(data))
    # --cache never: a fresh timing is needed (results reused from the cache are not timed again)
    assert main(["run", str(spec), *dirs, "--no-progress", "--cache", "never"]) == 0  # a warning does not fail
    report = (tmp_path / "rep" / "slow.md").read_text()
    assert "## Warnings" in report
    assert re.search(r"\|\s*`big/none/s`\s*\|\s*timing\s*\|\s*⚠️ warn\s*\|", report)
    assert "slower than the baseline timing on cpu" in report


def test_asv_config_points_at_the_benchmarks_and_uses_spawn():
    text = (ROOT / "asv.conf.json").read_text()
    config = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.M))
    assert config["environment_type"] == "existing"
    assert config["launch_method"] == "spawn"
    assert (ROOT / config["benchmark_dir"] / "bench_weight_spectrum.py").is_file()


def test_every_registered_pair_is_listed():
    assert "weight_spectrum_vs_numpy" in PAIRS.names()


def test_reverse_mode_reference_equals_forward_mode_jacobians():
    """The released code's reverse-mode Jacobian (the benchmark's reference) is the same matrix as ours."""
    from suite.bench.rank_diminishing import reverse_mode_jacobians
    from suite.metrics.rank_diminishing.partial_jacobian import _patch_embedding, forward_jacobians, patch_slices

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)
    ).double().eval()
    image = torch.randn(3, 6, 6, dtype=torch.float64)
    rows, cols = patch_slices((6, 6), [2, 2], "center")
    embed, primal = _patch_embedding(image, rows, cols, [0, 1, 2], "image")
    names = ["0", "1", "3"]
    ours = forward_jacobians(net, embed, primal, names).jacobians
    ref = reverse_mode_jacobians(net, embed, primal, names)
    assert [tuple(j.shape) for j in ours] == [(144, 12), (144, 12), (5, 12)]
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_rank_diminishing_pairs_are_registered_with_their_targets():
    assert PAIRS.get("partial_rank_vs_reverse_mode").target == 100.0
    assert PAIRS.get("partial_rank_all_vs_deepest").target == pytest.approx(1 / 1.3)
