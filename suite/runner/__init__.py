"""Runner: device and seed policy, timing and memory, atomic results, caching and resume."""

from suite.runner.execute import CACHE_POLICIES, RunOptions, execute
from suite.runner.store import RunDir

__all__ = ["CACHE_POLICIES", "RunDir", "RunOptions", "execute"]
