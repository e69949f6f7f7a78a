"""The check kinds (baseline, theory, monotone), their verdicts, tolerances and the exit-code policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.compare import CHECKS, CheckContext, Verdict
from suite.compare.engine import Comparison, exit_code
from suite.compare.tolerance import AbsTolerance, ExactTolerance, RelTolerance, describe, mismatches
from suite.errors import SpecError
from suite.spec import expand_cases, load_spec

SPEC = """\
name: checks
reference: "unit tests of the check kinds"
tier: smoke
defaults: {device: cpu, seed: 0}
models:
  - {id: planted, source: builtin, name: planted, widths: [8, 6, 4], ranks: [7, 3]}
  - {id: mlp, source: builtin, name: mlp, widths: [8, 6, 4]}
metrics:
  - id: m
    kind: weight_spectrum
    checks:
      - {kind: baseline, key: ranks, name: exact}
      - {kind: baseline, key: stable_ranks, name: abs, tolerance: {kind: abs, atol: 0.01}}
      - {kind: baseline, key: effective_ranks, name: rel, tolerance: {kind: rel, rtol: 1.0e-3}}
      - {kind: baseline, key: ranks.1, name: dotted}
      - {kind: theory, key: ranks, theory: planted_product_rank, name: planted}
      - {kind: theory, key: ranks, expected_key: full_ranks, name: eq_key}
      - {kind: theory, key: ranks, expected_key: full_ranks, relation: bound, name: bound}
      - {kind: monotone, key: ranks, slack: 1, name: mono}
      - {kind: monotone, key: ranks, direction: non_decreasing, name: mono_up}
      - {kind: monotone, key: ranks}
cases:
  matrix: {model: [planted, mlp], metric: [m]}
