"""Baseline files: ``baselines/<spec>.yaml``, one entry per case id, with provenance.

::

    spec: smoke
    cases:
      mlp/none/spectrum:
        case_hash: 9d8da0d5742227db        # a different hash makes the entry stale
        provenance: {source: measured, run_id: ..., git_sha: ..., versions: {...}, device_name: ...}
        timing: {cpu: 0.0123}              # seconds of the metric per device class
        values:
          default: {ranks: [32, 10]}       # what the checks compare with
          cuda: {ranks: [32, 9]}           # only the keys that differ on that device class

``source: paper`` entries (``citation:``) are written by hand from a paper's tables; ``baseline update``
leaves them alone unless forced. Files are written key-sorted, lists of numbers in flow style, and
atomically. Nothing updates a baseline implicitly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from suite.errors import BaselineError
from suite.runner.store import atomic_write_text

__all__ = [
    "BaselineEntry",
    "BaselineFile",
    "MeasuredProvenance",
    "PaperProvenance",
    "baseline_path",
    "dump_baselines",
    "load_baselines",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MeasuredProvenance(_Strict):
    source: Literal["measured"] = "measured"
    run_id: str
    git_sha: str | None = None
    dirty: bool | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    device_name: str | None = None
    date: str | None = None


class PaperProvenance(_Strict):
    source: Literal["paper"] = "paper"
    citation: str = Field(..., min_length=1, description="Paper, table or figure the values come from.")


class BaselineEntry(_Strict):
    """Stored expectations of one case."""

    case_hash: str | None = Field(None, description="Hash of the case when recorded; None: never stale (paper values).")
    provenance: Annotated[MeasuredProvenance | PaperProvenance, Field(discriminator="source")]
    values: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Device class -> key -> value.")
    timing: dict[str, float] = Field(default_factory=dict, description="Device class -> seconds of the metric.")

    def values_for(self, device_class: str) -> dict[str, Any]:
        """``default`` values overlaid with those recorded for ``device_class``."""
        return {**self.values.get("default", {}), **self.values.get(device_class, {})}

    def state(self, case_hash: str) -> Literal["ok", "stale"]:
        return "ok" if self.case_hash is None or self.case_hash == case_hash else "stale"


class BaselineFile(_Strict):
    spec: str
    cases: dict[str, BaselineEntry] = Field(default_factory=dict)


def baseline_path(baselines_dir: Path, spec_name: str) -> Path:
    return baselines_dir / f"{spec_name}.yaml"


def load_baselines(path: Path, spec_name: str) -> BaselineFile:
    """Read a baseline file; an absent file is an empty one. Malformed files raise ``BaselineError``."""
    if not path.is_file():
        return BaselineFile(spec=spec_name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return BaselineFile.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise BaselineError(f"{path}: malformed baseline file: {exc}") from None


class _Dumper(yaml.SafeDumper):
    pass


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, (int, float, str, bool)) or v is None for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_baselines(path: Path, baselines: BaselineFile) -> str:
    """Write ``baselines`` to ``path`` (key-sorted, atomically) and return the text written."""
    header = (
        f"# Baselines of spec {baselines.spec!r}. Written by `ranksuite baseline update <run>`;\n"
        "# review the printed diff before committing. Entries with source: paper are edited by hand.\n"
    )
    body = yaml.dump(
        baselines.model_dump(mode="json", exclude_none=False), Dumper=_Dumper, sort_keys=True, width=120, allow_unicode=True
    )
    text = header + body
    atomic_write_text(path, text)
    return text


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
