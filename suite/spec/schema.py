"""The spec schema, assembled from the registries.

A spec declares models, datasets and metrics (each a discriminated union over the registered kinds)
and the cases to run::

    name: smoke                      # lower-case identifier; baselines/<name>.yaml, reports/<name>.md
    reference: "..."                 # the paper or claim the spec reproduces
    tier: smoke                      # smoke | ci | full | paper
    defaults: {device: auto, seed: 0, dtype: float32}
    include: [base.yaml]             # optional; merged first (see suite.spec.loader)
    models:   [{id: mlp, source: builtin, name: mlp, widths: [64, 32, 10]}, ...]   # source: timm | builtin
              # optional per model: train: {dataset: <dataset id>, epochs: 5, lr: 0.01}  (suite.training)
    datasets: [{id: noise, kind: gaussian, shape: [64], n: 128}, ...]
    metrics:  [{id: spectrum, kind: weight_spectrum, params: {...}, checks: [...]}, ...]
    cases:
      matrix: {model: [mlp], dataset: [none], metric: [spectrum]}   # or a list of such matrices
      include: [{model: "*", metric: spectrum}]                     # keep only matching combinations
      exclude: [{model: r18, dataset: "*", metric: spectrum}]       # drop matching combinations
      explicit: [{model: mlp, dataset: noise, metric: spectrum}]    # extra cases, added as given
    series:   [{id: width, cases: {model: "mlp*"}, x: {key: model.widths.1}, y: [{key: ranks.0, id: r0}],
                fit: power, checks: [...]}, ...]   # optional cross-case curves (suite.spec.series)

Adding a registered kind changes the schema with no edit here.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, create_model, field_validator

from suite.spec.base import Id, SpecModel

__all__ = ["CasePattern", "CaseRef", "Cases", "Defaults", "Matrix", "TimingPolicy", "spec_json_schema", "spec_model"]

NO_DATA = "none"  # dataset id of data-free cases (metrics with needs_data=False)


class Defaults(SpecModel):
    """Run defaults for every case of the spec."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    seed: int = Field(0, ge=0, description="Seed for python, numpy and torch, set before every case.")
    dtype: Literal["float32", "float64"] = Field("float32", description="dtype models are built in.")


class TimingPolicy(SpecModel):
    """When a case's metric time counts as a regression against its baseline timing (same device class)."""

    factor: float = Field(1.5, gt=1.0, description="Flag a case slower than factor x its baseline time.")
    min_seconds: float = Field(0.05, ge=0.0, description="Never flag cases faster than this (timer noise).")
    fail: bool = Field(False, description="A regression fails the run (exit 1) instead of warning.")


class Matrix(SpecModel):
    """A grid of cases: every model x dataset x metric combination."""

    model: list[Id] = Field(..., min_length=1)
    dataset: list[str] = Field([NO_DATA], min_length=1, description="Dataset ids; 'none' for data-free metrics.")
    metric: list[Id] = Field(..., min_length=1)


class CasePattern(SpecModel):
    """fnmatch patterns on the three ids of a case; omitted parts match anything."""

    model: str = "*"
    dataset: str = "*"
    metric: str = "*"


class CaseRef(SpecModel):
    """One explicit case."""

    model: Id
    dataset: str = NO_DATA
    metric: Id


