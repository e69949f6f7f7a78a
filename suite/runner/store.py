"""Run directories: ``runs/<run-id>/meta.json`` and ``runs/<run-id>/results.jsonl``.

``results.jsonl`` is the source of truth: one JSON object per finished case, appended with a single
``os.write`` on an ``O_APPEND`` descriptor and flushed with ``fsync``, so a killed run leaves at most one
incomplete last line; readers skip such a line (and say so) instead of failing. ``meta.json`` and every
other file are written to a temporary file and renamed into place, so they are either old or new,
never half-written.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.errors import RunError

__all__ = ["ResultCache", "RunDir", "atomic_write_text", "new_run_id"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def new_run_id(spec_name: str) -> str:
    """``<spec>-<UTC date>-<time>-<4 hex>``: sortable by time, unique across parallel runs."""
    return f"{spec_name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class RunDir:
    """One run's folder."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def results_path(self) -> Path:
        return self.path / "results.jsonl"

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    @property
    def verdicts_path(self) -> Path:
        return self.path / "verdicts.json"

    @classmethod
    def open(cls, runs_dir: Path, run: str) -> RunDir:
        """The run named ``run`` under ``runs_dir`` (or ``run`` as a path); ``latest`` is the newest."""
        if run == "latest":
            candidates = sorted((p for p in runs_dir.glob("*/meta.json")), key=lambda p: p.stat().st_mtime)
            if not candidates:
                raise RunError(f"no runs under {runs_dir}")
            return cls(candidates[-1].parent)
        path = Path(run)
        if not (path / "meta.json").is_file():
            path = runs_dir / run
        if not (path / "meta.json").is_file():
            known = sorted(p.parent.name for p in runs_dir.glob("*/meta.json"))[-5:]
            raise RunError(f"no run {run!r} under {runs_dir} (recent: {', '.join(known) or 'none'})")
        return cls(path)

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_text(self.meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")

    def meta(self) -> dict[str, Any]:
        try:
            return json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"cannot read {self.meta_path}: {exc}") from None

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as one line, atomically with respect to crashes (see module doc)."""
        line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.results_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size:
                # a previous process may have died mid-line: start on a fresh line so this record survives
                with open(self.results_path, "rb") as fh:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record, in file order; later records of the same case id win in ``latest()``."""
        return list(iter_records(self.results_path))

    def latest(self) -> dict[str, dict[str, Any]]:
        """Case id -> its last record in this run."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self.records():
            out[rec["case_id"]] = rec
        return out


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Complete JSON lines of ``path``; an unreadable line (a run killed mid-write) is skipped with a warning."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{number}: skipping an incomplete record (interrupted write)", stacklevel=2)
                continue
            if isinstance(record, dict) and "case_id" in record:
                yield record


class ResultCache:
    """Finished case results of earlier runs, by cache key (``<case hash>-<device class>``).

    Built once per run by scanning ``runs/*/results.jsonl``, newest run last so its records win.
    """

    def __init__(self, runs_dir: Path, exclude: Path | None = None):
        self._by_key: dict[str, dict[str, Any]] = {}
        files = sorted(runs_dir.glob("*/results.jsonl"), key=lambda p: p.stat().st_mtime)
        for file in files:
            for rec in iter_records(file):
                if "cache_key" in rec and rec.get("status") in ("ok", "error", "skipped"):
                    self._by_key[rec["cache_key"]] = {**rec, "_run": file.parent.name}

    def get(self, key: str, policy: str) -> dict[str, Any] | None:
        """A reusable record under ``policy``: ``never`` -> none; ``only-missing`` -> successful ones;
        ``always`` -> any recorded outcome, errors and skips included."""
        if policy == "never":
            return None
        rec = self._by_key.get(key)
        if rec is None or (policy == "only-missing" and rec.get("status") != "ok"):
            return None
        return rec
