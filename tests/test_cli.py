"""The ``ranksuite`` command end to end, in-process: every exit code, listings, plan, validate, baselines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from suite.cli import main
from suite.spec import expand_cases, load_spec

REPO = Path(__file__).resolve().parents[1]

SPEC = """\
name: clitest
reference: "ranksuite CLI tests"
tier: smoke
defaults: {device: cpu, seed: 0}
models:
  - {id: mlp, source: builtin, name: mlp, widths: [8, 6, 4]}
  - {id: planted, source: builtin, name: planted, widths: [8, 6, 4], ranks: [2, 3]}
metrics:
  - id: spectrum
    kind: weight_spectrum
    checks:
      - {kind: baseline, key: ranks}
      - {kind: baseline, key: stable_ranks, tolerance: {kind: rel, rtol: 1.0e-6}}
cases:
  matrix: {model: [mlp, planted], metric: [spectrum]}
"""

MLP = "mlp/none/spectrum"
PLANTED = "planted/none/spectrum"


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    """Runs ``suite.cli.main`` with every output folder inside ``tmp_path``."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
        self.root = tmp_path
        self.capsys = capsys
        self.spec = tmp_path / "clitest.yaml"
        self.runs = tmp_path / "runs"
        self.baselines = tmp_path / "baselines"
        self.reports = tmp_path / "reports"
        self.write(SPEC)

    def write(self, text: str) -> None:
        self.spec.write_text(text, encoding="utf-8")

    @property
    def baseline_file(self) -> Path:
        return self.baselines / "clitest.yaml"

    @property
    def report(self) -> Path:
        return self.reports / "clitest.md"

    def dirs(self, runs: bool = True) -> list[str]:
        out = ["--baselines-dir", str(self.baselines), "--reports-dir", str(self.reports)]
        return out + (["--runs-dir", str(self.runs)] if runs else [])

    def __call__(self, *argv: str) -> Result:
        self.capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors exit through SystemExit
            code = exc.code
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def run(self, run_id: str, *extra: str) -> Result:
        return self("run", str(self.spec), "--run-id", run_id, "--no-progress", *self.dirs(), *extra)

    def update(self, run_id: str, *extra: str) -> Result:
        return self("baseline", "update", run_id, *self.dirs(), *extra)

    def records(self, run_id: str) -> list[dict]:
        lines = (self.runs / run_id / "results.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def load_baselines(self) -> dict:
        return yaml.safe_load(self.baseline_file.read_text(encoding="utf-8"))

    def save_baselines(self, data: dict) -> None:
        self.baseline_file.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")

    def hashes(self) -> dict[str, str]:
        return {c.id: c.hash for c in expand_cases(load_spec(self.spec).spec)}


@pytest.fixture
def cli(tmp_path, capsys) -> Cli:
    return Cli(tmp_path, capsys)


@pytest.fixture
def recorded(cli) -> Cli:
    """A CLI whose spec has baselines recorded from run ``r0``."""
    assert cli.run("r0").code == 4
    assert cli.update("r0").code == 0
    return cli


def _needs_attention_rows(report: str) -> list[str]:
    """Data rows of the first table under ``## Needs attention`` (which must be the first section)."""
    lines = report.splitlines()
    headings = [line for line in lines if line.startswith("## ")]
    assert headings and headings[0] == "## Needs attention", headings
    start = lines.index("## Needs attention")
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    assert len(table) >= 3, table  # header, separator, rows
    return table[2:]


# ---------------------------------------------------------------------------------------- exit 4 -> 0


def test_no_baseline_exits_4_then_update_then_0(cli):
    first = cli.run("r1")
    assert first.code == 4
    assert "-> exit 4" in first.out
    assert f"NEW    {MLP} baseline:ranks" in first.out
    assert f"NEW    {PLANTED} baseline:stable_ranks" in first.out
    assert not cli.baseline_file.exists()  # nothing updates a baseline implicitly
    assert "a baseline is missing or stale" in cli.report.read_text(encoding="utf-8")

    upd = cli.update("r1")
    assert upd.code == 0
    assert f"added      {MLP}" in upd.out
    assert "+ default.ranks = [6, 4]" in upd.out
    assert "+ default.ranks = [2, 3]" in upd.out
    assert "2 case(s) added or changed" in upd.out
    stored = cli.load_baselines()
    assert stored["spec"] == "clitest"
    assert stored["cases"][MLP]["values"]["default"]["ranks"] == [6, 4]
    assert stored["cases"][PLANTED]["values"]["default"]["ranks"] == [2, 3]
    assert stored["cases"][MLP]["case_hash"] == cli.hashes()[MLP]
    assert stored["cases"][MLP]["provenance"]["source"] == "measured"
    assert stored["cases"][MLP]["provenance"]["run_id"] == "r1"

    second = cli.run("r2")
    assert second.code == 0, second.out
    assert "4 pass" in second.out
    report = cli.report.read_text(encoding="utf-8")
    assert "**Result: all checks pass** (exit 0)" in report
    assert "## Needs attention" not in report
    # update from the same run again: nothing changes
    again = cli.update("r2")
    assert again.code == 0
    assert "0 case(s) added or changed, 2 unchanged" in again.out


def test_stale_baseline_exits_4_and_update_prints_diff(recorded):
    cli = recorded
    old_hash = cli.hashes()[MLP]
    cli.write(SPEC.replace("widths: [8, 6, 4]}", "widths: [8, 6, 5]}", 1))
    new_hash = cli.hashes()[MLP]
    assert new_hash != old_hash
    assert cli.hashes()[PLANTED] == recorded.load_baselines()["cases"][PLANTED]["case_hash"]

    plan = cli("plan", str(cli.spec), *cli.dirs(runs=False))
    assert plan.code == 0
    assert f"{new_hash}  baseline STALE" in plan.out
    assert "baseline ok" in [line for line in plan.out.splitlines() if line.startswith(PLANTED)][0]

    res = cli.run("r3")
    assert res.code == 4
    assert f"STALE  {MLP} baseline:ranks" in res.out
    assert PLANTED not in "".join(line for line in res.out.splitlines() if "STALE" in line)

    upd = cli.update("r3")
    assert upd.code == 0
    assert f"changed    {MLP}" in upd.out
    assert "~ default.ranks: [6, 4] -> [6, 5]" in upd.out
    assert f"~ case_hash: {old_hash} -> {new_hash}" in upd.out
    assert f"{PLANTED}" not in upd.out  # unchanged entries are not listed
    assert cli.load_baselines()["cases"][MLP]["values"]["default"]["ranks"] == [6, 5]
    assert cli.run("r4").code == 0


# --------------------------------------------------------------------------------------------- exit 1


def test_edited_baseline_value_exits_1_and_report_lists_it_first(recorded):
    cli = recorded
    data = cli.load_baselines()
    data["cases"][PLANTED]["values"]["default"]["ranks"] = [2, 2]
    del data["cases"][MLP]  # its verdicts become "new", listed before PLANTED in case order
    cli.save_baselines(data)

    res = cli.run("r5")
    assert res.code == 1
    assert f"FAIL   {PLANTED} baseline:ranks: differs from baseline: [1]: measured 3, expected 2" in res.out
    assert "-> exit 1" in res.out

    report = cli.report.read_text(encoding="utf-8")
    assert "**Result: a check failed** (exit 1)" in report
    rows = _needs_attention_rows(report)
    assert rows[0].startswith(f"| `{PLANTED}`")
    assert "fail" in rows[0] and "baseline:ranks" in rows[0]
    assert any(row.startswith(f"| `{MLP}`") and "new" in row for row in rows[1:])
    # the stable-rank check of the edited case still passes: it is not listed
    assert not any("stable_ranks" in row and PLANTED in row for row in rows)


# --------------------------------------------------------------------------------------------- exit 2


def test_crashing_case_exits_2_and_run_continues(cli):
    cli.write(
        SPEC.replace(
            "metrics:\n",
            "metrics:\n  - {id: broken, kind: weight_spectrum, params: {layers: ['nomatch*']}}\n",
        ).replace("metric: [spectrum]", "metric: [broken, spectrum]")
    )
    res = cli.run("r6")
    assert res.code == 2
    assert "ERROR  mlp/none/broken run: case crashed: MetricError" in res.out
    records = {r["case_id"]: r for r in cli.records("r6")}
    assert list(records) == ["mlp/none/broken", MLP, "planted/none/broken", PLANTED]
    broken = records["mlp/none/broken"]
    assert broken["status"] == "error"
    assert broken["values"] is None
    assert broken["error"]["type"] == "MetricError"
    assert "nomatch*" in broken["error"]["message"]
    assert "Traceback (most recent call last)" in broken["error"]["traceback"]
    assert "weight_spectrum" in broken["error"]["traceback"]
    # the run went on after the crash
    assert records[MLP]["status"] == "ok"
    assert records[MLP]["values"]["ranks"] == [6, 4]
    assert records[PLANTED]["values"]["ranks"] == [2, 3]
    report = cli.report.read_text(encoding="utf-8")
    assert "**Result: a case crashed** (exit 2)" in report
    assert "traceback of <code>mlp/none/broken</code>" in report
    assert _needs_attention_rows(report)[0].startswith("| `mlp/none/broken`")


# --------------------------------------------------------------------------------------------- exit 3


def test_misspelt_key_exits_3_with_location(cli):
    text = SPEC.replace(
        "  - {id: mlp, source: builtin, name: mlp, widths: [8, 6, 4]}\n",
        "  - id: mlp\n    source: builtin\n    name: mlp\n    widhts: [8, 6, 4]\n",
    )
    cli.write(text)
    lines = text.splitlines()
    line_no = next(i for i, line in enumerate(lines, 1) if "widhts" in line)
    col = lines[line_no - 1].index("widhts") + 1
    where = f"{cli.spec}:{line_no}:{col}"

    res = cli.run("r7")
    assert res.code == 3
    assert where in res.err
    assert "unknown key 'widhts'" in res.err
    assert "did you mean 'widths'" in res.err
    assert not (cli.runs / "r7").exists()  # nothing ran

    val = cli("validate", str(cli.spec))
    assert val.code == 3
    assert where in val.err
    plan = cli("plan", str(cli.spec), *cli.dirs(runs=False))
    assert plan.code == 3
    assert where in plan.err


def test_bad_usage_exits_3(cli):
    res = cli("frobnicate")
    assert res.code == 3
    assert "invalid choice" in res.err
    assert cli("run", str(cli.spec), "--cache", "sometimes", *cli.dirs()).code == 3
    assert cli("baseline").code == 3
    missing_run = cli.update("no-such-run")
    assert missing_run.code == 3
    assert "no run 'no-such-run'" in missing_run.err


# --------------------------------------------------------------------------------------------- exit 5


def test_nothing_selected_exits_5(cli):
    res = cli.run("r8", "--select", "nothing*")
    assert res.code == 5
    assert "nothing selected" in res.err
    assert not (cli.runs / "r8").exists()
    plan = cli("plan", str(cli.spec), "--select", "nothing*", *cli.dirs(runs=False))
    assert plan.code == 5
    # a selection that matches runs only the matching case
    one = cli.run("r9", "--select", "planted/*")
    assert one.code == 4
    assert [r["case_id"] for r in cli.records("r9")] == [PLANTED]


# ------------------------------------------------------------------------------ ls, plan, validate


def test_ls_metrics_checks_theories(cli):
    res = cli("ls", "metrics")
    assert res.code == 0
    line = next(line for line in res.out.splitlines() if line.startswith("weight_spectrum"))
    assert "Singular values, numerical rank" in line
    checks = cli("ls", "checks")
    assert [line.split()[0] for line in checks.out.splitlines()] == ["baseline", "monotone", "range", "theory"]
    theories = cli("ls", "theories", "planted*", "-v")
    assert theories.out.startswith("planted_product_rank")
    assert "planted.py:" in theories.out
    assert cli("ls", "metrics", "nomatch*").out == ""


def test_plan_shows_hashes_and_baseline_state(cli):
    hashes = cli.hashes()
    before = cli("plan", str(cli.spec), *cli.dirs(runs=False))
    assert before.code == 0
    lines = before.out.splitlines()
    assert lines[0] == f"# clitest ({cli.spec}, tier smoke): 2 case(s)"
    assert lines[1].split() == [MLP, hashes[MLP], "no", "baseline", "baseline:ranks,", "baseline:stable_ranks"]
    assert lines[2].split()[:2] == [PLANTED, hashes[PLANTED]]
    assert cli.run("p0").code == 4
    assert cli.update("p0").code == 0
    after = cli("plan", str(cli.spec), *cli.dirs(runs=False))
    assert [line.split()[2:4] for line in after.out.splitlines()[1:]] == [["baseline", "ok"], ["baseline", "ok"]]


def test_validate_ok(cli):
    res = cli("validate", str(cli.spec))
    assert res.code == 0
    assert res.out.strip() == f"{cli.spec}: ok (clitest, tier smoke, 2 case(s))"


# ------------------------------------------------------------------------------ paper baselines


def test_baseline_update_keeps_paper_entries_unless_forced(recorded):
    cli = recorded
    data = cli.load_baselines()
    data["cases"][MLP] = {
        "case_hash": None,
        "provenance": {"source": "paper", "citation": "Doe et al. 2024, Table 1"},
        "values": {"default": {"ranks": [6, 5]}},
    }
    cli.save_baselines(data)
    res = cli.run("r10")
    assert res.code == 1  # the paper value [6, 5] differs from the measured [6, 4]
    assert f"FAIL   {MLP} baseline:ranks" in res.out
    assert f"NEW    {MLP} baseline:stable_ranks" in res.out  # the paper gives no stable ranks

    kept = cli.update("r10")
    assert kept.code == 0
    assert f"kept-paper {MLP}" in kept.out
    assert "kept: Doe et al. 2024, Table 1" in kept.out
    entry = cli.load_baselines()["cases"][MLP]
    assert entry["provenance"] == {"source": "paper", "citation": "Doe et al. 2024, Table 1"}
    assert entry["values"]["default"] == {"ranks": [6, 5]}

    forced = cli.update("r10", "--force")
    assert forced.code == 0
    assert f"changed    {MLP}" in forced.out
    assert "~ default.ranks: [6, 5] -> [6, 4]" in forced.out
    entry = cli.load_baselines()["cases"][MLP]
    assert entry["provenance"]["source"] == "measured"
    assert entry["values"]["default"]["ranks"] == [6, 4]
    assert cli.run("r11").code == 0


def test_paper_entry_that_matches_passes(recorded):
    cli = recorded
    data = cli.load_baselines()
    data["cases"][PLANTED] = {
        "case_hash": None,
        "provenance": {"source": "paper", "citation": "planted ranks"},
        "values": {"default": {**data["cases"][PLANTED]["values"]["default"], "ranks": [2, 3]}},
    }
    cli.save_baselines(data)
    assert cli.run("r12").code == 0
    verdicts = json.loads((cli.runs / "r12" / "verdicts.json").read_text(encoding="utf-8"))
    planted = [v for v in verdicts if v["case_id"] == PLANTED and v["check"] == "baseline:ranks"]
    assert planted[0]["status"] == "pass"
    assert "(paper)" in planted[0]["reason"]


# ------------------------------------------------------------------------------- the real smoke spec


def test_smoke_spec_passes_against_committed_baselines(tmp_path, capsys, one_thread):
    cli = Cli(tmp_path, capsys)
    res = cli(
        "run", str(REPO / "specs" / "smoke.yaml"),
        "--runs-dir", str(tmp_path / "runs"),
        "--reports-dir", str(tmp_path / "reports"),
        "--baselines-dir", str(REPO / "baselines"),
        "--run-id", "smoke-test", "--no-progress",
    )
    assert res.code == 0, res.out + res.err
    assert "smoke: 10 pass" in res.out
    report = (tmp_path / "reports" / "smoke.md").read_text(encoding="utf-8")
    assert "**Result: all checks pass** (exit 0)" in report


# ------------------------------------------------------------------------------- more commands


def test_compare_and_report_commands_reread_a_finished_run(cli):
    assert cli.run("q1").code == 4
    assert cli.update("q1").code == 0
    cli.report.unlink()
    cmp = cli("compare", "q1", *cli.dirs())
    assert cmp.code == 0  # the same records, now against the stored baselines
    assert "clitest: 4 pass (run q1) -> exit 0" in cmp.out
    assert not cli.report.exists()  # compare writes no report
    rep = cli("report", "latest", *cli.dirs())
    assert rep.code == 0
    assert "`q1`" in cli.report.read_text(encoding="utf-8")
    verdicts = json.loads((cli.runs / "q1" / "verdicts.json").read_text(encoding="utf-8"))
    assert {v["status"] for v in verdicts} == {"pass"}


def test_baseline_update_skips_crashed_cases_and_records_timing(cli):
    cli.write(
        SPEC.replace("metrics:\n", "metrics:\n  - {id: broken, kind: weight_spectrum, params: {layers: ['x']}}\n")
        .replace("metric: [spectrum]", "metric: [broken, spectrum]")
    )
    assert cli.run("u1").code == 2
    upd = cli.update("u1")
    assert upd.code == 0
    assert "skipped    mlp/none/broken" in upd.out
    assert "no successful result" in upd.out
    stored = cli.load_baselines()["cases"]
    assert sorted(stored) == [MLP, PLANTED]
    record = next(r for r in cli.records("u1") if r["case_id"] == MLP)
    assert stored[MLP]["timing"] == {"cpu": round(record["time_s"], 6)}


def test_worst_exit_code_over_several_specs(cli, tmp_path):
    from suite.cli import worst

    assert worst([]) == 0
    assert worst([0, 5]) == 5
    assert worst([5, 4]) == 4
    assert worst([4, 1, 0]) == 1
    assert worst([1, 2]) == 2
    assert worst([2, 3, 0]) == 3
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "a.yaml").write_text(SPEC, encoding="utf-8")  # no baselines yet: 4
    (folder / "b.yaml").write_text(
        SPEC.replace("name: clitest", "name: other")
        .replace("metrics:\n", "metrics:\n  - {id: broken, kind: weight_spectrum, params: {layers: ['x']}}\n")
        .replace("metric: [spectrum]", "metric: [broken]"),
        encoding="utf-8",
    )
    res = cli("run", str(folder), "--no-progress", *cli.dirs())
    assert res.code == 2
    assert "clitest: " in res.out and "-> exit 4" in res.out
    assert "other: " in res.out and "-> exit 2" in res.out
    # --tier filters specs: none is a paper spec
    none = cli("run", str(folder), "--tier", "paper", *cli.dirs())
    assert none.code == 5
    assert "no spec selected" in none.err


