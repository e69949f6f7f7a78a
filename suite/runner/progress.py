"""Progress of a run: a redrawn bar on a terminal, one line per finished case otherwise (CI logs)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

_SYMBOL = {"ok": "ok", "error": "ERROR", "skipped": "skip", "cached": "cached"}


class Progress:
    """``start(case_id)`` before a case, ``done(case_id, status, seconds)`` after it."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if enabled is None else enabled
        self.count = 0
        self.t0 = time.perf_counter()

    def _bar(self, width: int = 24) -> str:
        filled = int(width * self.count / max(self.total, 1))
        return "#" * filled + "-" * (width - filled)

    def start(self, case_id: str) -> None:
        if self.tty:
            elapsed = time.perf_counter() - self.t0
            self.stream.write(f"\r\x1b[2K[{self._bar()}] {self.count}/{self.total} {elapsed:6.1f}s  {case_id}")
            self.stream.flush()

    def done(self, case_id: str, status: str, seconds: float) -> None:
        self.count += 1
        line = f"[{self.count}/{self.total}] {_SYMBOL.get(status, status):6} {case_id}  {seconds:.2f}s"
        if self.tty:
            self.stream.write(f"\r\x1b[2K{line}\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write(f"\r\x1b[2K{self.count}/{self.total} cases in {time.perf_counter() - self.t0:.1f}s\n")
            self.stream.flush()
