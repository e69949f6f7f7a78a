"""The ``range`` check kind: inclusive limits, nested lists, null entries, non-numbers and spec errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.compare import CHECKS, CheckContext, Verdict
from suite.errors import SpecError
from suite.spec import expand_cases, load_spec

SPEC = """\
name: range_checks
reference: "unit tests of the range check"
tier: smoke
defaults: {device: cpu, seed: 0}
models:
  - {id: mlp, source: builtin, name: mlp, widths: [8, 6, 4]}
metrics:
  - id: m
    kind: weight_spectrum
    checks:
      - {kind: range, key: x, min: 0, max: 1, name: unit}
      - {kind: range, key: x, min: 0, name: lower}
      - {kind: range, key: x, max: 1, name: upper}
      - {kind: range, key: x, min: 0, max: 1, allow_null: true, name: nullable}
      - {kind: range, key: x, min: 2, max: 2, name: point}
      - {kind: range, key: x, min: -0.5, max: 0.5, why: "paper Fig. 3", name: why}
      - {kind: range, key: x.1, min: 0, max: 1, name: dotted}
      - {kind: range, key: x, min: 0, max: 1}
cases:
  matrix: {model: [mlp], metric: [m]}
"""


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    path = Path(tmp_path_factory.mktemp("range")) / "range.yaml"
    path.write_text(SPEC, encoding="utf-8")
    (only,) = expand_cases(load_spec(path).spec)
    return only


def run_check(case, name: str, values: dict) -> Verdict:
    matches = [c for c in case.checks if (c.name or f"{c.kind}:{c.key}") == name]
    assert len(matches) == 1, name
    check = matches[0]
    assert check.kind == "range"
    ctx = CheckContext(case=case, values=values, baseline_values=None, baseline_state="missing")
    verdict = CHECKS.get("range").fn(check, ctx)
    assert verdict.case_id == case.id
    assert verdict.check == name
    return verdict


def _status(case, name: str, x) -> str:
    return run_check(case, name, {"x": x}).status


def test_range_is_registered_and_parsed(case):
    assert "range" in dict(CHECKS.items())
    unit = next(c for c in case.checks if c.name == "unit")
    assert (unit.min, unit.max, unit.allow_null, unit.why) == (0.0, 1.0, False, None)
    lower = next(c for c in case.checks if c.name == "lower")
    assert (lower.min, lower.max) == (0.0, None)


def test_boundaries_are_inclusive(case):
    for x in (0, 0.0, 1, 1.0, 0.5, [0, 1], [[0.0], [1.0]]):
        assert _status(case, "unit", x) == "pass", x
    for x in (-1e-12, 1 + 1e-12, -1, 2, [0, 1.0000001], [-0.0000001, 0.5]):
        assert _status(case, "unit", x) == "fail", x
    # a degenerate range min == max is allowed and admits exactly that value
    assert _status(case, "point", 2) == "pass"
    assert _status(case, "point", 2.0) == "pass"
    assert _status(case, "point", 2.000001) == "fail"
    assert _status(case, "point", 1.999999) == "fail"


def test_one_sided_limits(case):
    assert _status(case, "lower", 0) == "pass"
    assert _status(case, "lower", 1e300) == "pass"
    assert _status(case, "lower", float("inf")) == "pass"
    assert _status(case, "lower", -1e-300) == "fail"
    assert _status(case, "upper", 1) == "pass"
    assert _status(case, "upper", -1e300) == "pass"
    assert _status(case, "upper", float("-inf")) == "pass"
    assert _status(case, "upper", 1.0000001) == "fail"
    assert _status(case, "unit", float("inf")) == "fail"


def test_pass_verdict_fields(case):
    v = run_check(case, "unit", {"x": [0.0, 0.25, 1.0]})
    assert v.status == "pass"
    assert v.value == [0.0, 0.25, 1.0]
    assert v.expected == "[0, 1]"
    assert v.tolerance == "range"
    assert "all 3 value(s) within [0, 1]" in v.reason
    assert run_check(case, "lower", {"x": 3}).expected == "[0, inf]"
    assert run_check(case, "upper", {"x": 0}).expected == "[-inf, 1]"
    assert run_check(case, "range:x", {"x": 0.5}).status == "pass"  # default label kind:key


def test_scalar_failure_names_value(case):
    v = run_check(case, "unit", {"x": 1.5})
    assert v.status == "fail"
    assert v.value == 1.5 and v.expected == "[0, 1]"
    assert "outside [0, 1]" in v.reason
    assert "value: 1.5" in v.reason


def test_nested_lists_report_the_index_of_the_offender(case):
    v = run_check(case, "unit", {"x": [[0.1, 0.2], [0.3, 1.5], [0.4]]})
    assert v.status == "fail"
    assert "[1][1]: 1.5" in v.reason
    for ok in ("[0][0]", "[0][1]", "[1][0]", "[2][0]"):
        assert ok not in v.reason
    flat = run_check(case, "unit", {"x": [0.5, -2, 0.5, 3]})
    assert flat.status == "fail"
    assert "[1]: -2" in flat.reason and "[3]: 3" in flat.reason
    assert "[0]" not in flat.reason and "[2]" not in flat.reason
    deep = run_check(case, "unit", {"x": [[[0.0, [0.5, 7.0]]]]})
    assert deep.status == "fail"
    assert "[0][0][1][1]: 7" in deep.reason


def test_many_offenders_are_truncated_with_a_count(case):
    v = run_check(case, "unit", {"x": [2.0] * 8})
    assert v.status == "fail"
    assert "[4]: 2" in v.reason and "[5]" not in v.reason
    assert "(+3 more)" in v.reason


def test_why_is_shown(case):
    ok = run_check(case, "why", {"x": 0.5})
    assert ok.status == "pass" and "(paper Fig. 3)" in ok.reason
    bad = run_check(case, "why", {"x": 0.6})
    assert bad.status == "fail" and "(paper Fig. 3)" in bad.reason
    assert bad.expected == "[-0.5, 0.5]"


def test_dotted_key(case):
    assert run_check(case, "dotted", {"x": [5.0, 0.5]}).status == "pass"
    bad = run_check(case, "dotted", {"x": [0.5, 5.0]})
    assert bad.status == "fail" and bad.value == 5.0


def test_null_entries_fail_unless_allowed(case):
    v = run_check(case, "unit", {"x": [0.5, None]})
    assert v.status == "fail"
    assert "[1]: null" in v.reason
    scalar = run_check(case, "unit", {"x": None})
    assert scalar.status == "fail" and "value: null" in scalar.reason
    ok = run_check(case, "nullable", {"x": [0.5, None, [None, 1.0]]})
    assert ok.status == "pass"
    assert "all 2 value(s)" in ok.reason  # nulls are not counted as checked values
    # allow_null accepts nulls, not out-of-range numbers next to them
    still_bad = run_check(case, "nullable", {"x": [None, 1.5]})
    assert still_bad.status == "fail" and "[1]: 1.5" in still_bad.reason


@pytest.mark.parametrize("x", ["0.5", True, False, {"a": 0.5}, [0.5, "high"], [[0.5], [True]]])
def test_non_numbers_give_an_error_verdict(case, x):
    v = run_check(case, "unit", {"x": x})
    assert v.status == "error"
    assert "is not a number" in v.reason


def test_missing_key_is_an_error(case):
    v = run_check(case, "unit", {"y": 0.5})
    assert v.status == "error"
    assert "not in the results" in v.reason and "have: y" in v.reason


def test_nan_is_not_within_the_range(case):
    assert run_check(case, "unit", {"x": float("nan")}).status == "fail"
    assert run_check(case, "unit", {"x": [0.5, float("nan")]}).status == "fail"


UNIT = "{kind: range, key: x, min: 0, max: 1, name: unit}"


def _write(tmp_path: Path, old: str, new: str) -> Path:
    text = SPEC.replace(old, new)
    assert text != SPEC
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_min_greater_than_max_is_a_spec_error(tmp_path):
    path = _write(tmp_path, UNIT, "{kind: range, key: x, min: 1, max: 0, name: unit}")
    with pytest.raises(SpecError, match="min 1.0 is larger than max 0.0"):
        load_spec(path)


def test_range_without_limits_is_a_spec_error(tmp_path):
    path = _write(tmp_path, UNIT, "{kind: range, key: x, name: unit}")
    with pytest.raises(SpecError, match="needs min, max or both"):
        load_spec(path)


def test_unknown_range_field_is_a_spec_error(tmp_path):
    path = _write(tmp_path, UNIT, "{kind: range, key: x, minimum: 0, name: unit}")
    with pytest.raises(SpecError):
        load_spec(path)