def test_ls_specs_lists_valid_and_invalid(cli, tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "good.yaml").write_text(SPEC, encoding="utf-8")
    (folder / "bad.yaml").write_text(SPEC.replace("tier: smoke", "tier: smok"), encoding="utf-8")
    res = cli("ls", "specs", "-v", "--specs-dir", str(folder))
    assert res.code == 0
    good = next(line for line in res.out.splitlines() if "good.yaml" in line)
    assert "smoke: ranksuite CLI tests" in good and "2 cases" in good
    bad = next(line for line in res.out.splitlines() if "bad.yaml" in line)
    assert "INVALID" in bad and f"{folder / 'bad.yaml'}:3:" in bad
    short = cli("ls", "specs", "--specs-dir", str(folder))
    assert [line.split()[1] for line in short.out.splitlines()] == ["INVALID:", "smoke:"]  # sorted: bad, good
    assert f"{folder / 'bad.yaml'}:3:" in short.out  # the location is shown without -v too


MISSING_WEIGHTS = """\
name: missingw
reference: "missing checkpoint"
tier: TIER
defaults: {device: cpu, seed: 0}
models:
  - {id: tiny, source: timm, name: test_resnet, weights: /nonexistent/ranksuite-test.pt}
  - {id: mlp, source: builtin, name: mlp, widths: [8, 6, 4]}
metrics:
  - {id: spectrum, kind: weight_spectrum}
cases:
  matrix: {model: [tiny, mlp], metric: [spectrum]}
"""


@pytest.mark.parametrize(("tier", "status", "code"), [("smoke", "error", 2), ("paper", "skipped", 0)])
def test_missing_checkpoint_is_error_or_skipped_by_tier(cli, tier, status, code):
    cli.write(MISSING_WEIGHTS.replace("TIER", tier))
    res = cli.run(f"w-{tier}")
    assert res.code == code, res.out
    recs = {r["case_id"]: r for r in cli.records(f"w-{tier}")}
    tiny = recs["tiny/none/spectrum"]
    assert tiny["status"] == status
    if status == "error":
        assert tiny["error"]["type"] == "MissingResource"
        assert "checkpoint not found: /nonexistent/ranksuite-test.pt" in tiny["error"]["message"]
    else:
        assert "checkpoint not found" in tiny["skip_reason"]
        assert tiny["error"] is None
    assert recs["mlp/none/spectrum"]["status"] == "ok"
    verdicts = json.loads((cli.runs / f"w-{tier}" / "verdicts.json").read_text(encoding="utf-8"))
    assert [v["status"] for v in verdicts if v["case_id"] == "tiny/none/spectrum"] == [status]
