"""Expand a validated spec into cases with stable ids ``model/dataset/metric`` and content hashes."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from suite.spec.schema import NO_DATA

__all__ = ["Case", "case_hash", "expand_cases", "reference_errors"]


@dataclass(frozen=True)
class Case:
    """One resolved unit of work.

    Attributes:
        id: ``model/dataset/metric`` (``dataset`` is ``none`` for data-free metrics).
        model, dataset, metric: the resolved spec entries (``dataset`` is ``None`` without data).
        seed: the model's ``seed`` or the spec default.
        dtype: the dtype models are built in.
        hash: 16 hex digits of SHA-256 over everything that determines the case's values (model,
            dataset and metric configuration without ids, seed, dtype, metric version; for a trained
            model also its training dataset and the trainer version); a baseline recorded under another
            hash is stale.
        train_dataset: the dataset entry named by ``model.train.dataset``, or ``None`` for an untrained model.
    """

    id: str
    model: Any
    dataset: Any
    metric: Any
    seed: int
    dtype: str
    hash: str
    train_dataset: Any = None

    @property
    def checks(self) -> list[Any]:
        return list(self.metric.checks)


def _canonical(entry: Any, drop: set[str]) -> Any:
    if entry is None:
        return None
    return entry.model_dump(mode="json", exclude=drop)


def case_hash(model: Any, dataset: Any, metric: Any, seed: int, dtype: str, train_dataset: Any = None) -> str:
    """SHA-256 (16 hex digits) of the canonical JSON of what determines a case's values.

    An untrained model hashes exactly as before ``train:`` existed (the key is left out when it is
    ``None``), so stored baselines keep their hashes. A trained model adds its ``train`` block (without the
    dataset id) to the model dump, and the payload gains the training dataset (without id and description)
    and the trainer version.
    """
    from suite.metrics import METRICS

    trained = getattr(model, "train", None) is not None
    payload = {
        "model": _canonical(model, {"id", "description", "seed"} | (set() if trained else {"train"})),
        "dataset": _canonical(dataset, {"id", "description"}),
        "metric": {"kind": metric.kind, "params": metric.params.model_dump(mode="json")},
        "metric_version": METRICS.get(metric.kind).version,
        "seed": seed,
        "dtype": dtype,
    }
    if trained:
        from suite.training.trainer import TRAINER_VERSION

        del payload["model"]["train"]["dataset"]  # an id; the training dataset's content is hashed instead
        payload["train_dataset"] = _canonical(train_dataset, {"id", "description"})
        payload["trainer_version"] = TRAINER_VERSION
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _triples(spec: Any) -> list[tuple[tuple, tuple[str, str, str]]]:
    """``(path of the defining node, (model, dataset, metric))`` for matrix and explicit cases, in order."""
    out = []
    for m, grid in enumerate(spec.cases.matrix):
        for model in grid.model:
            for dataset in grid.dataset:
                for metric in grid.metric:
                    out.append((("cases", "matrix", m), (model, dataset, metric)))
    return out


def _matches(pattern: Any, triple: tuple[str, str, str]) -> bool:
    return all(fnmatch.fnmatchcase(v, p) for v, p in zip(triple, (pattern.model, pattern.dataset, pattern.metric)))


def reference_errors(spec: Any) -> list[tuple[tuple, str]]:
    """Cross-reference problems pydantic cannot see: ``(data path, message)`` for each.

    Duplicate ids, case references to undefined ids, the reserved dataset id ``none``, metrics that
    need data paired with ``none``, duplicate explicit cases, a model's ``train.dataset`` that names no
    dataset, a spec that defines no case at all, and (once the cases expand) the problems of its
    ``series`` (:func:`suite.spec.series.series_errors`).
    """
    from suite.metrics import METRICS

    problems: list[tuple[tuple, str]] = []
    ids: dict[str, dict[str, int]] = {}
    for section in ("models", "datasets", "metrics"):
        seen: dict[str, int] = {}
        for i, entry in enumerate(getattr(spec, section)):
            if entry.id in seen:
                problems.append(((section, i, "id"), f"duplicate {section[:-1]} id {entry.id!r} (first is {section}[{seen[entry.id]}])"))
            elif section == "datasets" and entry.id == NO_DATA:
                problems.append(((section, i, "id"), f"dataset id {NO_DATA!r} is reserved for data-free cases"))
            else:
                seen[entry.id] = i
        ids[section] = seen

    def check_ref(path: tuple, section: str, value: str) -> None:
        if section == "datasets" and value == NO_DATA:
            return
        if value not in ids[section]:
            defined = ", ".join(ids[section]) or "none defined"
            extra = " or 'none'" if section == "datasets" else ""
            problems.append((path, f"unknown {section[:-1]} id {value!r}; defined: {defined}{extra}"))

    for i, model in enumerate(spec.models):
        train = getattr(model, "train", None)
        if train is not None and train.dataset not in ids["datasets"]:
            defined = ", ".join(ids["datasets"]) or "none defined"
            message = f"unknown dataset id {train.dataset!r} to train on; defined: {defined}"
            problems.append((("models", i, "train", "dataset"), message))
    for m, grid in enumerate(spec.cases.matrix):
        for axis, section in (("model", "models"), ("dataset", "datasets"), ("metric", "metrics")):
            for j, value in enumerate(getattr(grid, axis)):
                check_ref(("cases", "matrix", m, axis, j), section, value)
    seen_explicit: dict[tuple, int] = {}
    for e, ref in enumerate(spec.cases.explicit):
        for axis, section in (("model", "models"), ("dataset", "datasets"), ("metric", "metrics")):
            check_ref(("cases", "explicit", e, axis), section, getattr(ref, axis))
        triple = (ref.model, ref.dataset, ref.metric)
        if triple in seen_explicit:
            problems.append((("cases", "explicit", e), f"duplicate case {'/'.join(triple)} (also explicit[{seen_explicit[triple]}])"))
        seen_explicit[triple] = e
        metric = next((x for x in spec.metrics if x.id == ref.metric), None)
        if metric is not None and METRICS.get(metric.kind).needs_data and ref.dataset == NO_DATA:
            problems.append((("cases", "explicit", e, "dataset"), f"metric {ref.metric!r} ({metric.kind}) needs a dataset; got 'none'"))
    for m, grid in enumerate(spec.cases.matrix):
        for j, metric_id in enumerate(grid.metric):
            metric = next((x for x in spec.metrics if x.id == metric_id), None)
            if metric is not None and METRICS.get(metric.kind).needs_data and NO_DATA in grid.dataset:
                problems.append(
                    (("cases", "matrix", m, "dataset"), f"metric {metric_id!r} ({metric.kind}) needs a dataset; the matrix lists 'none'")
                )
    if not spec.cases.matrix and not spec.cases.explicit:
        problems.append((("cases",), "no cases: give a matrix or explicit cases"))
    if not problems and getattr(spec, "series", None):
        from suite.spec.series import series_errors

        problems.extend(series_errors(spec, expand_cases(spec)))
    return problems


def expand_cases(spec: Any) -> list[Case]:
    """All cases of ``spec`` in a stable order: matrix cases (filtered by include/exclude), then explicit.

    Data-free metrics collapse the dataset axis to ``none`` (include/exclude patterns match that id, as
    in the case id); a combination produced twice appears once.
    """
    from suite.metrics import METRICS

    models = {m.id: m for m in spec.models}
    datasets = {d.id: d for d in spec.datasets}
    metrics = {m.id: m for m in spec.metrics}
    chosen: dict[str, Case] = {}

    def add(model_id: str, dataset_id: str, metric_id: str) -> None:
        metric = metrics[metric_id]
        if not METRICS.get(metric.kind).needs_data:
            dataset_id = NO_DATA
        case_id = f"{model_id}/{dataset_id}/{metric_id}"
        if case_id in chosen:
            return
        model = models[model_id]
        dataset = datasets.get(dataset_id)
        seed = model.seed if getattr(model, "seed", None) is not None else spec.defaults.seed
        train = getattr(model, "train", None)
        train_dataset = datasets.get(train.dataset) if train is not None else None
        digest = case_hash(model, dataset, metric, seed, spec.defaults.dtype, train_dataset)
        chosen[case_id] = Case(case_id, model, dataset, metric, seed, spec.defaults.dtype, digest, train_dataset)

    for _, triple in _triples(spec):
        model_id, dataset_id, metric_id = triple
        if not METRICS.get(metrics[metric_id].kind).needs_data:
            triple = (model_id, NO_DATA, metric_id)  # filters see the dataset id of the case id
        if spec.cases.include and not any(_matches(p, triple) for p in spec.cases.include):
            continue
        if any(_matches(p, triple) for p in spec.cases.exclude):
            continue
        add(*triple)
    for ref in spec.cases.explicit:
        add(ref.model, ref.dataset, ref.metric)
    return list(chosen.values())


def select_cases(cases: list[Case], patterns: list[str] | None) -> list[Case]:
    """Cases whose id matches any fnmatch pattern (all cases when ``patterns`` is empty)."""
    if not patterns:
        return cases
    return [c for c in cases if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]
