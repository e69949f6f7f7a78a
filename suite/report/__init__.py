"""Reports rendered from results and verdicts."""

from suite.report.markdown import render_report

__all__ = ["render_report"]
