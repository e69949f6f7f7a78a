"""``hessian_rank_hvp``: ranks of ``H_L``, ``H_o`` and ``H_f`` from Hessian-vector products, for nets too large
for a dense ``p x p`` Hessian.

The operators are those of :mod:`suite.metrics.hessian.hvp` (matrix-free, float64; Singh, Bachmann &
Hofmann 2021, eq. 2-4), the ranks come from the randomised sketch of :mod:`suite.metrics.hessian.sketch`
(Halko, Martinsson & Tropp 2011, Alg. 4.2 and Rayleigh-Ritz), decided with the same rule and threshold as
the dense ``hessian_rank``: ``numpy`` by default, ``sigma_1 p eps(float64)`` with ``sigma_1`` the largest
Ritz value, and for ``H_f`` ``max(sigma_1(H_f), sigma_1(H_L))`` in place of ``sigma_1`` (``H_f = H_L - H_o``
carries rounding errors of the size of ``H_L``). ``H_L`` is sketched first, for that scale.

Data and targets are chosen as in ``hessian_rank`` (the first ``n`` samples; Gaussian or one-hot targets for
MSE, the dataset's or random labels for cross-entropy; the case seed). The sketches use the case seed.
With ``cross_check_max_params >= p`` the dense ``exact_hessians`` ranks are computed too (``exact_ranks``), so
a spec can check ``{kind: theory, key: ranks, expected_key: exact_ranks, relation: equal}``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from suite.errors import MetricError
from suite.linalg.rank import NumpyRule, RankRule
from suite.metrics.hessian.exact import Loss, exact_hessians
from suite.metrics.hessian.hvp import hessian_operators
from suite.metrics.hessian.rank import PARTS, HessianDataParams, hessian_part_ranks, hessian_problem, summarize_ranks
from suite.metrics.hessian.sketch import SketchRank, sketch_rank
from suite.metrics.registry import MetricContext, register_metric

__all__ = ["HessianRankHVPParams", "dense_hessian_ranks", "hessian_rank_hvp", "sketched_hessian_ranks"]


_N_BELOW = 3  # Ritz values below the threshold recorded per part


class HessianRankHVPParams(HessianDataParams):
    """Parameters of ``hessian_rank_hvp``."""

    oversample: int = Field(10, ge=1, description="Stop once the sketch exceeds the counted rank by this many vectors.")
    block: int = Field(64, ge=1, description="Gaussian vectors per sketch step (products are batched over a block).")
    max_sketch: int | None = Field(
        None, ge=1, description="Largest sketch (default p); a sketch that stops there unconverged is an error."
    )
    cross_check_max_params: int = Field(
        0, ge=0, description="Also compute the dense exact ranks (exact_ranks) when p <= this."
    )


def _part_info(res: SketchRank) -> dict[str, Any]:
    below = res.ritz[res.rank : res.rank + _N_BELOW].tolist()
    return {
        "rank": res.rank,
        "threshold": res.threshold,
        "sigma_max": res.sigma_max,
        "gap": res.gap,
        "sketch": res.sketch_size,
        "matvecs": res.matvecs,
        "exact": res.exact,
        "checks": res.checks,
        "residual": res.residual,
        "ritz_below": below,
    }


def dense_hessian_ranks(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss: Loss, rule: RankRule | None = None
) -> list[int]:
    """``[rank H_o, rank H_f, rank H_L]`` of the dense ``exact_hessians``, decided as ``hessian_rank`` decides
    them (``|eigvalsh|``, the rule at shape ``(p, p)`` and float64, ``H_f`` on the scale of ``sigma_1(H_L)``)."""
    ranks = hessian_part_ranks(exact_hessians(model, inputs, targets, loss), rule or NumpyRule())
    return [ranks[part].rank for part in PARTS]


def sketched_hessian_ranks(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: Loss,
    rule: RankRule | None = None,
    *,
    oversample: int = 10,
    block: int = 64,
    max_sketch: int | None = None,
    seed: int = 0,
) -> dict[str, SketchRank]:
    """Sketched ranks of ``H_L``, ``H_o``, ``H_f`` (keys ``loss``, ``outer``, ``functional``) from products.

    ``H_L`` is sketched first: its ``sigma_1`` is the threshold scale of ``H_f``. Arguments as in
    :func:`~suite.metrics.hessian.hvp.hessian_operators` and :func:`~suite.metrics.hessian.sketch.sketch_rank`;
    every sketch uses ``seed``. Inputs and targets are used on the model's device.
    """
    device = next(model.parameters()).device
    ops = hessian_operators(model, inputs.to(device), targets.to(device), loss)
    out: dict[str, SketchRank] = {}
    for part in ("loss", "outer", "functional"):
        scale = out["loss"].sigma_max if part == "functional" else None
        out[part] = sketch_rank(
            getattr(ops, part), ops.n_params, rule, scale=scale, oversample=oversample, block=block,
            max_sketch=max_sketch, seed=seed, device=device,
        )
    return out


def _summarize(values: dict[str, Any]) -> dict[str, Any]:
    row = {**summarize_ranks(values), "matvecs / p": f"{sum(values['matvecs']) / values['n_params']:.2f}"}
    if "exact_ranks" in values:
        row["dense agrees"] = "yes" if values["exact_ranks"] == values["ranks"] else "NO"
    return row


def _details(values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["Hessian", "rank", "threshold", "sigma_1", "gap", "sketch", "matvecs", "checks"]
    if "exact_ranks" in values:
        headers.append("dense rank")
    rows = []
    for i, (part, label) in enumerate(zip(PARTS, ("H_o (outer product)", "H_f (functional)", "H_L (loss)"))):
        info = values[part]
        gap = "-" if info["gap"] is None else f"{info['gap']:.3g}"
        row = [
            label, info["rank"], f"{info['threshold']:.3g}", f"{info['sigma_max']:.3g}", gap,
            info["sketch"], info["matvecs"], info["checks"],
        ]
        if "exact_ranks" in values:
            row.append(values["exact_ranks"][i])
        rows.append(row)
    return headers, rows


@register_metric(HessianRankHVPParams, needs_data=True, version=2, summarize=_summarize, details=_details)  # 2: stop rule confirmed by one more block
def hessian_rank_hvp(model: nn.Module, data: Any, params: HessianRankHVPParams, ctx: MetricContext) -> dict[str, Any]:
    """Ranks of the outer-product, functional and loss Hessians from Hessian-vector products (float64).

    Values: ``n_params`` p, ``n_samples``, ``n_outputs``, ``data_rank`` r, ``residual_rank`` s (as in
    ``hessian_rank``, for the theories that read it), ``ranks``
    ``[rank H_o, rank H_f, rank H_L]`` (the order of the theory predictions),
    ``rank_outer``/``rank_functional``/``rank_loss``, per part (``outer``, ``functional``, ``loss``) the
    threshold, ``sigma_1`` (largest Ritz value), the gap, sketch size, operator applications, number of
    Rayleigh-Ritz checks, the last block's residual and the first Ritz values below the threshold;
    ``sketch_sizes`` and ``matvecs`` in the order of ``ranks``; ``exact_ranks`` when ``p <=
    cross_check_max_params``.

    Raises:
        MetricError: when a sketch reaches ``max_sketch`` before its stop rule holds.
    """
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    problem = hessian_problem(model, data, params, ctx.seed)
    x, y = problem.inputs, problem.targets
    out: dict[str, Any] = {
        "n_params": n_params, "n_samples": problem.n_samples, "n_outputs": problem.n_outputs,
        "data_rank": problem.data_rank, "residual_rank": problem.residual_rank,
    }
    sketches = sketched_hessian_ranks(
        model, x, y, params.loss, params.tolerance, oversample=params.oversample, block=params.block,
        max_sketch=params.max_sketch, seed=ctx.seed,
    )
    for part in PARTS:
        res = sketches[part]
        if not res.converged:
            raise MetricError(
                f"the {part} Hessian's sketch reached max_sketch = {res.sketch_size} with {res.rank} Ritz values above "
                f"the threshold (a lower bound on the rank); raise max_sketch (p = {res.n})"
            )
        out[part] = _part_info(res)
        out[f"rank_{part}"] = res.rank
    out["ranks"] = [out[f"rank_{part}"] for part in PARTS]
    out["sketch_sizes"] = [out[part]["sketch"] for part in PARTS]
    out["matvecs"] = [out[part]["matvecs"] for part in PARTS]
    if n_params <= params.cross_check_max_params:
        out["exact_ranks"] = dense_hessian_ranks(model, x, y, params.loss, params.tolerance)
    return out
