"""Compare measured values with baselines and theory: check kinds, tolerances, verdicts, baselines."""

from suite.compare import checks as _checks  # noqa: F401  (registers baseline, theory, monotone)
from suite.compare.registry import CHECKS, CheckContext, Verdict, register_check

__all__ = ["CHECKS", "CheckContext", "Verdict", "register_check"]
