"""Performance harness: ours-vs-reference pairs timed in one process (``ranksuite bench``)."""

from suite.bench import hessian as _hessian  # noqa: F401  (registers its pairs)
from suite.bench import hessian_hvp as _hessian_hvp  # noqa: F401  (registers its pairs)
from suite.bench import rank_diminishing as _rank_diminishing  # noqa: F401  (registers its pairs)
from suite.bench import svr as _svr  # noqa: F401  (registers its pairs)
from suite.bench import weight_spectrum as _weight_spectrum  # noqa: F401  (registers its pairs)
from suite.bench.harness import PAIRS, Pair, PairResult, register_pair, run_pair, time_callable

__all__ = ["PAIRS", "Pair", "PairResult", "register_pair", "run_pair", "time_callable"]
