"""Where a run happens: device choice, seeds, and provenance (git sha, versions, device name)."""

from __future__ import annotations

import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["device_class", "device_name", "git_state", "provenance", "resolve_device", "seed_everything", "versions"]


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False; use --device auto or cpu")
    return torch.device(requested)


def device_class(device: torch.device) -> str:
    """Baseline key of a device: ``cpu`` or ``cuda``."""
    return "cuda" if device.type == "cuda" else "cpu"


def device_name(device: torch.device) -> str:
    """GPU name for CUDA devices, the processor description otherwise."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def git_state(root: Path | None = None) -> dict[str, Any]:
    """``{"sha": ..., "dirty": bool}`` of the repository holding ``root`` (``None`` values outside git)."""
    cwd = str(root or Path.cwd())
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"sha": None, "dirty": None}
    if sha.returncode != 0:
        return {"sha": None, "dirty": None}
    return {"sha": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}


def versions() -> dict[str, str]:
    """Versions of python, torch, timm, numpy and ranksuite."""
    out = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__}
    try:
        import timm

        out["timm"] = timm.__version__
    except ImportError:  # timm is a dependency, but provenance must not crash a run
        out["timm"] = "not installed"
    from suite import __version__

    out["ranksuite"] = __version__
    return out


def provenance(device: torch.device) -> dict[str, Any]:
    """Everything a result needs to be comparable: git state, versions, device."""
    return {
        "git": git_state(),
        "versions": versions(),
        "device": str(device),
        "device_class": device_class(device),
        "device_name": device_name(device),
        "platform": platform.platform(),
    }
