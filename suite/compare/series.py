"""Evaluate a spec's series on a run: one point per selected case, fitted trends, and the series' checks.

Everything is computed from the run's stored records (``results.jsonl``) and the case verdicts, so
``ranksuite report <run>`` re-renders a series without recomputing a case. The spec side (selectors, keys,
load-time validation) is :mod:`suite.spec.series`.

Fits (ordinary least squares; e.g. Draper & Smith, *Applied Regression Analysis*, 3rd ed. 1998, ch. 1).
Over the ``n`` points of a curve with ``x_min <= x <= x_max`` (both optional) and a number for x and y:

* ``power``: ``y = a x^b``. With ``u_i = ln x_i`` and ``v_i = ln y_i`` (every x and y must be > 0)::

      b = sum_i (u_i - mean u)(v_i - mean v) / sum_i (u_i - mean u)^2       exponent
      a = exp(mean v - b mean u)                                           prefactor

* ``linear``: ``y = a + b x``, the same formulas with ``u_i = x_i``, ``v_i = y_i``: ``slope`` b,
  ``intercept`` a.

Both report the coefficient of determination on the scale the line was fitted on (log-log for
``power``)::

      R^2 = 1 - sum_i (v_i - a' - b u_i)^2 / sum_i (v_i - mean v)^2        (a' = ln a for power, a for linear)

``R^2`` is ``null`` when every ``v_i`` is equal (the ratio is 0/0). A fit needs at least two distinct x;
otherwise (or with a non-positive value under ``power``) the curve has no fit and a check reading it is
an ``error`` that says why. Sums use ``math.fsum``, so ``y = 3 x^0.5`` gives ``b = 0.5`` and ``a = 3`` to
rounding.

Missing points. A point whose case crashed, has no record, was computed for another case hash, or lacks
a number at the x or a y key is missing with status ``error``; a point whose case was skipped, or was not
selected in this run (``--select``), is missing with status ``skipped``. Any missing point makes every
check of the series ``error`` (or ``skipped`` when all missing points are skipped ones) with a reason that
names each missing point; the check is not evaluated on the rest. Points are never dropped silently: the
report lists each, and the fit says how many points it used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from suite.compare.checks import MISSING, label, lookup
from suite.compare.registry import CHECKS, CheckContext, Verdict
from suite.spec.expand import Case
from suite.spec.series import axis_value, select_series_cases, theory_key_for

__all__ = ["Fit", "SeriesPoint", "SeriesResult", "evaluate_series", "fit_curve", "series_case_id"]

PointState = Literal["ok", "error", "skipped"]


def series_case_id(series_id: str) -> str:
    """The ``case_id`` of a series' verdicts: ``series:<id>``."""
    return f"series:{series_id}"


@dataclass(frozen=True)
class Fit:
    """A fitted trend of one curve. ``coef``: ``exponent``/``prefactor`` (power) or ``slope``/``intercept`` (linear)."""

    kind: Literal["power", "linear"]
    coef: dict[str, float]
    r2: float | None
    n_points: int
    x_min: float
    x_max: float

    def to_values(self) -> dict[str, Any]:
        """The fields check keys address as ``fit.<curve>.<field>``."""
        return {**self.coef, "r2": self.r2, "n_points": self.n_points, "x_min": self.x_min, "x_max": self.x_max}

    def predict(self, x: float) -> float:
        """The fitted line at ``x``."""
        if self.kind == "power":
            return self.coef["prefactor"] * x ** self.coef["exponent"]
        return self.coef["intercept"] + self.coef["slope"] * x


def _ols(u: Sequence[float], v: Sequence[float]) -> tuple[float, float, float | None]:
    """``(intercept, slope, R^2)`` of the least-squares line ``v = intercept + slope u`` (module doc)."""
    n = len(u)
    mu, mv = math.fsum(u) / n, math.fsum(v) / n
    suu = math.fsum((ui - mu) ** 2 for ui in u)
    suv = math.fsum((ui - mu) * (vi - mv) for ui, vi in zip(u, v))
    slope = suv / suu
    intercept = mv - slope * mu
    ss_tot = math.fsum((vi - mv) ** 2 for vi in v)
    ss_res = math.fsum((vi - intercept - slope * ui) ** 2 for ui, vi in zip(u, v))
    r2 = None if ss_tot == 0.0 else 1.0 - ss_res / ss_tot
    return intercept, slope, r2


