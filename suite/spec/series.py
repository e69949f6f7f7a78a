"""Cross-case series in a spec: which cases form a curve, what is plotted, what is fitted, what is checked.

A series picks expanded cases of the spec and turns each into one point ``(x, y_1, ..., y_k)``::

    series:
      - id: width_digits
        title: "Hessian ranks vs hidden width"
        cases: {model: ["lin_w*"], dataset: [digits100], metric: [hessian_ce]}   # or a list of such selectors
        x: {key: model.widths.1, label: "hidden width w"}
        y:
          - {id: H_L, key: ranks.2, label: "rank H_L"}
        y_label: rank                      # optional; default: the label of a single curve
        scale: linear                      # linear | loglog | logx | logy
        fit: power                         # none | power | linear, or {kind: power, x_min: 1000, x_max: null}
        checks:
          - {kind: range, key: fit.H_L.exponent, min: 0.45, max: 0.7, why: "..."}

Selectors. ``model``, ``dataset`` and ``metric`` each take one fnmatch pattern or a list of them (omitted:
``*``); a case is selected when each of its three ids matches one pattern of its axis. Several selectors
select the union. Points keep the spec's case order until they are sorted by x.

Keys (``x.key`` and ``y[].key``). ``model.<path>``, ``dataset.<path>`` and ``metric.<path>`` address the
case's spec entries (``model.widths.1``, ``dataset.n``, ``metric.params.loss``); any other key addresses
the metric's values, dotted like check keys (``n_params``, ``ranks.2``). The value must be a number, or a
list of numbers reduced by ``reduce`` (``len``, ``sum``, ``min``, ``max``); ``offset`` is added last
(the depth ``L`` of an MLP: ``{key: model.widths, reduce: len, offset: -1}``).

Curves. Each ``y`` entry is one curve, named by ``id`` (defaults to its key; required when the key has a
dot, since check keys address curves by id). When a case has a ``theory`` check on a curve's key (or on a
list the key indexes into, e.g. ``ranks`` for ``ranks.2``), the theory's prediction is carried with the
point, tabulated and drawn dashed.

Checks. A series' checks read the series' own values, with the same check kinds as cases (``range`` and
``monotone``; ``baseline`` and ``theory`` need a case):

    x                      the x values, sorted ascending (one per point)
    y.<curve>              that curve's values in the same order (null where the point is missing)
    predicted.<curve>      the theory's predictions in the same order (null where none)
    fit.<curve>.<field>    power fit: exponent, prefactor, r2, n_points, x_min, x_max
                           linear fit: slope, intercept, r2, n_points, x_min, x_max
    n_points               the number of points (selected cases)

The fit itself is documented in :mod:`suite.compare.series`. What pydantic cannot see (ids a selector
names, a selector that selects nothing, config keys that resolve to nothing, check keys that address no
series value, two points with the same config x) is reported by :func:`series_errors`, with a line number.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from suite.keys import walk
from suite.registry import unknown_name_message
from suite.spec.base import SpecModel

if TYPE_CHECKING:
    from suite.spec.expand import Case

__all__ = [
    "CONFIG_PREFIXES",
    "FIT_FIELDS",
    "SERIES_CHECK_KINDS",
    "SeriesAxis",
    "SeriesCurve",
    "SeriesFit",
    "SeriesSelector",
    "axis_value",
    "is_config_key",
    "patch_json_schema",
    "select_series_cases",
    "series_errors",
]

SERIES_CHECK_KINDS = ("range", "monotone")  # check kinds that only read ctx.values (no case, no baseline)
CONFIG_PREFIXES = ("model", "dataset", "metric")
FIT_FIELDS: dict[str, tuple[str, ...]] = {
    "power": ("exponent", "prefactor", "r2", "n_points", "x_min", "x_max"),
    "linear": ("slope", "intercept", "r2", "n_points", "x_min", "x_max"),
    "none": (),
}
_WILDCARDS = set("*?[")


class SeriesSelector(SpecModel):
    """Cases whose model, dataset and metric ids each match one fnmatch pattern of the axis."""

    model: list[str] = Field(["*"], min_length=1, description="Model id patterns (one pattern or a list).")
    dataset: list[str] = Field(["*"], min_length=1, description="Dataset id patterns ('none' for data-free cases).")
    metric: list[str] = Field(["*"], min_length=1, description="Metric id patterns.")

    @field_validator("model", "dataset", "metric", mode="before")
    @classmethod
    def _one_pattern(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def matches(self, case_id: str) -> bool:
        """Whether the case id ``model/dataset/metric`` is selected."""
        parts = case_id.split("/")
        axes = (self.model, self.dataset, self.metric)
        return len(parts) == 3 and all(any(fnmatch.fnmatchcase(v, p) for p in pats) for v, pats in zip(parts, axes))


class SeriesAxis(SpecModel):
    """One number per case: from the case's spec entries (``model.``/``dataset.``/``metric.``) or its values."""

    key: str = Field(..., min_length=1, description="model.<path>, dataset.<path>, metric.<path>, or a dotted key of the values.")
    label: str | None = Field(None, description="Axis or legend label (default: the key).")
    reduce: Literal["len", "sum", "min", "max"] | None = Field(None, description="Reduce a list of numbers to one.")
    offset: float = Field(0.0, description="Added after reduce (e.g. depth = len(widths) - 1).")

    @property
    def text(self) -> str:
        """The label, or the key."""
        return self.label or self.key


