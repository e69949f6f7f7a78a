"""Wall time (CUDA-synchronised) and peak memory of a block of work."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Measurement", "measure"]

_PAGE = 4096


def _rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Measurement:
    """Filled in when the ``measure`` block exits.

    Attributes:
        time_s: wall-clock seconds (after ``torch.cuda.synchronize`` on CUDA).
        peak_bytes: CUDA: ``torch.cuda.max_memory_allocated`` during the block; CPU: the peak resident
            set size sampled every 2 ms, minus the size at entry (memory the block added).
        memory_kind: ``cuda_allocated`` or ``rss_delta``.
    """

    time_s: float = 0.0
    peak_bytes: int = 0
    memory_kind: str = "rss_delta"


class measure:  # noqa: N801 (used as a context manager, like a function)
    """``with measure(device) as m: ...`` then read ``m.time_s`` and ``m.peak_bytes``."""

    def __init__(self, device: torch.device, sample_interval_s: float = 0.002):
        self.device = device
        self.interval = sample_interval_s
        self.result = Measurement()
        self._stop = threading.Event()
        self._peak = 0
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def __enter__(self) -> Measurement:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start_mem = torch.cuda.memory_allocated(self.device)
            self.result.memory_kind = "cuda_allocated"
        else:
            self._start_mem = _rss_bytes()
            self._peak = self._start_mem
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        return self.result

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.result.time_s = time.perf_counter() - self._t0
        if self.device.type == "cuda":
            self.result.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.result.peak_bytes = max(0, self._peak - self._start_mem)