"""


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict:
    path = Path(tmp_path_factory.mktemp("checks")) / "checks.yaml"
    path.write_text(SPEC, encoding="utf-8")
    loaded = load_spec(path)
    return {c.id: c for c in expand_cases(loaded.spec)}


def _check(case, name: str):
    matches = [c for c in case.checks if (c.name or f"{c.kind}:{c.key}") == name]
    assert len(matches) == 1, name
    return matches[0]


def run_check(
    case, name: str, values: dict, baseline: dict | None = None, state: str | None = None, source: str = ""
) -> Verdict:
    check = _check(case, name)
    if state is None:
        state = "missing" if baseline is None else "ok"
    ctx = CheckContext(case=case, values=values, baseline_values=baseline, baseline_state=state, baseline_source=source)
    verdict = CHECKS.get(check.kind).fn(check, ctx)
    assert verdict.case_id == case.id
    assert verdict.check == name
    return verdict


@pytest.fixture
def planted(cases):
    return cases["planted/none/m"]


@pytest.fixture
def mlp(cases):
    return cases["mlp/none/m"]


def test_spec_expands_to_the_expected_cases(cases):
    assert sorted(cases) == ["mlp/none/m", "planted/none/m"]
    assert [c.kind for c in cases["planted/none/m"].checks] == ["baseline"] * 4 + ["theory"] * 3 + ["monotone"] * 3


# ------------------------------------------------------------------------------------------ baseline


def test_baseline_exact_pass_and_fail(planted):
    ok = run_check(planted, "exact", {"ranks": [6, 3]}, {"ranks": [6, 3]}, source="measured")
    assert ok.status == "pass"
    assert (ok.value, ok.expected, ok.tolerance) == ([6, 3], [6, 3], "exact")
    assert "(measured)" in ok.reason
    bad = run_check(planted, "exact", {"ranks": [6, 3]}, {"ranks": [6, 4]})
    assert bad.status == "fail"
    assert bad.expected == [6, 4] and bad.value == [6, 3]
    assert "[1]: measured 3, expected 4" in bad.reason
    assert "[0]" not in bad.reason
    wrong_len = run_check(planted, "exact", {"ranks": [6, 3]}, {"ranks": [6, 3, 1]})
    assert wrong_len.status == "fail"
    assert "length 2, expected 3" in wrong_len.reason


def test_baseline_abs_tolerance(planted):
    base = {"stable_ranks": [1.5, 2.0]}
    ok = run_check(planted, "abs", {"stable_ranks": [1.505, 1.992]}, base)
    assert ok.status == "pass"
    assert ok.tolerance == "abs 0.01"
    bad = run_check(planted, "abs", {"stable_ranks": [1.5, 2.02]}, base)
    assert bad.status == "fail"
    assert "[1]: measured 2.02, expected 2.0" in bad.reason


def test_baseline_rel_tolerance_is_relative_to_expected(planted):
    # rtol 1e-3 of 100 is 0.1; of 1 it is 0.001
    base = {"effective_ranks": [100.0, 1.0]}
    ok = run_check(planted, "rel", {"effective_ranks": [100.09, 1.0009]}, base)
    assert ok.status == "pass"
    assert ok.tolerance == "rel 0.001"
    bad = run_check(planted, "rel", {"effective_ranks": [100.09, 1.002]}, base)
    assert bad.status == "fail"
    assert "[1]" in bad.reason and "[0]" not in bad.reason


def test_baseline_dotted_key(planted):
    assert run_check(planted, "dotted", {"ranks": [6, 3]}, {"ranks.1": 3}).status == "pass"
    bad = run_check(planted, "dotted", {"ranks": [6, 3]}, {"ranks.1": 2})
    assert bad.status == "fail"
    assert bad.value == 3 and bad.expected == 2


def test_baseline_new_when_missing(planted):
    v = run_check(planted, "exact", {"ranks": [6, 3]}, None)
    assert v.status == "new"
    assert v.value == [6, 3] and v.expected is None
    assert "baseline update" in v.reason
    # a baseline entry that lacks this key is also new, even if recorded for another hash
    assert run_check(planted, "exact", {"ranks": [6, 3]}, {"other": 1}).status == "new"
    assert run_check(planted, "exact", {"ranks": [6, 3]}, {"other": 1}, state="stale").status == "new"


def test_baseline_stale_when_hash_differs(planted):
    v = run_check(planted, "exact", {"ranks": [6, 3]}, {"ranks": [6, 3]}, state="stale")
    assert v.status == "stale"
    assert v.expected == [6, 3]
    assert "hash differs" in v.reason
    # stale wins even when the values differ: the comparison is meaningless
    assert run_check(planted, "exact", {"ranks": [6, 3]}, {"ranks": [1, 1]}, state="stale").status == "stale"


# -------------------------------------------------------------------------------------------- theory


def test_theory_planted_product_rank(planted):
    # widths [8, 6, 4], ranks k [7, 3]: min(7, 6, 8) = 6 and min(3, 4, 6) = 3
    ok = run_check(planted, "planted", {"ranks": [6, 3]})
    assert ok.status == "pass"
    assert ok.expected == [6, 3]
    assert ok.details["theory"] == "planted_product_rank"
    assert ok.details["widths"] == [8, 6, 4]
    assert ok.details["inner dims k"] == [7, 3]
    assert "Horn" in ok.details["source"]
    bad = run_check(planted, "planted", {"ranks": [7, 3]})
    assert bad.status == "fail"
    assert "[0]: measured 7, expected 6" in bad.reason


def test_theory_that_does_not_apply_is_an_error_verdict(mlp):
    v = run_check(mlp, "planted", {"ranks": [6, 4]})
    assert v.status == "error"
    assert "theory planted_product_rank failed" in v.reason
    assert "planted" in v.reason


def test_theory_equal_with_expected_key(planted):
    ok = run_check(planted, "eq_key", {"ranks": [6, 4], "full_ranks": [6, 4]})
    assert ok.status == "pass"
    assert ok.details == {"expected_key": "full_ranks"}
    bad = run_check(planted, "eq_key", {"ranks": [6, 3], "full_ranks": [6, 4]})
    assert bad.status == "fail"
    assert bad.expected == [6, 4]
    assert "[1]" in bad.reason
    missing = run_check(planted, "eq_key", {"ranks": [6, 3]})
    assert missing.status == "error"
    assert "full_ranks" in missing.reason


def test_theory_bound_pass_with_tightness(planted):
    v = run_check(planted, "bound", {"ranks": [2, 3], "full_ranks": [6, 4]})
    assert v.status == "pass"
    assert v.tolerance == "<="
    assert v.details["tightness"] == [pytest.approx(0.333333), 0.75]
    assert "tightness" in v.reason
    tight = run_check(planted, "bound", {"ranks": [6, 4], "full_ranks": [6, 4]})
    assert tight.status == "pass"
    assert tight.details["tightness"] == [1.0, 1.0]


def test_theory_bound_fail_names_the_element(planted):
    v = run_check(planted, "bound", {"ranks": [2, 5], "full_ranks": [6, 4]})
    assert v.status == "fail"
    assert "[1]: 5 > 4" in v.reason
    assert "[0]" not in v.reason
    assert v.details["tightness"] is None
    shape = run_check(planted, "bound", {"ranks": [2, 3, 1], "full_ranks": [6, 4]})
    assert shape.status == "fail"
    assert "shape" in shape.reason


# ------------------------------------------------------------------------------------------ monotone


def test_monotone_non_increasing_with_slack_passes(planted):
    # steps: 0, +1 (== slack, allowed), -2
    v = run_check(planted, "mono", {"ranks": [5, 5, 6, 4]})
    assert v.status == "pass"
    assert v.expected == "non_increasing"
    assert v.tolerance == "slack 1"
    assert "1 step(s) went against it: step 1->2: 5 -> 6" in v.reason  # visible although within slack
    assert v.details["within_slack"] == [[1, 1]]
    clean = run_check(planted, "mono", {"ranks": [5, 5, 4]})
    assert clean.reason == "non_increasing over 3 values" and "within_slack" not in clean.details


def test_monotone_non_increasing_fail_names_step_and_amount(planted):
    v = run_check(planted, "mono", {"ranks": [5, 7, 4, 6.5, 6]})
    assert v.status == "fail"
    assert "2 step(s) against non_increasing" in v.reason
    assert "step 0->1: 5 -> 7 (by 2)" in v.reason
    assert "step 2->3: 4 -> 6.5 (by 2.5)" in v.reason
    assert "3->4" not in v.reason
    assert v.details["violations"] == [[0, 2], [2, 2.5]]


def test_monotone_without_slack_and_non_decreasing(planted):
    strict = run_check(planted, "monotone:ranks", {"ranks": [3, 3, 4]})
    assert strict.status == "fail"
    assert "step 1->2: 3 -> 4 (by 1)" in strict.reason
    assert run_check(planted, "monotone:ranks", {"ranks": [4, 3, 3]}).status == "pass"
    assert run_check(planted, "mono_up", {"ranks": [1, 2, 2, 3]}).status == "pass"
    down = run_check(planted, "mono_up", {"ranks": [1, 3, 2]})
    assert down.status == "fail"
    assert "step 1->2: 3 -> 2 (by 1)" in down.reason


def test_monotone_on_non_list_is_an_error(planted):
    v = run_check(planted, "mono", {"ranks": 3})
    assert v.status == "error"
    assert "not a list of numbers" in v.reason


# --------------------------------------------------------------------------------------- missing key


@pytest.mark.parametrize("name", ["exact", "dotted", "planted", "eq_key", "bound", "mono"])
def test_missing_key_is_an_error_verdict(planted, name):
    v = run_check(planted, name, {"layers": ["0"], "n_layers": 1}, {"ranks": [6, 3], "ranks.1": 3})
    assert v.status == "error"
    assert "not in the results" in v.reason
    assert "have: layers, n_layers" in v.reason


def test_dotted_key_out_of_range_is_missing(planted):
    v = run_check(planted, "dotted", {"ranks": [6]}, {"ranks.1": 3})
    assert v.status == "error"
    assert "'ranks.1'" in v.reason


# -------------------------------------------------------------------------- tolerances and exit codes


def test_tolerance_descriptions_and_nested_mismatches():
    assert describe(ExactTolerance()) == "exact"
    assert describe(AbsTolerance(atol=1e-6)) == "abs 1e-06"
    assert describe(RelTolerance(rtol=0.01, atol=0.5)) == "rel 0.01 + abs 0.5"
    assert mismatches([[1, 2], [3, 4]], [[1, 2], [3, 5]], ExactTolerance()) == ["[1][1]: measured 4, expected 5"]
    nested = mismatches({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.5}, AbsTolerance(atol=0.1))
    assert nested == ["b: measured 2.0, expected 2.5"]
    assert mismatches(float("nan"), float("nan"), RelTolerance(rtol=0.1)) == []
    assert mismatches(1.0, float("nan"), RelTolerance(rtol=0.1)) != []
    assert mismatches(0.0, 1e-9, RelTolerance(rtol=0.1, atol=1e-8)) == []
    assert mismatches(0.0, 1e-9, RelTolerance(rtol=0.1)) != []


def _verdicts(*statuses: str) -> Comparison:
    return Comparison("r", verdicts=[Verdict("c", "x", s) for s in statuses])


def test_exit_code_severity():
    assert exit_code(_verdicts("pass", "pass")) == 0
    assert exit_code(_verdicts("pass", "skipped", "warn")) == 0
    assert exit_code(_verdicts("pass", "new")) == 4
    assert exit_code(_verdicts("stale", "pass")) == 4
    assert exit_code(_verdicts("new", "fail")) == 1
    assert exit_code(_verdicts("error", "stale")) == 1
    crashed = _verdicts("fail", "new")
    crashed.records["c"] = {"status": "error"}
    assert exit_code(crashed) == 2


def test_theory_check_needs_exactly_one_source(tmp_path):
    bad = SPEC.replace(
        "{kind: theory, key: ranks, theory: planted_product_rank, name: planted}",
        "{kind: theory, key: ranks, theory: planted_product_rank, expected_key: full_ranks}",
    )
    path = tmp_path / "bad.yaml"
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(SpecError, match="exactly one of theory"):
        load_spec(path)
    unknown = SPEC.replace("theory: planted_product_rank,", "theory: planted_product_rnak,")
    path.write_text(unknown, encoding="utf-8")
    with pytest.raises(SpecError, match="did you mean 'planted_product_rank'"):
        load_spec(path)