def fit_curve(kind: Literal["power", "linear"], xs: Sequence[float], ys: Sequence[float]) -> Fit:
    """Least-squares fit of ``ys`` on ``xs`` (see the module doc for the formulas).

    Raises:
        ValueError: fewer than two distinct x, lengths differ, or (``power``) a value that is not > 0.
    """
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x values but {len(ys)} y values")
    if len(set(xs)) < 2:
        raise ValueError(f"a fit needs at least two distinct x; have {len(set(xs))}")
    if kind == "power":
        bad = [f"({x:g}, {y:g})" for x, y in zip(xs, ys) if not (x > 0 and y > 0)]
        if bad:
            raise ValueError(f"a power fit needs x > 0 and y > 0; got {', '.join(bad[:5])}")
        intercept, slope, r2 = _ols([math.log(x) for x in xs], [math.log(y) for y in ys])
        coef = {"exponent": slope, "prefactor": math.exp(intercept)}
    else:
        intercept, slope, r2 = _ols([float(x) for x in xs], [float(y) for y in ys])
        coef = {"slope": slope, "intercept": intercept}
    return Fit(kind, coef, r2, len(xs), float(min(xs)), float(max(xs)))


@dataclass(frozen=True)
class SeriesPoint:
    """One selected case as a point. ``y``/``predicted`` map curve ids to numbers (``None`` where missing).

    ``state``: ``ok``; ``error`` (the case crashed or a key gave no number); ``skipped`` (the case was
    skipped or not run). ``problems`` says why, one line each. ``relation`` is the theory check's relation
    (``equal`` or ``bound``) per predicted curve.
    """

    case_id: str
    x: float | None
    y: dict[str, float | None]
    predicted: dict[str, float | None]
    relation: dict[str, str]
    state: PointState
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeriesResult:
    """One evaluated series: its points (sorted by x), fits, the values its checks read, and its verdicts."""

    series: Any
    points: list[SeriesPoint]
    fits: dict[str, Fit]
    fit_errors: dict[str, str]
    values: dict[str, Any]
    verdicts: list[Verdict] = field(default_factory=list)
    problems: tuple[str, ...] = ()  # series-level problems (e.g. two points with the same x)

    @property
    def id(self) -> str:
        return self.series.id

    @property
    def missing(self) -> list[SeriesPoint]:
        """Points that are not complete."""
        return [p for p in self.points if p.state != "ok"]

    def fit_points(self, curve: str) -> list[SeriesPoint]:
        """The points the fit of ``curve`` may use: a number for x and y, inside the fit's x range."""
        fit = self.series.fit
        return [
            p for p in self.points
            if p.x is not None and p.y.get(curve) is not None
            and (fit.x_min is None or p.x >= fit.x_min) and (fit.x_max is None or p.x <= fit.x_max)
        ]


@dataclass(frozen=True)
class _SeriesRef:
    """What a check reads of ``ctx.case`` for a series: its id (``series:<id>``)."""

    id: str


def _prediction(curve_key: str, case: Case, verdicts: Sequence[Verdict]) -> tuple[float | None, str | None]:
    """The theory prediction of ``curve_key`` for ``case`` from its theory check's verdict, and the relation."""
    found = theory_key_for(curve_key, case)
    if found is None:
        return None, None
    check, rest = found
    verdict = next((v for v in verdicts if v.check == label(check)), None)
    if verdict is None or verdict.expected is None:
        return None, check.relation
    expected = lookup({"v": verdict.expected}, "v" + (f".{rest}" if rest else ""))
    if expected is MISSING or not isinstance(expected, (int, float)) or isinstance(expected, bool):
        return None, check.relation
    return expected, check.relation


def _point(series: Any, case: Case, rec: dict[str, Any] | None, ran: bool, verdicts: Sequence[Verdict]) -> SeriesPoint:
    curves = [c.name for c in series.y]
    empty: dict[str, float | None] = dict.fromkeys(curves)

    def missing(state: PointState, why: str, x: float | None = None) -> SeriesPoint:
        return SeriesPoint(case.id, x, dict(empty), dict(empty), {}, state, (why,))

    config_x, _ = axis_value(series.x, case, None)
    if not ran:
        return missing("skipped", "not selected in this run", config_x)
    if rec is None:
        return missing("error", "no result in this run (interrupted?)", config_x)
    if rec.get("status") == "error":
        err = rec.get("error") or {}
        return missing("error", f"case crashed: {err.get('type')}: {err.get('message')}", config_x)
    if rec.get("status") == "skipped":
        return missing("skipped", f"case skipped: {rec.get('skip_reason') or 'no reason given'}", config_x)
    if rec.get("case_hash") != case.hash:
        return missing("error", "the result was computed for another version of this case (hash differs)", config_x)
    values = rec.get("values") or {}
    problems: list[str] = []
    x, why = axis_value(series.x, case, values)
    if why is not None:
        problems.append(f"x: {why}")
    ys: dict[str, float | None] = {}
    predicted: dict[str, float | None] = {}
    relation: dict[str, str] = {}
    for curve in series.y:
        y, why = axis_value(curve, case, values)
        if why is not None:
            problems.append(f"{curve.name}: {why}")
        ys[curve.name] = y
        pred, rel = _prediction(curve.key, case, verdicts)
        predicted[curve.name] = pred
        if rel is not None:
            relation[curve.name] = rel
    return SeriesPoint(case.id, x, ys, predicted, relation, "error" if problems else "ok", tuple(problems))


