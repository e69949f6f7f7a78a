"""Numerical linear algebra shared by every metric family (ranks, spectra)."""

from suite.linalg.rank import (
    EPS_FLOAT32,
    EPS_FLOAT64,
    RankResult,
    RankRule,
    effective_rank,
    numerical_rank,
    rank_from_singular_values,
    rank_threshold,
    singular_values,
    stable_rank,
)

__all__ = [
    "EPS_FLOAT32",
    "EPS_FLOAT64",
    "RankResult",
    "RankRule",
    "effective_rank",
    "numerical_rank",
    "rank_from_singular_values",
    "rank_threshold",
    "singular_values",
    "stable_rank",
]