class Cases(SpecModel):
    """Which combinations to run: matrix cases filtered by include/exclude, plus explicit ones."""

    matrix: list[Matrix] = Field(default_factory=list, description="One grid or a list of grids.")
    include: list[CasePattern] = Field(default_factory=list, description="Keep only matrix cases matching one.")
    exclude: list[CasePattern] = Field(default_factory=list, description="Drop matrix cases matching one.")
    explicit: list[CaseRef] = Field(default_factory=list, description="Cases added as given.")

    @field_validator("matrix", mode="before")
    @classmethod
    def _one_grid(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value


class _EntryBase(SpecModel):
    id: Id
    description: str | None = None


def _all_optional(params: type[BaseModel]) -> bool:
    return not any(field.is_required() for field in params.model_fields.values())


def _union(members: list[Any], discriminator: str) -> Any:
    if len(members) == 1:
        return members[0]
    return Annotated[Union[tuple(members)], Field(discriminator=discriminator)]  # noqa: UP007


def _train_field() -> tuple[Any, Any]:
    from suite.training.config import TrainConfig

    return (
        TrainConfig | None,
        Field(None, description="Train the built model on a dataset of the spec before measuring it (cached)."),
    )


def _model_union() -> Any:
    from suite.models import BUILTIN_NETS, MODEL_SOURCES

    members: list[Any] = []
    for source, builder in MODEL_SOURCES.items():
        members.append(
            create_model(
                f"{source.title()}Model",
                __base__=(_EntryBase, builder.params),
                __doc__=builder.doc or builder.params.__doc__,
                source=(Literal[source], Field(..., description=f"Model source {source}.")),
                seed=(int | None, Field(None, ge=0, description="Overrides defaults.seed for this model.")),
                train=_train_field(),
            )
        )
    builtin = [
        create_model(
            f"Builtin{name.title()}Model",
            __base__=(_EntryBase, builder.params),
            __doc__=builder.doc or builder.params.__doc__,
            source=(Literal["builtin"], ...),
            name=(Literal[name], Field(..., description=f"Built-in net {name}.")),
            seed=(int | None, Field(None, ge=0, description="Overrides defaults.seed for this model.")),
            train=_train_field(),
        )
        for name, builder in BUILTIN_NETS.items()
    ]
    members.append(_union(builtin, "name"))
    return _union(members, "source")


def _dataset_union() -> Any:
    from suite.data import DATASETS

    members = [
        create_model(
            f"{kind.title().replace('_', '')}Dataset",
            __base__=(_EntryBase, ds.params),
            __doc__=ds.doc or ds.params.__doc__,
            kind=(Literal[kind], ...),
        )
        for kind, ds in DATASETS.items()
    ]
    return _union(members, "kind")


@functools.cache
def _check_entry(kind: str) -> type[BaseModel]:
    from suite.compare import CHECKS

    chk = CHECKS.get(kind)
    return create_model(f"{kind.title()}CheckEntry", __base__=chk.params, __doc__=chk.doc, kind=(Literal[kind], ...))


def _check_union(kinds: tuple[str, ...] | None = None) -> Any:
    """The discriminated union of the registered check kinds (only ``kinds`` when given)."""
    from suite.compare import CHECKS

    return _union([_check_entry(kind) for kind in CHECKS.names() if kinds is None or kind in kinds], "kind")


def _series_model() -> Any:
    from suite.spec.series import SERIES_CHECK_KINDS, series_fields, series_validators

    return create_model(
        "Series",
        __base__=SpecModel,
        __doc__="A cross-case series: one point per selected case, curves, a fitted trend and checks on them.",
        __validators__=series_validators(),
        **series_fields(_check_union(SERIES_CHECK_KINDS)),
    )


def _metric_union(check: Any) -> Any:
    from suite.metrics import METRICS

    members = []
    for kind, metric in METRICS.items():
        params_field = (
            (metric.params, Field(default_factory=metric.params)) if _all_optional(metric.params) else (metric.params, ...)
        )
        members.append(
            create_model(
                f"{kind.title().replace('_', '')}Metric",
                __base__=_EntryBase,
                __doc__=metric.doc,
                kind=(Literal[kind], ...),
                params=params_field,
                checks=(list[check], Field(default_factory=list)),
            )
        )
    return _union(members, "kind")


@functools.cache
def spec_model() -> type[SpecModel]:
    """The pydantic model of a whole spec, built once from the registries."""
    model, dataset, check = _model_union(), _dataset_union(), _check_union()
    metric = _metric_union(check)
    return create_model(
        "Spec",
        __base__=SpecModel,
        __doc__="A ranksuite spec: models x datasets x metrics, with checks.",
        name=(str, Field(..., pattern=r"^[a-z0-9][a-z0-9_]*$", description="Spec name; names baseline and report files.")),
        reference=(str, Field(..., min_length=1, description="Paper or claim this spec reproduces.")),
        tier=(Literal["smoke", "ci", "full", "paper"], Field(..., description="Where it is meant to run.")),
        description=(str | None, None),
        include=(list[str], Field(default_factory=list, description="Spec files merged before this one.")),
        defaults=(Defaults, Field(default_factory=Defaults)),
        timing=(TimingPolicy, Field(default_factory=TimingPolicy)),
        models=(list[model], Field(..., min_length=1)),
        datasets=(list[dataset], Field(default_factory=list)),
        metrics=(list[metric], Field(..., min_length=1)),
        cases=(Cases, ...),
        series=(list[_series_model()], Field(default_factory=list, description="Cross-case curves, fits and checks.")),
    )


def spec_json_schema() -> dict[str, Any]:
    """JSON schema of a spec, for YAML editor plugins (``# yaml-language-server: $schema=...``)."""
    schema = spec_model().model_json_schema()
    cases = schema["$defs"]["Cases"]["properties"]
    grid = {"$ref": "#/$defs/Matrix"}
    cases["matrix"] = {"anyOf": [grid, {"type": "array", "items": grid}], "description": cases["matrix"]["description"]}
    from suite.spec.series import patch_json_schema

    patch_json_schema(schema)
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["title"] = "ranksuite spec"
    return schema
