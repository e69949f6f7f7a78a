"""Ours-vs-reference benchmarks: time two implementations of the same quantity in one process.

A family declares a pair in a few lines::

    @register_pair(target=10.0, description="SVR of VGG19: batched torch vs per-layer SciPy")
    def svr_vgg19(device: torch.device, size: str) -> Pair:
        model = ...
        return Pair(ours=lambda: svr(model), reference=lambda: svr_reference(model), agree=same_ranks)

:func:`run_pair` first runs both once and checks that they agree (a fast wrong answer is no speed-up),
then times them alternately for ``rounds`` rounds (median, CUDA-synchronised), records peak memory, and
reports ``speedup = median(reference) / median(ours)`` against the pair's target. Timings are figures to
record and compare, never assertions in the test suite.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from suite.registry import Registry
from suite.runner.measure import measure

__all__ = ["PAIRS", "Pair", "PairDef", "PairResult", "Timing", "register_pair", "run_pair", "time_callable"]


@dataclass(frozen=True)
class Pair:
    """Two zero-argument callables computing the same thing, and how to tell that they agree.

    ``agree(ours_output, reference_output)`` returns ``None`` when they agree, else a message.
    ``size`` describes the problem (shown in tables), e.g. ``"resnet18, 21 maps"``.
    """

    ours: Callable[[], Any]
    reference: Callable[[], Any]
    agree: Callable[[Any, Any], str | None]
    size: str = ""


@dataclass(frozen=True)
class PairDef:
    name: str
    make: Callable[[torch.device, str], Pair]
    target: float | None
    description: str


PAIRS: Registry[PairDef] = Registry("benchmark pair")


def register_pair(target: float | None, description: str, name: str | None = None):
    """Register ``make(device, size) -> Pair``; ``target`` is the speed-up the family promises."""
    return PAIRS.decorator(lambda key, fn, doc: PairDef(key, fn, target, description), name)


@dataclass
class Timing:
    """Median and all round times in seconds; peak memory of the largest round in bytes."""

    median_s: float
    times_s: list[float]
    peak_bytes: int
    memory_kind: str


def time_callable(fn: Callable[[], Any], device: torch.device, rounds: int = 5, warmup: int = 1) -> Timing:
    """Median wall time of ``fn`` over ``rounds`` calls after ``warmup`` calls (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    times, peak, kind = [], 0, "rss_delta"
    for _ in range(rounds):
        with measure(device) as m:
            fn()
        times.append(m.time_s)
        peak, kind = max(peak, m.peak_bytes), m.memory_kind
    return Timing(statistics.median(times), times, peak, kind)


@dataclass
class PairResult:
    name: str
    description: str
    size: str
    device: str
    ours: Timing
    reference: Timing
    speedup: float
    target: float | None
    met: bool | None
    agreement: str = "agree"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_pair(name: str, device: torch.device, size: str = "default", rounds: int = 5) -> PairResult:
    """Check agreement, then time ours and the reference alternately; see the module docstring."""
    pdef = PAIRS.get(name)
    pair = pdef.make(device, size)
    problem = pair.agree(pair.ours(), pair.reference())
    if problem is not None:
        raise AssertionError(f"{name}: ours and the reference disagree: {problem}")
    ours_times: list[Timing] = []
    ref_times: list[Timing] = []
    for _ in range(rounds):  # alternate so drifting machine load hits both sides alike
        ours_times.append(time_callable(pair.ours, device, rounds=1, warmup=0))
        ref_times.append(time_callable(pair.reference, device, rounds=1, warmup=0))
    ours = _merge(ours_times)
    ref = _merge(ref_times)
    speedup = ref.median_s / ours.median_s if ours.median_s > 0 else float("inf")
    met = None if pdef.target is None else speedup >= pdef.target
    return PairResult(name, pdef.description, pair.size, str(device), ours, ref, speedup, pdef.target, met)


def _merge(timings: list[Timing]) -> Timing:
    times = [t.times_s[0] for t in timings]
    return Timing(statistics.median(times), times, max(t.peak_bytes for t in timings), timings[0].memory_kind)
