"""``hessian_rank``: numerical ranks of the loss, outer-product and functional Hessians (Singh et al. 2021).

The three Hessians come from :func:`suite.metrics.hessian.exact.exact_hessians` (dense, float64). Each rank
is decided on the singular values of the matrix itself (:mod:`suite.linalg.rank`; the Hessian code of
Singh et al. used ``numpy.linalg.matrix_rank``, the ``numpy`` rule, which is the default here, with the
float64 epsilon of the Hessians unless the rule names a dtype), and is
reported with its threshold and the gap ``sigma_r / sigma_{r+1}``. The functional Hessian vanishes at zero
residual, and ``H_L - H_o`` carries rounding errors of the size of ``H_L``: its threshold is computed with
``max(sigma_1(H_f), sigma_1(H_L))`` in place of ``sigma_1``, so a numerically-zero ``H_f`` has rank 0.

Data: the first ``n`` samples of the case's dataset, flattened to ``X`` of shape ``(n, d)`` for the data
rank ``r = rank(X^T X)``. Targets: for ``mse`` Gaussian targets ``(n, K)`` drawn with the case seed or the
one-hot labels; for ``cross_entropy`` the dataset's labels or uniformly random ones.

Residual rank ``s = rank(Omega)``, ``Omega = E[delta x^T] = delta^T X / n``, ``delta_i = dl/dF(x_i)``
(``(n, K)``: ``F - y`` for MSE, ``softmax(F) - onehot(y)`` for cross-entropy): it enters the functional
Hessian ranks (Singh et al. 2021, Thm 4; Singh et al. 2023, Thm 2) and is decided by the same numpy rule
in float64, on ``Omega`` computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from suite.errors import MetricError
from suite.linalg.rank import NumpyRule, RankResult, RankRule, rank_from_singular_values
from suite.metrics.hessian.exact import HessianParts, _per_sample_loss, exact_hessians, parameter_functions
from suite.metrics.registry import MetricContext, register_metric
from suite.spec.base import SpecModel

__all__ = ["HessianDataParams", "HessianProblem", "HessianRankParams", "hessian_part_ranks", "hessian_problem", "hessian_rank", "residual_rank"]

PARTS = ("outer", "functional", "loss")


class HessianDataParams(SpecModel):
    """Loss, data, targets and rank rule: the parameters shared by ``hessian_rank`` and ``hessian_rank_hvp``."""

    loss: Literal["mse", "cross_entropy"] = Field("mse", description="mse: 1/2 ||F - y||^2; cross_entropy on logits.")
    n: int | None = Field(None, ge=1, description="Use the first n samples of the dataset (default: all).")
    targets: Literal["gaussian", "one_hot"] = Field("gaussian", description="mse targets: N(0, 1) draws or one-hot labels.")
    labels: Literal["data", "random"] = Field("data", description="cross_entropy / one_hot labels: the dataset's or random.")
    tolerance: RankRule = Field(default_factory=NumpyRule, description="Rank rule (Singh et al. used numpy's).")


class HessianRankParams(HessianDataParams):
    """Parameters of ``hessian_rank``."""

    max_params: int = Field(6000, ge=1, description="Refuse nets with more parameters (dense p x p Hessians).")


def _targets(params: HessianDataParams, data: Any, n: int, k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    needs_labels = params.loss == "cross_entropy" or params.targets == "one_hot"
    if needs_labels:
        if params.labels == "data":
            if data.targets is None:
                raise MetricError("the dataset has no labels; set labels: random")
            labels = data.targets[:n].to(torch.int64)
            if int(labels.max()) >= k:
                raise MetricError(f"labels go up to {int(labels.max())} but the net has {k} outputs")
        else:
            labels = torch.randint(0, k, (n,), generator=gen)
        if params.loss == "cross_entropy":
            return labels
        return nn.functional.one_hot(labels, k).to(torch.float64)
    return torch.randn(n, k, dtype=torch.float64, generator=gen)


@dataclass(frozen=True)
class HessianProblem:
    """The data a Hessian-rank metric differentiates: inputs ``(n, ...)`` and targets (``(n, K)`` floats for
    MSE, ``(n,)`` labels for cross-entropy), float64 on the model's device, with ``K``, the data rank
    ``r = rank(X^T X)`` and the residual rank ``s = rank(E[delta x^T])``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    n_outputs: int
    data_rank: int
    residual_rank: int

    @property
    def n_samples(self) -> int:
        return int(self.inputs.shape[0])


def hessian_problem(model: nn.Module, data: Any, params: HessianDataParams, seed: int) -> HessianProblem:
    """Select the first ``n`` samples, draw or read the targets (seeded) and measure ``r`` and ``s``.

    Raises:
        MetricError: ``n`` exceeds the dataset; the model does not accept the dataset's sample shape; the
            labels do not fit the outputs.
    """
    device = next(model.parameters()).device
    available = int(data.inputs.shape[0])
    if params.n is not None and params.n > available:
        raise MetricError(f"n = {params.n} but the dataset has {available} samples")
    n = available if params.n is None else params.n
    x = data.inputs[:n].to(device, torch.float64)
    try:
        with torch.no_grad():
            k = int(model(x[:1].to(next(model.parameters()).dtype)).shape[-1])
    except RuntimeError as exc:
        raise MetricError(f"the model does not accept the dataset's samples of shape {tuple(x.shape[1:])}: {exc}") from exc
    y = _targets(params, data, n, k, seed).to(device)
    flat = x.reshape(n, -1)
    data_rank = rank_from_singular_values(torch.linalg.svdvals(flat), tuple(flat.shape), NumpyRule(), torch.float64).rank
    return HessianProblem(x, y, k, data_rank, residual_rank(model, x, y, params.loss))


