"""Registry of check kinds and the verdict every check returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from suite.registry import Registry

if TYPE_CHECKING:
    from suite.spec.base import SpecModel
    from suite.spec.expand import Case

__all__ = ["CHECKS", "CheckContext", "CheckDef", "Status", "Verdict", "register_check"]

Status = Literal["pass", "fail", "warn", "new", "stale", "error", "skipped"]


@dataclass(frozen=True)
class Verdict:
    """Outcome of one check on one case: what was measured, what was expected, and why it passed or not.

    ``status``: ``pass``/``fail``; ``warn`` (reported, not failing); ``new`` (no baseline yet);
    ``stale`` (the baseline was recorded for a different case hash); ``error`` (the check could not be
    evaluated, e.g. the key is absent); ``skipped`` (the case was skipped).
    """

    case_id: str
    check: str
    status: Status
    value: Any = None
    expected: Any = None
    tolerance: str = ""
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckContext:
    """What a check may read: the case, its measured values, and its stored baseline (if any).

    ``baseline_values`` is ``None`` when no baseline exists; ``baseline_state`` is ``missing``,
    ``stale`` (hash differs) or ``ok``; ``baseline_timing`` holds the stored seconds per device class.
    """

    case: Case
    values: dict[str, Any]
    baseline_values: dict[str, Any] | None
    baseline_state: Literal["missing", "stale", "ok"]
    baseline_source: str = ""
    device_class: str = "cpu"
    time_s: float | None = None
    baseline_time_s: float | None = None


@dataclass(frozen=True)
class CheckDef:
    name: str
    params: type[SpecModel]
    fn: Callable[[Any, CheckContext], Verdict]
    doc: str


CHECKS: Registry[CheckDef] = Registry("check kind")


def register_check(params: type[SpecModel], name: str | None = None):
    """Register ``fn(check, ctx) -> Verdict`` as the check kind ``name`` (spec key ``kind:`` in ``checks:``)."""
    return CHECKS.decorator(lambda key, fn, doc: CheckDef(key, params, fn, doc), name)
