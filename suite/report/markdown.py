"""Render ``reports/<spec>.md`` from a run's records and verdicts (GitHub-flavoured Markdown, tabulate).

Layout: header (run, git, device, versions, seed), counts, failures first (expected vs measured and the
reason), then one section per series of the spec (a table of its points with theory predictions, a
figure, the fitted trend and the series' checks), then one section per metric with a summary table of
its cases and every check, and per-case detail tables folded in ``<details>``. Per-case figures (PNG),
series figures (``series-<id>.png``) and export files (a metric's ``export`` hook, e.g. GraphML) are
written to ``reports/<spec>/`` and linked. The Markdown is derived from ``results.jsonl``; nothing reads
it back.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from tabulate import tabulate

from suite.compare.engine import Comparison, exit_code
from suite.compare.registry import Verdict
from suite.compare.series import SeriesResult
from suite.metrics import METRICS
from suite.spec.expand import Case

__all__ = ["render_report"]

_ICON = {"pass": "✅ pass", "fail": "❌ fail", "error": "💥 error", "warn": "⚠️ warn", "skipped": "⏭ skipped", "new": "🆕 new", "stale": "♻️ stale"}
_EXIT_TEXT = {0: "all checks pass", 1: "a check failed", 2: "a case crashed", 4: "a baseline is missing or stale"}


def _cell(value: Any, limit: int = 90) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _fmt_bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _verdict_rows(verdicts: list[Verdict]) -> list[list[Any]]:
    return [
        [f"`{v.case_id}`", v.check, _ICON.get(v.status, v.status), _cell(v.expected), _cell(v.value), v.tolerance or "-", _cell(v.reason, 200)]
        for v in verdicts
    ]


_VERDICT_HEADERS = ["case", "check", "status", "expected", "measured", "tolerance", "why"]


def _file_name(case: Case, suffix: str) -> str:
    """``<case id>-<suffix>`` reduced to ``[A-Za-z0-9_.-]``: the per-case prefix of figures and exports."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{case.id}-{suffix}")


def _figures(mdef: Any, case: Case, values: dict[str, Any], figure_dir: Path | None, link_prefix: str) -> list[str]:
    """Save the metric's figures for one case as PNGs in ``figure_dir`` and return Markdown image links."""
    if mdef.plot is None or figure_dir is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure_dir.mkdir(parents=True, exist_ok=True)
    links = []
    for i, (title, fig) in enumerate(mdef.plot(values)):
        name = _file_name(case, str(i)) + ".png"
        tmp = figure_dir / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=90, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, figure_dir / name)
        links.append(f"![{title}]({link_prefix}/{name})")
    return links


_FORMAT_NAMES = {
    "graphml": "GraphML", "json": "JSON", "csv": "CSV", "tsv": "TSV", "gexf": "GEXF", "dot": "DOT", "txt": "text",
}


