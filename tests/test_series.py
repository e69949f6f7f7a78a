"""Cross-case series: the fit, selectors, load-time validation (file:line), evaluation with missing points,
series checks in the exit code, and the report section (table, fit, PNG)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from suite.cli import main
from suite.compare.series import evaluate_series, fit_curve
from suite.errors import ErrorLocation, SpecError
from suite.spec import expand_cases, load_spec
from suite.spec.series import select_series_cases

pytestmark = pytest.mark.usefixtures("one_thread_module")

# Three planted nets whose first map has planted rank k = 2, 4, 8 (the rank measured is k, and the
# planted_product_rank theory predicts it), one plain MLP, and one series over the planted nets.
SPEC = """\
name: sertest
reference: "series tests"
tier: smoke
defaults: {device: cpu, seed: 0}
models:
  - {id: p2, source: builtin, name: planted, widths: [12, 12, 10], ranks: [2, 20]}
  - {id: p4, source: builtin, name: planted, widths: [12, 12, 10], ranks: [4, 20]}
  - {id: p8, source: builtin, name: planted, widths: [12, 12, 10], ranks: [8, 20]}
  - {id: mlp, source: builtin, name: mlp, widths: [8, 6, 4]}
metrics:
  - id: planted_rank
    kind: weight_spectrum
    params: {tolerance: {rule: feng}}
    checks:
      - {kind: theory, key: ranks, theory: planted_product_rank, relation: equal}
  - id: spectrum
    kind: weight_spectrum
    params: {tolerance: {rule: feng}}
cases:
  matrix:
    - {model: [p2, p4, p8], metric: [planted_rank]}
    - {model: [mlp], metric: [spectrum]}
series:
  - id: inner
    title: "rank vs planted rank"
    cases: {model: "p*", metric: planted_rank}
    x: {key: model.ranks.0, label: "planted rank k"}
    y:
      - {id: r0, key: ranks.0, label: "rank W_1"}
      - {id: r1, key: ranks.1, label: "rank W_2"}
    scale: loglog
    fit: power
    checks:
      - {kind: range, key: fit.r0.exponent, min: 0.99, max: 1.01, why: "rank W_1 = k"}
"""

CASES = ["p2/none/planted_rank", "p4/none/planted_rank", "p8/none/planted_rank"]


def edit(old: str, new: str, text: str = SPEC) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def line_of(text: str, token: str, after: str = "series:") -> int:
    """1-based line of the first line containing ``token`` after the line containing ``after``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    return next(i for i, line in enumerate(lines) if i >= start and token in line) + 1