def _incomplete_reason(result_points: Sequence[SeriesPoint], problems: Sequence[str]) -> str:
    missing = [p for p in result_points if p.state != "ok"]
    parts = [f"{p.case_id}: {'; '.join(p.problems)}" for p in missing[:4]]
    more = f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""
    head = f"{len(missing)} of {len(result_points)} point(s) missing: " + " | ".join(parts) + more if missing else ""
    return "series incomplete: " + "; ".join([t for t in (head, *problems) if t]) + "; not evaluated"


def evaluate_series(
    series: Any,
    spec_cases: Sequence[Case],
    run_case_ids: set[str],
    records: Mapping[str, dict[str, Any]],
    verdicts_by_case: Mapping[str, Sequence[Verdict]],
) -> SeriesResult:
    """Points, fits, values and verdicts of one series.

    Args:
        series: the validated series entry of the spec.
        spec_cases: every case of the spec (the selectors pick among them).
        run_case_ids: the cases this run was asked to compute; a selected case outside it is a
            ``skipped`` point ("not selected in this run").
        records: case id -> its latest record in the run.
        verdicts_by_case: case id -> its verdicts (theory verdicts give the predictions).

    Returns:
        The evaluated series; ``verdicts`` holds one verdict per series check (or one ``series`` verdict
        when it declares none), with ``case_id`` ``series:<id>``.
    """
    chosen = select_series_cases(series, spec_cases)
    points = [
        _point(series, c, records.get(c.id), c.id in run_case_ids, verdicts_by_case.get(c.id, ())) for c in chosen
    ]
    points.sort(key=lambda p: (p.x is None, p.x if p.x is not None else 0.0))
    problems: list[str] = []
    xs_seen: dict[float, str] = {}
    for p in points:
        if p.state == "ok" and p.x is not None:
            if p.x in xs_seen:
                problems.append(f"{xs_seen[p.x]} and {p.case_id} have the same x = {p.x:g} (narrow the selector)")
            xs_seen.setdefault(p.x, p.case_id)
    curves = [c.name for c in series.y]
    values: dict[str, Any] = {
        "x": [p.x for p in points],
        "cases": [p.case_id for p in points],
        "n_points": len(points),
        "y": {c: [p.y.get(c) for p in points] for c in curves},
        "predicted": {
            c: [p.predicted.get(c) for p in points] for c in curves if any(p.predicted.get(c) is not None for p in points)
        },
        "fit": {},
    }
    result = SeriesResult(series, points, {}, {}, values, problems=tuple(problems))
    if series.fit.kind != "none":
        for c in curves:
            used = result.fit_points(c)
            try:
                fit = fit_curve(series.fit.kind, [cast(float, p.x) for p in used], [cast(float, p.y[c]) for p in used])
            except ValueError as exc:
                result.fit_errors[c] = str(exc)
                continue
            result.fits[c] = fit
            values["fit"][c] = fit.to_values()
    result.verdicts.extend(_verdicts(result))
    return result


def _verdicts(result: SeriesResult) -> list[Verdict]:
    series, points = result.series, result.points
    cid = series_case_id(series.id)
    ctx = CheckContext(
        case=cast(Any, _SeriesRef(cid)), values=result.values, baseline_values=None, baseline_state="missing"
    )
    missing = result.missing
    status: Literal["error", "skipped"] | None = None
    if missing or result.problems:
        status = "error" if result.problems or any(p.state == "error" for p in missing) else "skipped"
    if not series.checks:
        if status is not None:
            return [Verdict(cid, "series", status, reason=_incomplete_reason(points, result.problems))]
        xs = [p.x for p in points if p.x is not None]
        span = f"; x in [{min(xs):g}, {max(xs):g}]" if xs else ""
        return [Verdict(cid, "series", "pass", reason=f"{len(points)} point(s){span}; the series declares no checks")]
    out = []
    for check in series.checks:
        name = label(check)
        measured = lookup(result.values, check.key)
        measured = None if measured is MISSING else measured
        if status is not None:
            out.append(Verdict(cid, name, status, measured, reason=_incomplete_reason(points, result.problems)))
            continue
        parts = check.key.split(".")
        if parts[0] == "fit" and len(parts) > 1 and parts[1] in result.fit_errors:
            out.append(Verdict(cid, name, "error", reason=f"no {series.fit.kind} fit of {parts[1]}: {result.fit_errors[parts[1]]}"))
            continue
        out.append(CHECKS.get(check.kind).fn(check, ctx))
    return out