def _exports(mdef: Any, case: Case, values: dict[str, Any], figure_dir: Path | None, link_prefix: str) -> list[str]:
    """Write the metric's export files for one case next to its figures (atomically) and return link lines.

    Files are named like the figures (``<case id>-<export name>``); files sharing a stem get one line,
    labelled by the stem's last ``-``-separated word: ``Graph: [GraphML](...) · [JSON](...)``.
    """
    if getattr(mdef, "export", None) is None or figure_dir is None:
        return []
    files = mdef.export(values)
    if not files:
        return []
    figure_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[str]] = {}
    for export_name, text in files:
        name = _file_name(case, export_name)
        tmp = figure_dir / f".{name}.tmp"
        try:
            tmp.write_text(text, encoding="utf-8", newline="")
            os.replace(tmp, figure_dir / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        stem, _, ext = export_name.partition(".")
        fmt = _FORMAT_NAMES.get(ext.lower(), ext.upper() or export_name)
        groups.setdefault(stem, []).append(f"[{fmt}]({link_prefix}/{name})")
    lines = []
    for stem, links in groups.items():
        label = stem.rsplit("-", 1)[-1].replace("_", " ").capitalize() or stem
        lines += [f"{label}: " + " · ".join(links), ""]
    return lines


def _save_figure(fig: Any, figure_dir: Path, name: str) -> None:
    import matplotlib.pyplot as plt

    figure_dir.mkdir(parents=True, exist_ok=True)
    tmp = figure_dir / f".{name}.tmp.png"
    try:
        fig.savefig(tmp, dpi=90, bbox_inches="tight")
        os.replace(tmp, figure_dir / name)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def _selector_text(series: Any) -> str:
    def axis(name: str, patterns: list[str]) -> str:
        return f"{name} " + ", ".join(f"`{p}`" for p in patterns)

    return " or ".join(
        "; ".join(axis(n, getattr(sel, n)) for n in ("model", "dataset", "metric") if getattr(sel, n) != ["*"]) or "every case"
        for sel in series.cases
    )


def _axis_text(axis: Any) -> str:
    """``model.widths.1``, ``len(model.widths) - 1``: the key with its reduce and offset."""
    text = f"`{axis.key}`" if axis.reduce is None else f"{axis.reduce}(`{axis.key}`)"
    if axis.offset:
        text += f" {'-' if axis.offset < 0 else '+'} {abs(axis.offset):g}"
    return text


def _series_section(result: SeriesResult, figure_dir: Path | None, link_prefix: str) -> list[str]:
    """One series: its points (table), figure, fitted trend and checks."""
    from suite.report.series import fit_table, point_table, series_figure, series_file_name

    series = result.series
    lines = [f"### Series `{series.id}`" + (f": {series.title}" if series.title else ""), ""]
    if series.description:
        lines += [series.description.strip(), ""]
    missing = result.missing
    count = f"{len(result.points)} point(s)" + (f", **{len(missing)} missing**" if missing else "")
    curves = ", ".join(_axis_text(c) + (f" as `{c.name}`" if c.name != c.key else "") for c in series.y)
    lines += [f"Cases: {_selector_text(series)} ({count}). x = {_axis_text(series.x)}; y = {curves}.", ""]
    for problem in result.problems:
        lines += [f"- 💥 {problem}"]
    if result.problems:
        lines.append("")
    headers, rows = point_table(result)
    lines += [_table(headers, rows), ""]
    if figure_dir is not None and result.points:
        name = series_file_name(series.id)
        _save_figure(series_figure(result), figure_dir, name)
        lines += [f"![{series.title or series.id}]({link_prefix}/{name})", ""]
    if series.fit.kind != "none":
        formula = (
            "y = a x^b by ordinary least squares on (ln x, ln y); R^2 on the log-log scale"
            if series.fit.kind == "power"
            else "y = a + b x by ordinary least squares; R^2 of that line"
        )
        lo = "-inf" if series.fit.x_min is None else f"{series.fit.x_min:g}"
        hi = "inf" if series.fit.x_max is None else f"{series.fit.x_max:g}"
        window = f", over points with x in [{lo}, {hi}]" if series.fit.x_min is not None or series.fit.x_max is not None else ""
        lines += [f"Fit ({series.fit.kind}): {formula}{window}.", ""]
        headers, rows = fit_table(result)
        lines += [_table(headers, rows), ""]
    lines += [_table(_VERDICT_HEADERS, _verdict_rows(result.verdicts)), ""]
    return lines


def _training_section(cases: list[Case], comparison: Comparison) -> list[str]:
    """One row per trained model: how it was trained and how well it fits its training data."""
    rows, seen = [], set()
    for case in cases:
        train = getattr(case.model, "train", None)
        rec = comparison.records.get(case.id, {}).get("training")
        if train is None or rec is None or case.model.id in seen:
            continue
        seen.add(case.model.id)
        rows.append([
            f"`{case.model.id}`",
            f"`{train.dataset}`",
            f"{train.optimizer} lr {train.lr:g}, batch {train.batch_size}, {train.epochs} epochs, seed {train.seed}, {train.dtype}",
            f"{100 * rec['final_train_accuracy']:.2f}%" if isinstance(rec.get("final_train_accuracy"), (int, float)) else "-",
            f"{rec['time_s']:.1f} s" if isinstance(rec.get("time_s"), (int, float)) else "-",
            f"hit (`{rec.get('key', '?')}`)" if rec.get("cache_hit") else f"trained (`{rec.get('key', '?')}`)",
        ])
    if not rows:
        return []
    headers = ["model", "train data", "schedule", "train accuracy", "training time", "weights cache"]
    return ["## Trained models", "", _table(headers, rows), ""]


def render_report(
    spec: Any, cases: list[Case], comparison: Comparison, meta: dict[str, Any], figure_dir: Path | None = None
) -> str:
    """The Markdown report of one run of ``spec``; figures and export files go to ``figure_dir`` (a folder
    next to the report), named ``<case id>-<i>.png`` and ``<case id>-<export name>``."""
    link_prefix = figure_dir.name if figure_dir is not None else ""
    counts = comparison.counts()
    code = exit_code(comparison)
    versions = meta.get("versions", {})
    git = meta.get("git", {})
    sha = (git.get("sha") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    lines = [
        f"# ranksuite report: `{spec.name}`",
        "",
        f"> {spec.reference}",
        "",
        _table(
            ["run", "git", "device", "tier", "seed", "versions"],
            [[
                f"`{comparison.run_id}`",
                f"`{sha}`",
                f"{meta.get('device_name', '?')} (`{meta.get('device', '?')}`)",
                spec.tier,
                str(spec.defaults.seed),
                ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
            ]],
        ),
        "",
        f"**Result: {_EXIT_TEXT.get(code, str(code))}** (exit {code}) — "
        + ", ".join(f"{n} {k}" for k, n in counts.items())
        + f" over {len(cases)} case(s)"
        + (f" and {len(comparison.series)} series." if comparison.series else "."),
        "",
    ]
    problems = [v for v in comparison.verdicts if v.status in ("fail", "error", "stale", "new")]
    order = {"error": 0, "fail": 1, "stale": 2, "new": 3}
    if problems:
        problems.sort(key=lambda v: order[v.status])
        lines += ["## Needs attention", "", _table(_VERDICT_HEADERS, _verdict_rows(problems)), ""]
        for cid in comparison.crashed():
            tb = (comparison.records[cid].get("error") or {}).get("traceback", "")
            lines += [f"<details><summary>traceback of <code>{cid}</code></summary>", "", "```", tb.rstrip(), "```", "", "</details>", ""]
    warns = [v for v in comparison.verdicts if v.status == "warn"]
    if warns:
        lines += ["## Warnings", "", _table(_VERDICT_HEADERS, _verdict_rows(warns)), ""]
    lines += _training_section(cases, comparison)
    if comparison.series:
        lines += ["## Series", ""]
        for result in comparison.series:
            lines += _series_section(result, figure_dir, link_prefix)
    by_metric: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        by_metric[case.metric.id].append(case)
    verdicts_by_case: dict[str, list[Verdict]] = defaultdict(list)
    for v in comparison.verdicts:
        verdicts_by_case[v.case_id].append(v)
    for metric_id, metric_cases in by_metric.items():
        metric = metric_cases[0].metric
        mdef = METRICS.get(metric.kind)
        lines += [f"## Metric `{metric_id}` ({metric.kind})", "", mdef.doc, ""]
        if metric.description:
            lines += [metric.description, ""]
        params = json.dumps(metric.params.model_dump(mode="json"), separators=(", ", ": "))
        lines += [f"Parameters: `{params}`", ""]
        summary_rows, summary_headers = [], ["case", "status", "time", "peak mem"]
        for case in metric_cases:
            rec = comparison.records.get(case.id, {})
            statuses = sorted({v.status for v in verdicts_by_case[case.id]}, key=lambda s: ["error", "fail", "stale", "new", "warn", "skipped", "pass"].index(s))
            row: dict[str, Any] = {
                "case": f"`{case.id}`",
                "status": _ICON.get(statuses[0], statuses[0]) if statuses else "-",
                "time": f"{rec['time_s']:.3f} s" if isinstance(rec.get("time_s"), (int, float)) else "-",
                "peak mem": _fmt_bytes(rec.get("peak_mem_bytes")),
            }
            if rec.get("status") == "ok" and mdef.summarize is not None:
                for k, v in mdef.summarize(rec["values"]).items():
                    if k not in summary_headers:
                        summary_headers.append(k)
                    row[k] = _cell(v)
            summary_rows.append(row)
        lines += [_table(summary_headers, [[r.get(h, "-") for h in summary_headers] for r in summary_rows]), ""]
        case_verdicts = [v for c in metric_cases for v in verdicts_by_case[c.id]]
        if case_verdicts:
            lines += ["### Checks", "", _table(_VERDICT_HEADERS, _verdict_rows(case_verdicts)), ""]
            for v in case_verdicts:
                shown = {k: val for k, val in v.details.items() if k != "violations"}
                if shown:
                    lines += [f"- `{v.case_id}` {v.check}: " + "; ".join(f"{k} = {_cell(val, 120)}" for k, val in shown.items())]
            if any(v.details for v in case_verdicts):
                lines.append("")
        for case in metric_cases:
            rec = comparison.records.get(case.id, {})
            if rec.get("status") == "ok":
                links = _figures(mdef, case, rec["values"], figure_dir, link_prefix)
                exports = _exports(mdef, case, rec["values"], figure_dir, link_prefix)
                if links or exports:
                    lines += [f"**`{case.id}`**", ""] + ([*links, ""] if links else []) + exports
        if mdef.details is not None:
            for case in metric_cases:
                rec = comparison.records.get(case.id, {})
                if rec.get("status") != "ok":
                    continue
                headers, rows = mdef.details(rec["values"])
                lines += [f"<details><summary><code>{case.id}</code> per layer</summary>", "", _table(headers, rows), "", "</details>", ""]
    lines += ["---", f"Rendered by ranksuite {versions.get('ranksuite', '')} from `runs/{comparison.run_id}/results.jsonl`.", ""]
    return "\n".join(lines)
