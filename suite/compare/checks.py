"""The check kinds: ``baseline``, ``theory``, ``monotone`` and ``range``.

Each is one params model plus one function ``fn(check, ctx) -> Verdict``; every verdict states the
measured value, the expected value, the tolerance and a one-line reason.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from suite.compare.registry import CheckContext, Verdict, register_check
from suite.compare.tolerance import ExactTolerance, Tolerance, describe, mismatches
from suite.keys import walk
from suite.spec.base import SpecModel

__all__ = ["MISSING", "BaselineCheck", "CheckParams", "MonotoneCheck", "RangeCheck", "TheoryCheck", "label", "lookup"]

MISSING = object()


class CheckParams(SpecModel):
    """Fields every check has: the dotted ``key`` of the value it reads, and an optional display name."""

    key: str = Field(..., min_length=1, description="Dotted path into the metric's values, e.g. ranks or ranks.0")
    name: str | None = Field(None, description="Label shown in reports (default: kind:key).")


def label(check: Any) -> str:
    """Display label of a check: its ``name`` or ``kind:key``."""
    return check.name or f"{check.kind}:{check.key}"


def lookup(values: dict[str, Any], key: str) -> Any:
    """Value at dotted ``key`` (``ranks``, ``ranks.0``, ``layers.fc.rank``) or ``MISSING``."""
    value, why = walk(values, key.split("."))
    return MISSING if why else value


def _missing_key(check: Any, ctx: CheckContext) -> Verdict:
    available = ", ".join(sorted(ctx.values)) or "none"
    return Verdict(ctx.case.id, label(check), "error", reason=f"key {check.key!r} not in the results (have: {available})")


class BaselineCheck(CheckParams):
    """Measured value against the stored baseline of this case, with a tolerance."""

    tolerance: Tolerance = Field(default_factory=ExactTolerance)


@register_check(BaselineCheck, name="baseline")
def check_baseline(check: BaselineCheck, ctx: CheckContext) -> Verdict:
    """Pass when the measured value matches ``baselines/<spec>.yaml`` within the tolerance.

    ``new`` when the case has no baseline (or the baseline lacks the key), ``stale`` when the baseline
    was recorded for a different case hash.
    """
    name, tol = label(check), describe(check.tolerance)
    value = lookup(ctx.values, check.key)
    if value is MISSING:
        return _missing_key(check, ctx)
    if ctx.baseline_state == "missing" or ctx.baseline_values is None or check.key not in ctx.baseline_values:
        return Verdict(ctx.case.id, name, "new", value, None, tol, "no baseline stored; run `ranksuite baseline update`")
    expected = ctx.baseline_values[check.key]
    if ctx.baseline_state == "stale":
        return Verdict(
            ctx.case.id, name, "stale", value, expected, tol,
            "the case changed since its baseline was recorded (hash differs); review and update the baseline",
        )
    diffs = mismatches(value, expected, check.tolerance)
    if diffs:
        more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
        return Verdict(ctx.case.id, name, "fail", value, expected, tol, f"differs from baseline: {'; '.join(diffs[:3])}{more}")
    source = f" ({ctx.baseline_source})" if ctx.baseline_source else ""
    return Verdict(ctx.case.id, name, "pass", value, expected, tol, f"matches baseline{source} within {tol}")


class TheoryCheck(CheckParams):
    """Measured value against a closed form: ``equal`` (within tolerance) or ``bound`` (measured <= bound).

    The prediction comes from a registered theory (``theory: planted_product_rank``) or from another key
    of the metric's own values that holds the prediction (``expected_key: predicted_rank``).
    """

    relation: Literal["equal", "bound"] = "equal"
    theory: str | None = Field(None, description="Name of a registered theory (`ranksuite ls theories`).")
    expected_key: str | None = Field(None, description="Key of the metric's values holding the prediction.")
    tolerance: Tolerance = Field(default_factory=ExactTolerance)

    @field_validator("theory")
    @classmethod
    def _known_theory(cls, name: str | None) -> str | None:
        from suite.theory import THEORIES

        if name is not None and name not in THEORIES:
            raise ValueError(THEORIES.unknown_message(name))
        return name

    @model_validator(mode="after")
    def _one_source(self) -> TheoryCheck:
        if (self.theory is None) == (self.expected_key is None):
            raise ValueError("a theory check needs exactly one of theory: <name> or expected_key: <key>")
        return self


def _tightness(value: Any, bound: Any) -> Any:
    if isinstance(value, list):
        return [_tightness(v, b) for v, b in zip(value, bound)]
    return round(float(value) / float(bound), 6) if bound else None


def _violations(value: Any, bound: Any, path: str = "") -> list[str]:
    if isinstance(bound, list) or isinstance(value, list):
        if not (isinstance(bound, list) and isinstance(value, list)) or len(value) != len(bound):
            return [f"{path or 'value'}: shape of measured {value!r} does not match bound {bound!r}"]
        return [v for i, (m, b) in enumerate(zip(value, bound)) for v in _violations(m, b, f"{path}[{i}]")]
    return [] if value <= bound else [f"{path or 'value'}: {value} > {bound}"]


@register_check(TheoryCheck, name="theory")
def check_theory(check: TheoryCheck, ctx: CheckContext) -> Verdict:
    """``equal``: measured == predicted within the tolerance; ``bound``: measured <= bound, with tightness."""
    from suite.theory import THEORIES

    name, tol = label(check), describe(check.tolerance)
    value = lookup(ctx.values, check.key)
    if value is MISSING:
        return _missing_key(check, ctx)
    details: dict[str, Any] = {}
    if check.theory is not None:
        theory = THEORIES.get(check.theory)
        try:
            prediction = theory.fn(ctx.case, ctx.values)
        except Exception as exc:  # a theory that does not apply is a verdict, not a crash of the run
            return Verdict(ctx.case.id, name, "error", value, None, tol, f"theory {check.theory} failed: {exc}")
        expected, details = prediction.expected, {"theory": check.theory, "source": theory.citation, **prediction.details}
    else:
        expected = lookup(ctx.values, check.expected_key)
        if expected is MISSING:
            return Verdict(ctx.case.id, name, "error", value, None, tol, f"expected_key {check.expected_key!r} not in results")
        details = {"expected_key": check.expected_key}
    if check.relation == "equal":
        diffs = mismatches(value, expected, check.tolerance)
        if diffs:
            return Verdict(ctx.case.id, name, "fail", value, expected, tol, f"differs from theory: {'; '.join(diffs[:3])}", details)
        return Verdict(ctx.case.id, name, "pass", value, expected, tol, f"equals the prediction ({tol})", details)
    bad = _violations(value, expected)
    details["tightness"] = _tightness(value, expected) if not bad else None
    if bad:
        return Verdict(ctx.case.id, name, "fail", value, expected, "<=", f"exceeds the bound: {'; '.join(bad[:3])}", details)
    return Verdict(ctx.case.id, name, "pass", value, expected, "<=", f"within the bound (tightness {details['tightness']})", details)


class MonotoneCheck(CheckParams):
    """A per-layer sequence moves one way: ``v[i+1] <= v[i] + slack`` for ``non_increasing``."""

    direction: Literal["non_increasing", "non_decreasing"] = "non_increasing"
    slack: float = Field(0.0, ge=0.0, description="Allowed step against the direction.")


@register_check(MonotoneCheck, name="monotone")
def check_monotone(check: MonotoneCheck, ctx: CheckContext) -> Verdict:
    """Pass when no step goes against ``direction`` by more than ``slack``; a failure names every such step."""
    name = label(check)
    value = lookup(ctx.values, check.key)
    if value is MISSING:
        return _missing_key(check, ctx)
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value):
        return Verdict(ctx.case.id, name, "error", value, reason=f"{check.key!r} is not a list of numbers")
    sign = 1.0 if check.direction == "non_increasing" else -1.0
    steps = [(i, sign * (value[i + 1] - value[i])) for i in range(len(value) - 1)]
    bad = [(i, rise) for i, rise in steps if rise > check.slack]
    tol = f"slack {check.slack:g}"
    if bad:
        where = "; ".join(f"step {i}->{i + 1}: {value[i]} -> {value[i + 1]} (by {rise:g})" for i, rise in bad[:5])
        return Verdict(
            ctx.case.id, name, "fail", value, check.direction, tol,
            f"{len(bad)} step(s) against {check.direction}: {where}", {"violations": [[i, rise] for i, rise in bad]},
        )
    within = [(i, rise) for i, rise in steps if rise > 0]
    if within:  # passing only thanks to the slack: say where, so the finding stays visible
        where = "; ".join(f"step {i}->{i + 1}: {value[i]} -> {value[i + 1]}" for i, _ in within[:5])
        return Verdict(
            ctx.case.id, name, "pass", value, check.direction, tol,
            f"{check.direction} within the slack; {len(within)} step(s) went against it: {where}",
            {"within_slack": [[i, rise] for i, rise in within]},
        )
    return Verdict(ctx.case.id, name, "pass", value, check.direction, tol, f"{check.direction} over {len(value)} values")


class RangeCheck(CheckParams):
    """Every number at ``key`` (a number or a nested list of numbers) lies in ``[min, max]``.

    For limits a spec states from a paper's claim or a statistical tolerance (KS distances, tail ratios,
    accuracy drops). ``null`` entries (e.g. a ratio with no events) fail unless ``allow_null``.
    """

    min: float | None = Field(None, description="Smallest allowed value (inclusive); omitted: no lower limit.")
    max: float | None = Field(None, description="Largest allowed value (inclusive); omitted: no upper limit.")
    allow_null: bool = Field(False, description="Accept null entries.")
    why: str | None = Field(None, description="Where the limits come from; shown in the report.")

    @model_validator(mode="after")
    def _some_limit(self) -> RangeCheck:
        if self.min is None and self.max is None:
            raise ValueError("a range check needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is larger than max {self.max}")
        return self


def _flatten_numbers(value: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _flatten_numbers(v, f"{path}[{i}]")]
    return [(path or "value", value)]


@register_check(RangeCheck, name="range")
def check_range(check: RangeCheck, ctx: CheckContext) -> Verdict:
    """Pass when every value lies within ``[min, max]``; a failure names each value outside, with its index."""
    name = label(check)
    value = lookup(ctx.values, check.key)
    if value is MISSING:
        return _missing_key(check, ctx)
    lo = "-inf" if check.min is None else f"{check.min:g}"
    hi = "inf" if check.max is None else f"{check.max:g}"
    expected = f"[{lo}, {hi}]"
    why = f" ({check.why})" if check.why else ""
    bad: list[str] = []
    n = 0
    for where, v in _flatten_numbers(value):
        if v is None:
            if not check.allow_null:
                bad.append(f"{where}: null")
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return Verdict(ctx.case.id, name, "error", value, expected, "range", f"{where} is not a number: {v!r}")
        n += 1
        if v != v:  # NaN lies in no range
            bad.append(f"{where}: nan")
        elif (check.min is not None and v < check.min) or (check.max is not None and v > check.max):
            bad.append(f"{where}: {v:.6g}")
    if bad:
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        return Verdict(ctx.case.id, name, "fail", value, expected, "range", f"outside {expected}{why}: {'; '.join(bad[:5])}{more}")
    return Verdict(ctx.case.id, name, "pass", value, expected, "range", f"all {n} value(s) within {expected}{why}")