def spec_errors(write_spec, text: str) -> tuple[str, list[ErrorLocation]]:
    path = write_spec(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    for loc in info.value.locations:
        assert loc.file == str(path)
    return text, info.value.locations


def one_error(write_spec, text: str) -> ErrorLocation:
    _, locs = spec_errors(write_spec, text)
    assert len(locs) == 1, "\n".join(map(str, locs))
    return locs[0]


# ---------------------------------------------------------------------------------------------- the fit


def test_power_fit_recovers_exponent_and_prefactor_exactly():
    xs = [1.0, 4.0, 9.0, 16.0, 100.0, 2500.0]
    fit = fit_curve("power", xs, [3 * x**0.5 for x in xs])
    assert fit.coef["exponent"] == pytest.approx(0.5, abs=1e-13)
    assert fit.coef["prefactor"] == pytest.approx(3.0, rel=1e-13)
    assert fit.r2 == pytest.approx(1.0, abs=1e-13)
    assert (fit.n_points, fit.x_min, fit.x_max) == (6, 1.0, 2500.0)
    assert fit.predict(25.0) == pytest.approx(15.0, rel=1e-12)


def test_linear_fit_and_r2_match_numpy_on_noisy_data():
    rng = np.random.default_rng(0)
    xs = np.arange(1.0, 11.0)
    ys = 2.0 + 5.0 * xs + rng.normal(0, 1.0, xs.size)
    fit = fit_curve("linear", list(xs), list(ys))
    slope, intercept = np.polyfit(xs, ys, 1)
    residual = ys - (intercept + slope * xs)
    r2 = 1 - residual @ residual / ((ys - ys.mean()) @ (ys - ys.mean()))
    assert fit.coef["slope"] == pytest.approx(slope, rel=1e-12)
    assert fit.coef["intercept"] == pytest.approx(intercept, rel=1e-12)
    assert fit.r2 == pytest.approx(r2, rel=1e-12)
    assert 0.9 < fit.r2 < 1.0  # noisy: not a perfect line


def test_power_fit_r2_is_computed_in_log_space():
    xs, ys = [1.0, 2.0, 4.0, 8.0], [1.0, 3.0, 3.0, 9.0]
    fit = fit_curve("power", xs, ys)
    u, v = np.log(xs), np.log(ys)
    b, a = np.polyfit(u, v, 1)
    r2 = 1 - np.sum((v - a - b * u) ** 2) / np.sum((v - v.mean()) ** 2)
    assert fit.coef["exponent"] == pytest.approx(b, rel=1e-12)
    assert fit.r2 == pytest.approx(r2, rel=1e-12)


def test_constant_curve_has_zero_slope_and_undefined_r2():
    fit = fit_curve("linear", [1, 2, 3], [495, 495, 495])
    assert fit.coef == {"slope": 0.0, "intercept": 495.0}
    assert fit.r2 is None


@pytest.mark.parametrize(
    ("kind", "xs", "ys", "message"),
    [
        ("power", [2, 2, 2], [1, 2, 3], "at least two distinct x"),
        ("linear", [5], [1], "at least two distinct x"),
        ("power", [1, 2, 3], [1, 0, 3], "x > 0 and y > 0"),
        ("power", [0, 2, 3], [1, 2, 3], "x > 0 and y > 0"),
    ],
)
def test_fit_refuses_degenerate_input(kind, xs, ys, message):
    with pytest.raises(ValueError, match=message):
        fit_curve(kind, xs, ys)


def test_closed_form_hessian_rank_exponent_on_the_width_sweep():
    """The number the hessian_rank spec's range check is built on: Singh et al. Cor. 1 over w = 12..36."""
    ws = range(12, 37, 4)
    rank_loss = [2 * 9 * 2 * w - 3 * 81 + 9 * (55 + 9) for w in ws]  # q = 9, r = 55, K' = 9, L = 3
    params = [64 * w + w * w + 10 * w for w in ws]
    fit = fit_curve("power", params, rank_loss)
    assert fit.coef["exponent"] == pytest.approx(0.5641546, abs=1e-6)
    assert 0.48 < fit.coef["exponent"] < 0.62


# ---------------------------------------------------------------------------------------------- selectors


def test_selector_patterns_lists_and_union(write_spec):
    spec = load_spec(write_spec(SPEC)).spec
    cases = expand_cases(spec)
    assert [c.id for c in select_series_cases(spec.series[0], cases)] == CASES
    text = edit('cases: {model: "p*", metric: planted_rank}', "cases: [{model: [p8, p2]}, {model: p2, metric: planted_rank}]")
    spec = load_spec(write_spec(text)).spec
    chosen = select_series_cases(spec.series[0], expand_cases(spec))
    assert [c.id for c in chosen] == [CASES[0], CASES[2]]  # a union, once each, in the spec's case order
    text = edit('cases: {model: "p*", metric: planted_rank}', 'cases: {model: "p[24]", dataset: none}')
    spec = load_spec(write_spec(text)).spec
    assert [c.id for c in select_series_cases(spec.series[0], expand_cases(spec))] == CASES[:2]


def test_shorthands_normalise(write_spec):
    series = load_spec(write_spec(SPEC)).spec.series[0]
    assert series.cases[0].model == ["p*"] and series.cases[0].dataset == ["*"]
    assert series.fit.kind == "power" and series.fit.x_min is None
    assert [c.name for c in series.y] == ["r0", "r1"]


# ---------------------------------------------------------------------------------------------- validation


def test_unknown_model_id_in_selector_suggests(write_spec):
    text = edit('cases: {model: "p*", metric: planted_rank}', "cases: {model: [p2, p5], metric: planted_rank}")
    loc = one_error(write_spec, text)
    assert loc.line == line_of(text, "cases: {model: [p2, p5]")
    assert text.splitlines()[loc.line - 1][loc.col - 1 :].startswith("p5")
    assert "series.0.cases.0.model.1: unknown model id 'p5'" in loc.message
    assert "did you mean" in loc.message


def test_pattern_matching_no_id(write_spec):
    loc = one_error(write_spec, edit('cases: {model: "p*",', 'cases: {model: "q*",'))
    assert "pattern 'q*' matches no model id" in loc.message


def test_selector_selecting_no_case_is_an_error_at_the_cases_line(write_spec):
    text = edit('cases: {model: "p*", metric: planted_rank}', "cases: {model: mlp, metric: planted_rank}")
    loc = one_error(write_spec, text)
    assert loc.line == line_of(text, "cases: {model: mlp, metric: planted_rank}")
    assert "selects no case" in loc.message
    assert "mlp/none/spectrum" in loc.message  # lists the cases there are


def test_unknown_series_key_suggests(write_spec):
    text = edit("    scale: loglog\n", "    scal: loglog\n")
    loc = one_error(write_spec, text)
    assert loc.line == line_of(text, "scal: loglog")
    assert "unknown key 'scal' (did you mean 'scale'?)" in loc.message


def test_unknown_key_in_selector_suggests(write_spec):
    text = edit('cases: {model: "p*", metric: planted_rank}', 'cases: {model: "p*", metrc: planted_rank}')
    loc = one_error(write_spec, text)
    assert loc.line == line_of(text, "metrc")
    assert "unknown key 'metrc' (did you mean 'metric'?)" in loc.message


def test_check_key_typo_suggests_the_fit_field(write_spec):
    text = edit("key: fit.r0.exponent", "key: fit.r0.exponnt")
    loc = one_error(write_spec, text)
    assert loc.line == line_of(text, "fit.r0.exponnt")
    assert "unknown power fit field 'exponnt' (did you mean 'exponent'" in loc.message


def test_check_key_with_unknown_curve(write_spec):
    loc = one_error(write_spec, edit("key: fit.r0.exponent", "key: fit.r9.exponent"))
    assert "unknown curve id 'r9'" in loc.message and "Valid: r0, r1" in loc.message


def test_fit_check_without_a_fit(write_spec):
    loc = one_error(write_spec, edit("    fit: power\n", "    fit: none\n"))
    assert "the series has no fit" in loc.message


def test_linear_fit_fields_differ_from_power(write_spec):
    loc = one_error(write_spec, edit("    fit: power\n", "    fit: {kind: linear, x_min: 2}\n"))
    assert "unknown linear fit field 'exponent'" in loc.message and "slope" in loc.message


def test_config_key_typo_suggests(write_spec):
    text = edit("x: {key: model.ranks.0,", "x: {key: model.rnaks.0,")
    loc = one_error(write_spec, text)
    assert loc.line == line_of(text, "model.rnaks.0")
    assert "no 'rnaks'" in loc.message and "did you mean 'ranks'?" in loc.message


def test_config_x_that_is_a_list_needs_an_index_or_reduce(write_spec):
    loc = one_error(write_spec, edit("x: {key: model.ranks.0,", "x: {key: model.ranks,"))
    assert "not a number" in loc.message and "reduce" in loc.message


def test_points_sharing_a_config_x_are_refused(write_spec):
    loc = one_error(write_spec, edit("x: {key: model.ranks.0,", "x: {key: model.ranks.1,"))
    assert "have the same x = 20" in loc.message


def test_per_case_check_kinds_are_refused_in_a_series(write_spec):
    text = edit("      - {kind: range, key: fit.r0.exponent", "      - {kind: baseline, key: fit.r0.exponent")
    _, locs = spec_errors(write_spec, text)
    assert any("unknown series check kind 'baseline'" in loc.message and "Valid: monotone, range" in loc.message for loc in locs)
    assert all(loc.line == line_of(text, "kind: baseline") for loc in locs)


def test_curve_key_with_a_dot_needs_an_id(write_spec):
    text = edit('{id: r1, key: ranks.1, label: "rank W_2"}', '{key: ranks.1, label: "rank W_2"}')
    loc = one_error(write_spec, text)
    assert loc.line == line_of(text, "{key: ranks.1")
    assert "needs an id" in loc.message


def test_duplicate_curve_and_series_ids(write_spec):
    loc = one_error(write_spec, edit("{id: r1, key: ranks.1", "{id: r0, key: ranks.1"))
    assert "curve ids must be unique; repeated: r0" in loc.message
    block = SPEC[SPEC.index("  - id: inner") :]
    _, locs = spec_errors(write_spec, SPEC + block)
    assert any("duplicate series id 'inner'" in loc.message for loc in locs)


def test_predicted_key_needs_a_theory_check(write_spec):
    text = edit("cases: {model: \"p*\", metric: planted_rank}", "cases: {model: mlp}")
    text = edit("x: {key: model.ranks.0,", "x: {key: model.widths.1,", text)
    text = edit("key: fit.r0.exponent", "key: predicted.r0", text)
    loc = one_error(write_spec, text)
    assert "no selected case has a theory check on 'ranks.0'" in loc.message


# ---------------------------------------------------------------------------------------------- evaluation


def _record(case, values=None, status="ok", **extra) -> dict:
    return {"case_id": case.id, "case_hash": case.hash, "status": status, "values": values, **extra}


def _planted_values(k: int) -> dict:
    return {"ranks": [k, 10], "n_layers": 2}


def _setup(write_spec, text: str = SPEC):
    spec = load_spec(write_spec(text)).spec
    cases = expand_cases(spec)
    by_id = {c.id: c for c in cases}
    return spec.series[0], cases, by_id


def test_evaluation_from_stored_values(write_spec):
    series, cases, by_id = _setup(write_spec)
    records = {cid: _record(by_id[cid], _planted_values(k)) for cid, k in zip(CASES, (2, 4, 8))}
    result = evaluate_series(series, cases, {c.id for c in cases}, records, {})
    assert result.values["x"] == [2, 4, 8]
    assert result.values["y"] == {"r0": [2, 4, 8], "r1": [10, 10, 10]}
    assert result.values["fit"]["r0"]["exponent"] == pytest.approx(1.0, abs=1e-12)
    assert result.values["fit"]["r1"]["exponent"] == pytest.approx(0.0, abs=1e-12)
    assert result.values["fit"]["r1"]["r2"] is None
    assert result.values["predicted"] == {}  # no theory verdicts passed in
    [verdict] = result.verdicts
    assert (verdict.case_id, verdict.check, verdict.status) == ("series:inner", "range:fit.r0.exponent", "pass")


def test_points_are_sorted_by_x(write_spec):
    text = edit("matrix:\n    - {model: [p2, p4, p8]", "matrix:\n    - {model: [p8, p2, p4]")
    series, cases, by_id = _setup(write_spec, text)
    ks = {"p2": 2, "p4": 4, "p8": 8}
    records = {c.id: _record(c, _planted_values(ks[c.model.id])) for c in cases if c.model.id in ks}
    result = evaluate_series(series, cases, {c.id for c in cases}, records, {})
    assert [p.case_id for p in result.points] == CASES
    assert result.values["y"]["r0"] == [2, 4, 8]


def test_a_crashed_case_is_a_missing_point_and_the_check_errors(write_spec):
    series, cases, by_id = _setup(write_spec)
    records = {cid: _record(by_id[cid], _planted_values(k)) for cid, k in zip(CASES, (2, 4, 8))}
    records[CASES[1]] = _record(by_id[CASES[1]], status="error", error={"type": "RuntimeError", "message": "boom"})
    result = evaluate_series(series, cases, {c.id for c in cases}, records, {})
    assert [p.state for p in result.points] == ["ok", "error", "ok"]
    assert result.points[1].x == 4  # a config x is known even without values
    assert result.values["y"]["r0"] == [2, None, 8]
    assert result.fits["r0"].n_points == 2  # the fit says how many points it used
    [verdict] = result.verdicts
    assert verdict.status == "error"
    assert "1 of 3 point(s) missing" in verdict.reason
    assert f"{CASES[1]}: case crashed: RuntimeError: boom" in verdict.reason


def test_skipped_and_unselected_cases_make_the_check_skipped(write_spec):
    series, cases, by_id = _setup(write_spec)
    records = {cid: _record(by_id[cid], _planted_values(k)) for cid, k in zip(CASES, (2, 4, 8))}
    records[CASES[0]] = _record(by_id[CASES[0]], status="skipped", skip_reason="no checkpoint")
    ran = set(CASES[:2])  # p8 was not selected in this run
    result = evaluate_series(series, cases, ran, records, {})
    [verdict] = result.verdicts
    assert verdict.status == "skipped"
    assert "2 of 3 point(s) missing" in verdict.reason
    assert "case skipped: no checkpoint" in verdict.reason and "not selected in this run" in verdict.reason


def test_a_missing_value_key_is_an_error_with_a_suggestion(write_spec):
    series, cases, by_id = _setup(write_spec)
    records = {cid: _record(by_id[cid], {"rank": [k, 10]}) for cid, k in zip(CASES, (2, 4, 8))}
    result = evaluate_series(series, cases, {c.id for c in cases}, records, {})
    assert all(p.state == "error" for p in result.points)
    assert "did you mean 'rank'?" in result.points[0].problems[0]
    assert result.verdicts[0].status == "error"


def test_a_failed_fit_explains_the_check_error(write_spec):
    series, cases, by_id = _setup(write_spec, edit("    fit: power\n", "    fit: {kind: power, x_min: 8}\n"))
    records = {cid: _record(by_id[cid], _planted_values(k)) for cid, k in zip(CASES, (2, 4, 8))}
    result = evaluate_series(series, cases, {c.id for c in cases}, records, {})
    [verdict] = result.verdicts
    assert verdict.status == "error"
    assert "no power fit of r0: a fit needs at least two distinct x; have 1" in verdict.reason


def test_a_series_without_checks_reports_a_pass_or_the_missing_points(write_spec):
    text = SPEC[: SPEC.index("    checks:\n      - {kind: range")]
    series, cases, by_id = _setup(write_spec, text)
    records = {cid: _record(by_id[cid], _planted_values(k)) for cid, k in zip(CASES, (2, 4, 8))}
    [ok] = evaluate_series(series, cases, {c.id for c in cases}, records, {}).verdicts
    assert (ok.check, ok.status) == ("series", "pass")
    del records[CASES[2]]
    [bad] = evaluate_series(series, cases, {c.id for c in cases}, records, {}).verdicts
    assert bad.status == "error" and "no result in this run" in bad.reason


# ---------------------------------------------------------------------------------------------- end to end


class Cli:
    def __init__(self, tmp_path: Path, capsys):
        self.tmp, self.capsys = tmp_path, capsys
        self.spec = tmp_path / "sertest.yaml"
        self.reports = tmp_path / "reports"

    def __call__(self, *argv: str) -> tuple[int, str]:
        self.capsys.readouterr()
        code = main(list(argv))
        out = self.capsys.readouterr()
        return code, out.out + out.err

    def dirs(self) -> list[str]:
        return ["--runs-dir", str(self.tmp / "runs"), "--baselines-dir", str(self.tmp / "baselines"), "--reports-dir", str(self.reports)]

    def run(self, text: str, run_id: str) -> tuple[int, str]:
        self.spec.write_text(text, encoding="utf-8")
        return self("run", str(self.spec), "--run-id", run_id, "--no-progress", *self.dirs())


@pytest.fixture
def cli(tmp_path, capsys) -> Cli:
    return Cli(tmp_path, capsys)


def _section(report: str, series_id: str) -> str:
    start = report.index(f"### Series `{series_id}`")
    end = report.find("\n## ", start)
    return report[start : end if end >= 0 else len(report)]


def test_run_renders_the_series_and_passes(cli):
    code, out = cli.run(SPEC, "ok")
    assert code == 0, out
    report = (cli.reports / "sertest.md").read_text(encoding="utf-8")
    section = _section(report, "inner")
    assert "### Series `inner`: rank vs planted rank" in section
    rows = [line for line in section.splitlines() if line.startswith("| `p")]
    assert len(rows) == 3
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    assert cells[0] == ["`p2/none/planted_rank`", "2", "2", "2 (=)", "10", "10 (=)", "ok"]
    assert [row[1] for row in cells] == ["2", "4", "8"]
    header = next(line for line in section.splitlines() if line.startswith("| case"))
    assert "planted rank k" in header and "rank W_1 (theory)" in header and "rank W_2 (theory)" in header
    assert "exponent b" in section and "| 1.0000 " in section
    assert "![rank vs planted rank](sertest/series-inner.png)" in section
    png = cli.reports / "sertest" / "series-inner.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "`series:inner` | range:fit.r0.exponent | ✅ pass" in section
    assert "over 4 case(s) and 1 series" in report
    verdicts = json.loads((cli.tmp / "runs" / "ok" / "verdicts.json").read_text())
    assert any(v["case_id"] == "series:inner" and v["status"] == "pass" for v in verdicts)


def test_a_failing_series_check_fails_the_run(cli):
    text = edit("min: 0.99, max: 1.01", "min: 0.4, max: 0.6")
    code, out = cli.run(text, "bad")
    assert code == 1, out
    assert "FAIL   series:inner range:fit.r0.exponent" in out
    report = (cli.reports / "sertest.md").read_text(encoding="utf-8")
    attention = report[report.index("## Needs attention") : report.index("## Series")]
    assert "`series:inner`" in attention and "❌ fail" in attention


def test_report_rerenders_from_the_stored_run(cli):
    code, _ = cli.run(SPEC, "r")
    assert code == 0
    first = (cli.reports / "sertest.md").read_text(encoding="utf-8")
    (cli.reports / "sertest.md").unlink()
    (cli.reports / "sertest" / "series-inner.png").unlink()
    code, out = cli("report", "r", *cli.dirs())
    assert code == 0, out
    again = (cli.reports / "sertest.md").read_text(encoding="utf-8")
    assert _section(again, "inner") == _section(first, "inner")
    assert (cli.reports / "sertest" / "series-inner.png").is_file()


def test_select_leaves_series_points_missing_but_not_failing(cli):
    cli.spec.write_text(SPEC, encoding="utf-8")
    code, out = cli("run", str(cli.spec), "--run-id", "sel", "--no-progress", "--select", "p2*", *cli.dirs())
    assert code == 0, out  # a partial series is skipped, not failed
    report = (cli.reports / "sertest.md").read_text(encoding="utf-8")
    section = _section(report, "inner")
    assert "⏭ missing: not selected in this run" in section
    assert "2 missing" in section
    assert "⏭ skipped" in section


def test_validate_counts_series(cli, write_spec):
    cli.spec.write_text(SPEC, encoding="utf-8")
    code, out = cli("validate", str(cli.spec))
    assert code == 0 and "4 case(s), 1 series" in out


def test_hessian_rank_spec_series_validate():
    spec = load_spec(Path(__file__).resolve().parents[1] / "specs" / "hessian_rank.yaml").spec
    by_id = {s.id: s for s in spec.series}
    cases = expand_cases(spec)
    expected_points = {"width_digits": 9, "width_gauss": 4, "depth": 6, "samples": 5, "params_width": 9,
                       "cnn_filters_1d": 5, "cnn_params_1d": 5, "params_width_hvp": 3}
    assert {sid: len(select_series_cases(by_id[sid], cases)) for sid in expected_points} == expected_points
    params = by_id["params_width"]
    assert params.fit.kind == "power" and params.scale == "loglog"
    check = next(c for c in params.checks if c.key == "fit.H_L.exponent")
    # the closed form's least-squares exponent over w = 12..36 must lie inside the stated range
    assert check.min <= 0.5641546 <= check.max and check.why
    assert not math.isclose(check.min, 0.0) and check.max < 1.0
