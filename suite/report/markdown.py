"""Render ``reports/<spec>.md`` from a run's records and verdicts (GitHub-flavoured Markdown, tabulate).

Layout: header (run, git, device, versions, seed), counts, failures first (expected vs measured and the
reason), then one section per metric with a summary table of its cases and every check, and per-case
detail tables folded in ``<details>``. The Markdown is derived from ``results.jsonl``; nothing reads it back.
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
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{case.id}-{i}") + ".png"
        tmp = figure_dir / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=90, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, figure_dir / name)
        links.append(f"![{title}]({link_prefix}/{name})")
    return links


def render_report(
    spec: Any, cases: list[Case], comparison: Comparison, meta: dict[str, Any], figure_dir: Path | None = None
) -> str:
    """The Markdown report of one run of ``spec``; figures go to ``figure_dir`` (a folder next to the report)."""
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
        + f" over {len(cases)} case(s).",
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
                if links:
                    lines += [f"**`{case.id}`**", "", *links, ""]
        if mdef.details is not None:
            for case in metric_cases:
                rec = comparison.records.get(case.id, {})
                if rec.get("status") != "ok":
                    continue
                headers, rows = mdef.details(rec["values"])
                lines += [f"<details><summary><code>{case.id}</code> per layer</summary>", "", _table(headers, rows), "", "</details>", ""]
    lines += ["---", f"Rendered by ranksuite {versions.get('ranksuite', '')} from `runs/{comparison.run_id}/results.jsonl`.", ""]
    return "\n".join(lines)