def residual_rank(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss: Literal["mse", "cross_entropy"]
) -> int:
    """Residual rank ``s = rank(Omega)``, ``Omega = delta^T X / n`` (``K x d``) (Singh et al. 2021, Thm 4).

    ``delta_i = dl/dF`` at ``x_i``, the gradient of the summed per-sample loss with respect to the outputs
    of a float64 copy of the model (:func:`suite.metrics.hessian.exact.parameter_functions`); ``X`` the flattened
    inputs in float64. The rank uses numpy's rule with the float64 epsilon, as for the Hessians.

    Returns:
        ``s``, at most ``min(K, rank X)`` (``K - 1`` for cross-entropy, whose ``delta_i`` sum to 0).
    """
    params, outputs_of, _ = parameter_functions(model, inputs, targets, loss)
    y = targets.to(torch.float64) if loss == "mse" else targets.to(torch.int64)
    outputs = outputs_of(params).detach().requires_grad_(True)
    (delta,) = torch.autograd.grad(_per_sample_loss(outputs, y, loss).sum(), outputs)
    n = inputs.shape[0]
    omega = delta.mT @ inputs.reshape(n, -1).to(torch.float64) / n
    return rank_from_singular_values(torch.linalg.svdvals(omega), tuple(omega.shape), NumpyRule(), torch.float64).rank


def hessian_part_ranks(parts: HessianParts, rule: RankRule) -> dict[str, RankResult]:
    """Numerical ranks of ``H_L``, ``H_o`` and ``H_f`` (keys ``loss``, ``outer``, ``functional``) from the
    ``|eigvalsh|`` of each matrix in float64, by ``rule`` at shape ``(p, p)``. ``H_f = H_L - H_o`` carries
    rounding errors of the size of ``H_L``, so its threshold is taken at ``max(sigma_1(H_f), sigma_1(H_L))``."""
    sigma_loss = _symmetric_singular_values(parts.loss)
    out = {}
    for part in ("loss", "outer", "functional"):
        matrix = getattr(parts, part)
        sigma = sigma_loss if part == "loss" else _symmetric_singular_values(matrix)
        scale = float(sigma_loss[0]) if part == "functional" else None
        out[part] = rank_from_singular_values(sigma, tuple(matrix.shape), rule, torch.float64, scale=scale)
    return out


def _symmetric_singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values of a symmetric matrix, descending: ``|eigenvalues|`` from ``eigvalsh`` (LAPACK syevd),
    several times faster than a general SVD and as accurate (both backward stable)."""
    return torch.linalg.eigvalsh(matrix).abs().sort(descending=True).values


def summarize_ranks(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "p": values["n_params"],
        "r = rank(X^T X)": values["data_rank"],
        "s = rank(E[delta x^T])": values.get("residual_rank", "-"),
        "rank H_o": values["rank_outer"],
        "rank H_f": values["rank_functional"],
        "rank H_L": values["rank_loss"],
        "H_L rank / p": f"{values['rank_loss'] / values['n_params']:.3f}",
    }


def _details(values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["Hessian", "rank", "threshold", "sigma_1", "gap sigma_r / sigma_r+1"]
    rows = []
    for part, label in zip(PARTS, ("H_o (outer product)", "H_f (functional)", "H_L (loss)")):
        info = values[part]
        gap = "-" if info["gap"] is None else f"{info['gap']:.3g}"
        rows.append([label, info["rank"], f"{info['threshold']:.3g}", f"{info['sigma_max']:.3g}", gap])
    return headers, rows


@register_metric(HessianRankParams, needs_data=True, summarize=summarize_ranks, details=_details)
def hessian_rank(model: nn.Module, data: Any, params: HessianRankParams, ctx: MetricContext) -> dict[str, Any]:
    """Ranks of the outer-product, functional and loss Hessians in float64 (Singh et al. 2021, eq. 2-4).

    Values: ``n_params`` p, ``n_samples``, ``data_rank`` r, ``residual_rank`` s, ``ranks``
    ``[rank H_o, rank H_f, rank H_L]`` (the order of the theory predictions),
    ``rank_outer``/``rank_functional``/``rank_loss``, and per part the threshold, ``sigma_1`` and the gap.
    """
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_params > params.max_params:
        raise MetricError(f"{n_params} parameters: the dense Hessian needs max_params >= {n_params} (now {params.max_params})")
    problem = hessian_problem(model, data, params, ctx.seed)
    parts = exact_hessians(model, problem.inputs, problem.targets, params.loss)
    out: dict[str, Any] = {
        "n_params": parts.n_params, "n_samples": problem.n_samples, "n_outputs": problem.n_outputs,
        "data_rank": problem.data_rank, "residual_rank": problem.residual_rank,
    }
    for part, res in hessian_part_ranks(parts, params.tolerance).items():
        out[part] = {"rank": res.rank, "threshold": res.threshold, "sigma_max": res.sigma_max, "gap": res.gap}
        out[f"rank_{part}"] = res.rank
    out["ranks"] = [out["rank_outer"], out["rank_functional"], out["rank_loss"]]
    return out
