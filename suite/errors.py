"""Exception hierarchy of ranksuite.

    RanksuiteError
    ├── SpecError          a spec file is invalid (carries file:line:col locations)
    ├── RegistryError      an unknown model source, dataset kind, metric or theory name
    ├── MetricError        a metric cannot be computed for the given model or data
    ├── BaselineError      a baseline file is malformed
    └── RunError           a run directory is missing or unreadable
    MissingResource        a local resource (checkpoint, data folder) is absent; the runner
                           records the case as skipped in the ``paper`` tier, as an error otherwise
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BaselineError",
    "ErrorLocation",
    "MetricError",
    "MissingResource",
    "RanksuiteError",
    "RegistryError",
    "RunError",
    "SpecError",
    "TrainingError",
]


class RanksuiteError(Exception):
    """Base class of every error ranksuite raises on purpose."""


@dataclass(frozen=True)
class ErrorLocation:
    """One problem in a spec file, with its 1-based line and column."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class SpecError(RanksuiteError, ValueError):
    """A spec is invalid; ``locations`` lists every problem found, each as ``file:line:col``."""

    def __init__(self, locations: list[ErrorLocation] | str):
        if isinstance(locations, str):
            locations = [ErrorLocation("<spec>", 0, 0, locations)]
        self.locations = list(locations)
        super().__init__("\n".join(str(loc) for loc in self.locations))


class RegistryError(RanksuiteError, KeyError):
    """An unknown name was looked up in a registry; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class MetricError(RanksuiteError, ValueError):
    """A metric cannot be computed for this model or data."""


class TrainingError(RanksuiteError, ValueError):
    """A model cannot be trained on the given dataset (no labels, wrong output shape, diverged loss)."""


class BaselineError(RanksuiteError, ValueError):
    """A baseline file is malformed."""


class RunError(RanksuiteError, FileNotFoundError):
    """A run directory is missing or its results cannot be read."""


class MissingResource(RanksuiteError, FileNotFoundError):
    """A local resource the case needs (checkpoint, cached weights, data folder) is absent."""
