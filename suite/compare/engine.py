"""Evaluate a run's checks against baselines and theory, and write baselines from a run.

Exit codes of a comparison (``exit_code``), most serious first: 2 a case crashed; 1 a check failed
(or could not be evaluated); 4 a baseline is missing or stale; 0 everything passed. The checks of a spec's
``series`` (:mod:`suite.compare.series`) count like case checks: their verdicts carry the case id
``series:<id>``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.compare.baseline import (
    BaselineEntry,
    BaselineFile,
    MeasuredProvenance,
    baseline_path,
    dump_baselines,
    load_baselines,
    now_iso,
)
from suite.compare.checks import MISSING, lookup
from suite.compare.registry import CHECKS, CheckContext, Verdict
from suite.compare.series import SeriesResult, evaluate_series
from suite.compare.tolerance import ExactTolerance, mismatches
from suite.runner.store import RunDir
from suite.spec.expand import Case

__all__ = ["Comparison", "compare_run", "exit_code", "update_baselines"]

EXIT_OK, EXIT_FAIL, EXIT_CRASH, EXIT_USAGE, EXIT_BASELINE, EXIT_EMPTY = 0, 1, 2, 3, 4, 5


@dataclass
class Comparison:
    """Verdicts of one run: ``verdicts`` in case order (then the series'), ``records`` the result record
    per case id, ``series`` the evaluated series of the spec."""

    run_id: str
    verdicts: list[Verdict] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    series: list[SeriesResult] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        c = Counter(v.status for v in self.verdicts)
        return {k: c.get(k, 0) for k in ("pass", "fail", "error", "warn", "skipped", "new", "stale")}

    def crashed(self) -> list[str]:
        return [cid for cid, rec in self.records.items() if rec.get("status") == "error"]


def exit_code(comparison: Comparison) -> int:
    """2 if a case crashed, else 1 if a check failed or errored, else 4 if a baseline is new/stale, else 0."""
    statuses = {v.status for v in comparison.verdicts}
    if comparison.crashed():
        return EXIT_CRASH
    if statuses & {"fail", "error"}:
        return EXIT_FAIL
    if statuses & {"new", "stale"}:
        return EXIT_BASELINE
    return EXIT_OK


def timing_verdict(case: Case, time_s: float | None, baseline_s: float | None, policy: Any, device_class: str) -> Verdict | None:
    """A ``timing`` verdict when the metric took more than ``policy.factor`` x its baseline time.

    Cases faster than ``policy.min_seconds`` are never flagged (timer noise). Status ``warn`` unless the
    spec sets ``timing: {fail: true}``. ``None`` when there is nothing to compare or no regression.
    """
    if time_s is None or not baseline_s or time_s < policy.min_seconds:
        return None
    ratio = time_s / baseline_s
    if ratio <= policy.factor:
        return None
    return Verdict(
        case.id,
        "timing",
        "fail" if policy.fail else "warn",
        round(time_s, 4),
        round(baseline_s, 4),
        f"<= {policy.factor:g}x",
        f"{ratio:.2f}x slower than the baseline timing on {device_class} ({time_s:.3f} s vs {baseline_s:.3f} s)",
        {"ratio": round(ratio, 3)},
    )


def _case_verdicts(
    case: Case, rec: dict[str, Any] | None, entry: BaselineEntry | None, timing_policy: Any = None
) -> list[Verdict]:
    if rec is None:
        return [Verdict(case.id, "run", "error", reason="no result in this run (interrupted?); rerun to resume")]
    if rec["status"] == "error":
        err = rec.get("error") or {}
        return [Verdict(case.id, "run", "error", reason=f"case crashed: {err.get('type')}: {err.get('message')}")]
    if rec["status"] == "skipped":
        return [Verdict(case.id, "run", "skipped", reason=rec.get("skip_reason") or "skipped")]
    if rec.get("case_hash") != case.hash:
        return [
            Verdict(case.id, "run", "error", reason="the result was computed for another version of this case (hash differs); rerun")
        ]
    dclass = rec.get("device_class", "cpu")
    if entry is None:
        state, base_values, source, base_time = "missing", None, "", None
    else:
        state = entry.state(case.hash)
        base_values = entry.values_for(dclass)
        source = entry.provenance.source
        base_time = entry.timing.get(dclass)
    ctx = CheckContext(
        case=case,
        values=rec["values"],
        baseline_values=base_values,
        baseline_state=state,
        baseline_source=source,
        device_class=dclass,
        time_s=rec.get("time_s"),
        baseline_time_s=base_time,
    )
    verdicts = [CHECKS.get(check.kind).fn(check, ctx) for check in case.checks]
    if timing_policy is not None and rec.get("reused_from") is None and state == "ok":
        slow = timing_verdict(case, rec.get("time_s"), base_time, timing_policy, dclass)
        if slow is not None:
            verdicts.append(slow)
    return verdicts or [Verdict(case.id, "run", "pass", reason="computed; the metric declares no checks")]


def compare_run(
    cases: list[Case],
    run: RunDir,
    baselines: BaselineFile,
    timing_policy: Any = None,
    series: Sequence[Any] = (),
    spec_cases: Sequence[Case] | None = None,
) -> Comparison:
    """Verdicts of every case of ``cases`` (those the run was asked to compute) against ``baselines``.

    With a ``timing_policy`` (the spec's ``timing:``), freshly computed cases are also compared with their
    baseline timing (see :func:`timing_verdict`); results reused from the cache are not timed again.
    Each entry of ``series`` (the spec's ``series:``) is then evaluated on the stored values
    (:func:`suite.compare.series.evaluate_series`); its selectors pick among ``spec_cases`` (default
    ``cases``), and a selected case outside ``cases`` is a missing point.
    """
    latest = run.latest()
    comparison = Comparison(run.id)
    by_case: dict[str, list[Verdict]] = defaultdict(list)
    for case in cases:
        rec = latest.get(case.id)
        if rec is not None:
            comparison.records[case.id] = rec
        verdicts = _case_verdicts(case, rec, baselines.cases.get(case.id), timing_policy)
        by_case[case.id].extend(verdicts)
        comparison.verdicts.extend(verdicts)
    ran = {c.id for c in cases}
    for entry in series:
        result = evaluate_series(entry, list(spec_cases if spec_cases is not None else cases), ran, comparison.records, by_case)
        comparison.series.append(result)
        comparison.verdicts.extend(result.verdicts)
    return comparison


@dataclass
class BaselineChange:
    case_id: str
    kind: str  # added | changed | refreshed | kept-paper | unchanged | skipped
    lines: list[str] = field(default_factory=list)


def _baseline_keys(case: Case) -> list[str]:
    return sorted({c.key for c in case.checks if c.kind == "baseline"})


def update_baselines(
    cases: list[Case], run: RunDir, baselines_dir: Path, spec_name: str, force: bool = False
) -> tuple[Path, list[BaselineChange]]:
    """Write the values that baseline checks read, from the successful records of ``run``.

    CPU records write the ``default`` values; other device classes write only the keys whose values
    differ from ``default``. Entries with ``source: paper`` are kept unless ``force``. Returns the file
    path and what changed per case.
    """
    path = baseline_path(baselines_dir, spec_name)
    old = load_baselines(path, spec_name)
    new_cases = dict(old.cases)
    meta = run.meta()
    latest = run.latest()
    changes: list[BaselineChange] = []
    for case in cases:
        rec = latest.get(case.id)
        if rec is None or rec.get("status") != "ok" or rec.get("case_hash") != case.hash:
            why = "no successful result for the current case in this run"
            changes.append(BaselineChange(case.id, "skipped", [why]))
            continue
        prev = old.cases.get(case.id)
        if prev is not None and prev.provenance.source == "paper" and not force:
            changes.append(BaselineChange(case.id, "kept-paper", [f"kept: {prev.provenance.citation}"]))
            continue
        dclass = rec.get("device_class", "cpu")
        measured = {k: lookup(rec["values"], k) for k in _baseline_keys(case)}
        measured = {k: v for k, v in measured.items() if v is not MISSING}
        values = {dc: dict(v) for dc, v in (prev.values.items() if prev else [])}
        default = values.setdefault("default", {})
        if dclass == "cpu" or not default:
            default.update(measured)
        else:
            overlay = values.setdefault(dclass, {})
            for k, v in measured.items():
                if k in default and not mismatches(v, default[k], ExactTolerance()):
                    overlay.pop(k, None)
                else:
                    overlay[k] = v
            if not overlay:
                values.pop(dclass)
        timing = dict(prev.timing) if prev else {}
        if rec.get("time_s") is not None:
            timing[dclass] = round(float(rec["time_s"]), 6)
        entry = BaselineEntry(
            case_hash=case.hash,
            provenance=MeasuredProvenance(
                run_id=run.id,
                git_sha=meta.get("git", {}).get("sha"),
                dirty=meta.get("git", {}).get("dirty"),
                versions=meta.get("versions", {}),
                device_name=meta.get("device_name"),
                date=now_iso(),
            ),
            values=values,
            timing=timing,
        )
        new_cases[case.id] = entry
        changes.append(_describe(case.id, prev, entry))
    dump_baselines(path, BaselineFile(spec=spec_name, cases=dict(sorted(new_cases.items()))))
    return path, changes


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(case_id: str, prev: BaselineEntry | None, entry: BaselineEntry) -> BaselineChange:
    if prev is None:
        lines = [f"+ {dc}.{k} = {_short(v)}" for dc, vals in entry.values.items() for k, v in sorted(vals.items())]
        return BaselineChange(case_id, "added", lines)
    lines = []
    for dc in sorted(set(prev.values) | set(entry.values)):
        old_vals, new_vals = prev.values.get(dc, {}), entry.values.get(dc, {})
        for k in sorted(set(old_vals) | set(new_vals)):
            if k not in old_vals:
                lines.append(f"+ {dc}.{k} = {_short(new_vals[k])}")
            elif k not in new_vals:
                lines.append(f"- {dc}.{k} (was {_short(old_vals[k])})")
            elif mismatches(new_vals[k], old_vals[k], ExactTolerance()):
                lines.append(f"~ {dc}.{k}: {_short(old_vals[k])} -> {_short(new_vals[k])}")
    if prev.case_hash != entry.case_hash:
        lines.append(f"~ case_hash: {prev.case_hash} -> {entry.case_hash}")
    return BaselineChange(case_id, "changed" if lines else "unchanged", lines)