class SeriesCurve(SeriesAxis):
    """One curve: a key read from every point, named by ``id`` in check keys (``fit.<id>.exponent``)."""

    id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=64,
        description="Curve name in check keys; defaults to the key (required when the key has a dot).",
    )

    @model_validator(mode="after")
    def _named(self) -> SeriesCurve:
        if self.id is None and "." in self.key:
            raise ValueError(f"the curve of key {self.key!r} needs an id (check keys address curves as fit.<id>.<field>)")
        return self

    @property
    def name(self) -> str:
        """The curve id (``id`` or the key)."""
        return self.id or self.key


class SeriesFit(SpecModel):
    """Least-squares trend of every curve over the points with ``x_min <= x <= x_max``."""

    kind: Literal["none", "power", "linear"] = Field(
        "none", description="power: y = a x^b by OLS on (log x, log y); linear: y = a + b x by OLS.",
    )
    x_min: float | None = Field(None, description="Fit only points with x >= x_min.")
    x_max: float | None = Field(None, description="Fit only points with x <= x_max.")

    @model_validator(mode="after")
    def _range(self) -> SeriesFit:
        if self.x_min is not None and self.x_max is not None and self.x_min > self.x_max:
            raise ValueError(f"x_min {self.x_min} is larger than x_max {self.x_max}")
        if self.kind == "none" and (self.x_min is not None or self.x_max is not None):
            raise ValueError("x_min/x_max restrict a fit; give kind: power or linear")
        return self


def series_fields(check: Any) -> dict[str, Any]:
    """Fields of the ``Series`` spec model (built in :func:`suite.spec.schema.spec_model` with the check union)."""
    return dict(
        id=(str, Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64, description="Series id (report section, figure name).")),
        title=(str | None, Field(None, description="Heading of the report section and the figure.")),
        description=(str | None, None),
        cases=(list[SeriesSelector], Field(..., min_length=1, description="One selector or a list (union).")),
        x=(SeriesAxis, ...),
        y=(list[SeriesCurve], Field(..., min_length=1, description="One curve or a list.")),
        y_label=(str | None, Field(None, description="Label of the y axis (default: the curve's label with one curve).")),
        scale=(Literal["linear", "loglog", "logx", "logy"], Field("linear", description="Axes of the figure.")),
        fit=(SeriesFit, Field(default_factory=SeriesFit, description="none | power | linear, or {kind, x_min, x_max}.")),
        checks=(list[check], Field(default_factory=list, description="Checks on the series values (range, monotone).")),
    )


