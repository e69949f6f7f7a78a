"""Tables and the figure of one evaluated series (:class:`suite.compare.series.SeriesResult`).

Pure functions of the result: :func:`point_table` (one row per selected case: x, every curve, the theory
prediction where a case has one, and why a point is missing), :func:`fit_table` (the fitted trend of
every curve) and :func:`series_figure` (measured curves solid with markers, predictions dashed, fitted
lines dotted over the x range they were fitted on). :mod:`suite.report.markdown` lays them out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from suite.compare.series import SeriesResult

__all__ = ["fit_table", "point_table", "series_figure", "series_file_name"]


def series_file_name(series_id: str) -> str:
    """File name of a series' figure: ``series-<id>.png`` (case figures end in ``-<i>.png``)."""
    return f"series-{series_id}.png"


def _num(value: float | None, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.{digits}g}"


def _theory_cell(measured: float | None, predicted: float | None, relation: str | None) -> str:
    if predicted is None:
        return "-"
    text = ("≤ " if relation == "bound" else "") + _num(predicted)
    if measured is None:
        return text
    if measured == predicted and (relation != "bound" or predicted == 0):
        return text + " (=)"  # a zero bound attained has no ratio
    ratio = f"{measured / predicted:.4g}" if predicted else "inf"
    return f"{text} (measured/predicted {ratio})"


def point_table(result: SeriesResult) -> tuple[list[str], list[list[str]]]:
    """``(headers, rows)``: one row per point in x order, missing points included with the reason."""
    series = result.series
    predicted = [c.name for c in series.y if c.name in result.values["predicted"]]
    headers = ["case", series.x.text]
    for curve in series.y:
        headers.append(curve.text)
        if curve.name in predicted:
            headers.append(f"{curve.text} (theory)")
    headers.append("point")
    rows = []
    for p in result.points:
        row = [f"`{p.case_id}`", _num(p.x)]
        for curve in series.y:
            row.append(_num(p.y.get(curve.name)))
            if curve.name in predicted:
                row.append(_theory_cell(p.y.get(curve.name), p.predicted.get(curve.name), p.relation.get(curve.name)))
        status = {"ok": "ok", "error": "💥 missing", "skipped": "⏭ missing"}[p.state]
        row.append(status + (": " + "; ".join(p.problems) if p.problems else ""))
        rows.append([cell.replace("|", "\\|") for cell in row])
    return headers, rows


def fit_table(result: SeriesResult) -> tuple[list[str], list[list[str]]]:
    """``(headers, rows)``: the fit of every curve (coefficients, R^2, points used, x range), or why none."""
    kind = result.series.fit.kind
    coef = ["exponent b", "prefactor a"] if kind == "power" else ["slope b", "intercept a"]
    headers = ["curve", *coef, "R^2", "points used", "x range"]
    rows = []
    for curve in result.series.y:
        fit = result.fits.get(curve.name)
        if fit is None:
            why = result.fit_errors.get(curve.name, "not fitted")
            rows.append([f"{curve.text} (`{curve.name}`)", f"no fit: {why}", "-", "-", "-", "-"])
            continue
        values = list(fit.coef.values())
        offered = len(result.points)
        rows.append([
            f"{curve.text} (`{curve.name}`)",
            f"{values[0]:.4f}",
            f"{values[1]:.4g}",
            "-" if fit.r2 is None else f"{fit.r2:.5f}",
            f"{fit.n_points} of {offered}",
            f"[{_num(fit.x_min)}, {_num(fit.x_max)}]",
        ])
    return headers, rows


def series_figure(result: SeriesResult) -> Any:
    """A matplotlib Figure (Agg) of the series: curves, dashed predictions, dotted fitted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result.series
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2", "C3"])
    for i, curve in enumerate(series.y):
        color = colors[i % len(colors)]
        pts = [(p.x, p.y[curve.name]) for p in result.points if p.x is not None and p.y.get(curve.name) is not None]
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", color=color, label=curve.text, ms=4)
        preds = [(p.x, p.predicted.get(curve.name)) for p in result.points if p.x is not None and p.predicted.get(curve.name) is not None]
        if preds:
            ax.plot(
                [x for x, _ in preds], [y for _, y in preds], "s--", color=color, mfc="none", ms=8, lw=1, alpha=0.8,
                label=f"{curve.text} (theory)",
            )
        fit = result.fits.get(curve.name)
        if fit is not None:
            n = 50
            if series.scale in ("loglog", "logx") and fit.x_min > 0:
                xs = [fit.x_min * (fit.x_max / fit.x_min) ** (k / (n - 1)) for k in range(n)]
            else:
                xs = [fit.x_min + (fit.x_max - fit.x_min) * k / (n - 1) for k in range(n)]
            if fit.kind == "power":
                text = f"fit {curve.name}: {fit.coef['prefactor']:.3g} x^{fit.coef['exponent']:.3f}"
            else:
                text = f"fit {curve.name}: {fit.coef['intercept']:.4g} + {fit.coef['slope']:.4g} x"
            text += "" if fit.r2 is None else f" (R²={fit.r2:.4f})"
            ax.plot(xs, [fit.predict(x) for x in xs], "-.", color="0.2", lw=1.3, alpha=0.9, label=text)
    missing_x = [p.x for p in result.points if p.state != "ok" and p.x is not None]
    for x in missing_x:
        ax.axvline(x, color="red", ls="-", lw=0.8, alpha=0.4)
    if series.scale in ("loglog", "logx"):
        ax.set_xscale("log")
    if series.scale in ("loglog", "logy"):
        ax.set_yscale("log")
    ax.set_xlabel(series.x.text)
    ax.set_ylabel(series.y_label or (series.y[0].text if len(series.y) == 1 else "value"))
    title = series.title or series.id
    missing = len(result.missing)
    if missing:
        title += f"\n({missing} of {len(result.points)} point(s) missing; red lines mark those with a known x)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # every point missing: nothing to label
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