def series_validators() -> dict[str, Any]:
    """Before-validators of the ``Series`` model: one mapping for a list, a bare fit kind for a fit."""

    def one_or_list(cls: Any, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    def fit_kind(cls: Any, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    def unique_curves(cls: Any, value: Any) -> Any:
        names = [c.name for c in value]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"curve ids must be unique; repeated: {', '.join(dups)}")
        return value

    return {
        "_one_or_list": field_validator("cases", "y", mode="before")(one_or_list),
        "_fit_kind": field_validator("fit", mode="before")(fit_kind),
        "_unique_curves": field_validator("y", mode="after")(unique_curves),
    }


def patch_json_schema(schema: dict[str, Any]) -> None:
    """Let the JSON schema accept the shorthands the validators accept (one mapping, a bare fit kind)."""
    defs = schema.get("$defs", {})
    series = defs.get("Series")
    if series is None:
        return
    props = series["properties"]
    for name, ref in (("cases", "SeriesSelector"), ("y", "SeriesCurve")):
        item = {"$ref": f"#/$defs/{ref}"}
        props[name] = {"anyOf": [item, {"type": "array", "items": item, "minItems": 1}], "description": props[name].get("description", "")}
    props["fit"] = {
        "anyOf": [{"enum": ["none", "power", "linear"], "type": "string"}, {"$ref": "#/$defs/SeriesFit"}],
        "description": props["fit"].get("description", ""),
    }
    selector = defs.get("SeriesSelector", {}).get("properties", {})
    for axis, prop in selector.items():
        selector[axis] = {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
            "description": prop.get("description", ""),
        }


# ---------------------------------------------------------------------------------------------- values


def is_config_key(key: str) -> bool:
    """Whether ``key`` addresses the case's spec entries (``model.``, ``dataset.``, ``metric.``)."""
    return key.split(".", 1)[0] in CONFIG_PREFIXES and "." in key


def _config(case: Case, prefix: str) -> Any:
    entry = getattr(case, prefix)
    return None if entry is None else entry.model_dump(mode="json")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def axis_value(axis: SeriesAxis, case: Case, values: dict[str, Any] | None) -> tuple[float | None, str | None]:
    """The number ``axis`` reads from ``case`` (config keys) or its ``values`` (other keys).

    Returns ``(number, None)`` or ``(None, reason)``. ``values=None`` means "not computed": a value key
    then gives ``(None, None)`` (used by load-time validation, which only resolves config keys).
    """
    parts = axis.key.split(".")
    if is_config_key(axis.key):
        node = _config(case, parts[0])
        if node is None:
            return None, f"case {case.id} has no {parts[0]}"
        value, why = walk(node, parts[1:])
        if why is not None:
            return None, f"{axis.key}: {why}"
    else:
        if values is None:
            return None, None
        value, why = walk(values, parts)
        if why is not None:
            return None, f"key {axis.key!r} not in the values: {why}"
    if axis.reduce is not None:
        if not isinstance(value, list) or not all(_number(v) for v in value):
            return None, f"{axis.key} is {_short(value)}; reduce: {axis.reduce} needs a list of numbers"
        if not value and axis.reduce != "len":
            return None, f"{axis.key} is an empty list; reduce: {axis.reduce} needs numbers"
        value = {"len": len, "sum": sum, "min": min, "max": max}[axis.reduce](value)
    if not _number(value):
        hint = " (a list: address one element, e.g. key.0, or give reduce:)" if isinstance(value, list) else ""
        return None, f"{axis.key} is {_short(value)}, not a number{hint}"
    if isinstance(value, float) and not math.isfinite(value):
        return None, f"{axis.key} is {value}"
    return value + axis.offset if axis.offset else value, None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def select_series_cases(series: Any, cases: Sequence[Case]) -> list[Case]:
    """The cases of ``cases`` (in their order) that one of the series' selectors matches."""
    return [c for c in cases if any(sel.matches(c.id) for sel in series.cases)]


# ---------------------------------------------------------------------------------------------- load-time checks


def _selector_errors(path: tuple, selector: SeriesSelector, spec: Any) -> list[tuple[tuple, str]]:
    out: list[tuple[tuple, str]] = []
    for axis, section in (("model", "models"), ("dataset", "datasets"), ("metric", "metrics")):
        defined = [e.id for e in getattr(spec, section)] + (["none"] if axis == "dataset" else [])
        for k, pattern in enumerate(getattr(selector, axis)):
            if _WILDCARDS & set(pattern):
                if not any(fnmatch.fnmatchcase(d, pattern) for d in defined):
                    out.append(((*path, axis, k), f"pattern {pattern!r} matches no {axis} id; defined: {', '.join(defined)}"))
            elif pattern not in defined:
                out.append(((*path, axis, k), unknown_name_message(f"{axis} id", pattern, defined)))
    return out


def _check_key_error(key: str, series: Any, spec: Any, cases: Sequence[Case]) -> str | None:
    """Why ``key`` addresses no value of ``series`` (with a did-you-mean), or ``None`` when it does."""
    parts = key.split(".")
    curves = [c.name for c in series.y]
    tops = ["x", "y", "predicted", "fit", "n_points"]

    def unknown(what: str, name: str, valid: list[str]) -> str:
        return f"{key!r}: {unknown_name_message(what, name, valid)}"

    if parts[0] not in tops:
        return unknown("series value", parts[0], tops) + " (then .<curve id> for y/predicted, .<curve id>.<field> for fit)"
    if parts[0] in ("x", "n_points"):
        return None if len(parts) == 1 or (parts[0] == "x" and len(parts) == 2 and parts[1].lstrip("-").isdigit()) else f"{key!r}: {parts[0]} has no sub-keys"
    if len(parts) < 2:
        return f"{key!r}: name a curve: {parts[0]}.<curve id> with curve ids {', '.join(curves)}"
    if parts[1] not in curves:
        return unknown("curve id", parts[1], curves)
    if parts[0] == "fit":
        kind = series.fit.kind
        if kind == "none":
            return f"{key!r}: the series has no fit (fit: none); give fit: power or fit: linear"
        fields = list(FIT_FIELDS[kind])
        if len(parts) != 3:
            return f"{key!r}: address one fit field: fit.{parts[1]}.<field> with field one of {', '.join(fields)}"
        if parts[2] not in fields:
            return unknown(f"{kind} fit field", parts[2], fields)
        return None
    if len(parts) > 3 or (len(parts) == 3 and not parts[2].lstrip("-").isdigit()):
        return f"{key!r}: {parts[0]}.{parts[1]} is a list of numbers (one per point); only an index may follow"
    if parts[0] == "predicted":
        curve = next(c for c in series.y if c.name == parts[1])
        if not any(theory_key_for(curve.key, c) is not None for c in cases):
            return f"{key!r}: no selected case has a theory check on {curve.key!r} (or on a list it indexes into)"
    return None


def theory_key_for(key: str, case: Case) -> tuple[Any, str] | None:
    """The case's first ``theory`` check whose key is ``key`` or a prefix of it, with the rest of the path.

    ``ranks.2`` is predicted by a theory check on ``ranks`` (rest ``"2"``) as well as by one on ``ranks.2``
    (rest ``""``). ``None`` when the case has no such check.
    """
    for check in case.checks:
        if check.kind != "theory":
            continue
        if check.key == key:
            return check, ""
        if key.startswith(check.key + "."):
            return check, key[len(check.key) + 1 :]
    return None


def series_errors(spec: Any, cases: Sequence[Case]) -> list[tuple[tuple, str]]:
    """Problems of ``spec.series`` that need the expanded ``cases``: ``(data path, message)`` each.

    Unknown ids in selectors (with suggestions), patterns matching no id, a series selecting no case,
    duplicate series ids, config keys (``model.``/``dataset.``/``metric.``) that do not resolve to a number
    for a selected case, two points with the same config x, and check keys that address no series value.
    """
    out: list[tuple[tuple, str]] = []
    seen: dict[str, int] = {}
    for i, series in enumerate(getattr(spec, "series", []) or []):
        base = ("series", i)
        if series.id in seen:
            out.append(((*base, "id"), f"duplicate series id {series.id!r} (first is series[{seen[series.id]}])"))
        seen.setdefault(series.id, i)
        bad_selector = False
        for j, selector in enumerate(series.cases):
            problems = _selector_errors((*base, "cases", j), selector, spec)
            out.extend(problems)
            bad_selector |= bool(problems)
        if bad_selector:
            continue
        chosen = select_series_cases(series, cases)
        if not chosen:
            sel = "; ".join(f"model {s.model}, dataset {s.dataset}, metric {s.metric}" for s in series.cases)
            out.append(((*base, "cases"), f"selects no case ({sel}); the spec's cases are: {', '.join(c.id for c in cases)}"))
            continue
        for axis_path, axis in [((*base, "x", "key"), series.x)] + [((*base, "y", k, "key"), c) for k, c in enumerate(series.y)]:
            if not is_config_key(axis.key):
                continue
            for case in chosen:
                _, why = axis_value(axis, case, None)
                if why is not None:
                    out.append((axis_path, f"{why} (in case {case.id})"))
                    break
        if is_config_key(series.x.key):
            first: dict[float, str] = {}
            for case in chosen:
                x, why = axis_value(series.x, case, None)
                if why is None and x is not None:
                    if x in first:
                        out.append(((*base, "x", "key"), (
                            f"cases {first[x]} and {case.id} have the same x = {x:g}: a series is one curve per y key; "
                            "narrow the selector so x tells the points apart"
                        )))
                        break
                    first[x] = case.id
        for k, check in enumerate(series.checks):
            why = _check_key_error(check.key, series, spec, chosen)
            if why is not None:
                out.append(((*base, "checks", k, "key"), why))
    return out
