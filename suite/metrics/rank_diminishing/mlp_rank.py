"""``jacobian_rank`` and ``feature_dimension``: full Jacobian rank and feature dimension per layer of small nets.

The toy of Feng et al., NeurIPS 2022 (Sec. 4.3, "Implicit Impetus", Fig. 1 d-f): MLP-50, 50 dense layers of
1,000 units fed with Gaussian vectors, three random weight draws. Theorem 5: for products of ``L``
independent Gaussian matrices the numerical rank ``Rank_eps`` falls exponentially with ``L``. As all feature
manifolds of a linear MLP are linear subspaces, their intrinsic dimension is the numerical rank of the
feature covariance. Both are measured per layer:

* ``jacobian_rank``: ``Rank_eps(J_l(x))`` of the full Jacobian ``J_l = d h_l / d x`` of the slice input ->
  layer ``l`` (Thm. 2, eq. 7: non-increasing in ``l``), for the first ``n_inputs`` inputs. All layers'
  Jacobians come from the same forward-mode passes (:func:`~.partial_jacobian.forward_jacobians`, one-hot
  tangents over every input coordinate); ranks from the singular values of ``J`` itself in float64.
* ``feature_dimension``: numerical rank of the covariance ``Sigma_l = F_c^T F_c / (n - 1)`` of the centred
  features ``F_c = F_l - mean`` (``n x d_l``, over the dataset; Thm. 2, eq. 8: non-increasing in ``l``).
  ``Sigma_l`` is never formed: ``F_c`` is centred in float64 and its singular values ``s_i`` give the
  eigenvalues ``lambda_i = s_i^2 / (n - 1)``; ``rank_of: covariance`` (default, the paper's "numerical rank of
  the covariance matrix") counts ``lambda_i > eps * lambda_1`` with the rule's ``eps`` for a ``d_l x d_l``
  matrix (Feng eq. 4: ``eps = 1.19e-7 * d_l``), i.e. ``s_i > sqrt(eps) * s_1``; ``rank_of: features`` applies
  the rule to ``F_c`` itself (``s_i > eps' * s_1`` with ``eps' = 1.19e-7 * min(n, d_l)``).

Both report the exponential decay fitted by :func:`exponential_decay_fit`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from suite.errors import MetricError
from suite.linalg.rank import FengRule, RankRule, rank_from_singular_values, singular_values
from suite.metrics.rank_diminishing.partial_jacobian import (
    eval_model,
    forward_jacobians,
    jacobian_ranks,
    plot_rank_profile,
    plot_singular_values,
    rank_profile,
)
from suite.metrics.registry import MetricContext, register_metric
from suite.models.layers import capture_outputs, select_layers
from suite.spec.base import SpecModel

__all__ = [
    "FeatureDimensionParams",
    "JacobianRankParams",
    "exponential_decay_fit",
    "feature_dimension",
    "jacobian_rank",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def exponential_decay_fit(ranks: list[float]) -> dict[str, Any]:
    """Least-squares fit of ``log r_l = a - b l`` over the decaying part of a rank profile (Feng et al. Thm. 5).

    ``l = 1, ..., L`` is the position of the point in the profile. The decaying part runs from the last
    point that still has the profile's maximum rank (end of the initial plateau) to the first point that
    reaches the profile's smallest positive rank (start of the floor, e.g. rank 1), both included; points of
    rank 0 are excluded (log undefined). ``b`` is fitted by ordinary least squares on ``log r_l``.

    Returns ``rate`` (``b``, per layer; ``None`` with fewer than 2 decaying points), ``intercept`` (``a``),
    ``r2`` (coefficient of determination of the log-linear fit; ``None`` when undefined), ``half_life``
    (``log 2 / b`` layers), ``fit_range`` (1-based ``[first, last]`` layer of the fit) and ``n_points``. For
    comparison, ``power_r2`` is the r^2 of the power law ``log r_l = a' - c log l`` over the same range and
    ``power_exponent`` its ``c`` (products of Gaussian matrices have rank ~ 1 / l at large depth for a
    fixed relative threshold, see REFERENCE.md section 1 -- which law fits better is a measured outcome).
    """
    none = {"rate": None, "intercept": None, "r2": None, "half_life": None, "fit_range": None, "n_points": 0,
            "power_exponent": None, "power_r2": None}
    pos = [(i, float(r)) for i, r in enumerate(ranks) if r > 0]
    if len(pos) < 2:
        return none
    top = max(r for _, r in pos)
    low = min(r for _, r in pos)
    start = max(i for i, r in pos if r == top)
    stop = min(i for i, r in pos if r == low and i >= start) if any(r == low and i >= start for i, r in pos) else start
    seg = [(i + 1, r) for i, r in pos if start <= i <= stop]
    if len(seg) < 2:
        return {**none, "fit_range": [start + 1, stop + 1], "n_points": len(seg)}

    def ols(xs: list[float], ys: list[float]) -> tuple[float, float, float | None]:
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
        slope = sxy / sxx
        icpt = my - slope * mx
        sst = sum((y - my) ** 2 for y in ys)
        sse = sum((y - icpt - slope * x) ** 2 for x, y in zip(xs, ys))
        return slope, icpt, (1.0 - sse / sst) if sst > 0 else None

    depth = [float(d) for d, _ in seg]
    ys = [math.log(r) for _, r in seg]
    slope, icpt, r2 = ols(depth, ys)
    pslope, _, pr2 = ols([math.log(d) for d in depth], ys)
    rate = -slope
    return {
        "rate": rate,
        "intercept": icpt,
        "r2": r2,
        "half_life": math.log(2) / rate if rate > 0 else None,
        "fit_range": [seg[0][0], seg[-1][0]],
        "n_points": len(seg),
        "power_exponent": -pslope,
        "power_r2": pr2,
    }


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _summary_common(values: dict[str, Any], key: str) -> dict[str, Any]:
    r = values[key]
    fit = values["decay_fit"]
    return {
        "points": len(r),
        f"{key} first -> last": f"{r[0]:g} -> {r[-1]:g}" if r else "-",
        "decay rate / layer": _fmt(fit["rate"]),
        "fit r2 (exp | power)": f"{_fmt(fit['r2'], '.3f')} | {_fmt(fit['power_r2'], '.3f')}",
        "fit layers": "-" if fit["fit_range"] is None else f"{fit['fit_range'][0]}..{fit['fit_range'][1]}",
    }


# --------------------------------------------------------------------------------------------------------------
# jacobian_rank
# --------------------------------------------------------------------------------------------------------------


class JacobianRankParams(SpecModel):
    """Parameters of ``jacobian_rank``."""

    layers: Literal["auto"] | list[str] = Field(
        "auto", description="'auto' (for nn.Sequential: every Linear/activation output) or module names."
    )
    tolerance: RankRule = Field(default_factory=FengRule, description="Numerical-rank rule (suite.linalg.rank).")
    n_inputs: int = Field(3, ge=1, description="Inputs at which the Jacobian is taken (the first ones).")
    dtype: Literal["float32", "float64"] = Field("float32", description="Precision of the forward pass.")
    chunk_size: int | None = Field(None, ge=1, description="Tangent columns per vmap chunk (None: memory budget).")
    memory_budget_mb: float | None = Field(None, gt=0, description="Budget of one chunk (see partial_jacobian_rank).")
    keep_singular_values: bool = Field(True, description="Store the first input's singular values per layer.")


def _jr_summarize(values: dict[str, Any]) -> dict[str, Any]:
    return {"input dim": values["input_dim"], **_summary_common(values, "mean_ranks")}


def _jr_details(values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["point", "out dim", "rank (input 0)", "mean", "std", "threshold", "gap"]
    rows = [
        [lab, d, r, f"{m:.2f}", f"{s:.2f}", f"{t:.3g}", _fmt(g)]
        for lab, d, r, m, s, t, g in zip(
            values["layers"], values["out_dims"], values["ranks_first"], values["mean_ranks"], values["std_ranks"],
            values["thresholds"], values["gaps"],
        )
    ]
    return headers, rows


def _jr_plot(values: dict[str, Any]) -> list[tuple[str, Any]]:
    vals = {**values, "K": values["input_dim"]}
    figs = [("Jacobian rank vs depth", plot_rank_profile(vals, "Jacobian rank per layer"))]
    if values.get("singular_values"):
        figs.append(("normalised singular values per layer",
                     plot_singular_values(vals, "singular values of J per layer (input 0); colour = depth")))
    return figs


@register_metric(
    JacobianRankParams, needs_data=True, version=1, summarize=_jr_summarize, details=_jr_details, plot=_jr_plot
)
def jacobian_rank(model: nn.Module, data: Any, params: JacobianRankParams, ctx: MetricContext) -> dict[str, Any]:
    """Full Jacobian rank (input -> layer) per layer at a few inputs, with an exponential decay fit (Feng Thm. 5).

    Returns (aligned with ``layers``): ``layers``, ``modules``, ``out_dims``, ``full_ranks``
    (``min(out_dim, input_dim)``), ``ranks`` (``[input][layer]``), ``ranks_first``, ``mean_ranks``,
    ``std_ranks``, and for input 0 ``thresholds``, ``gaps``, ``sigma_max``, ``singular_values``; plus
    ``input_dim``, ``n_inputs``, ``decay_fit`` (:func:`exponential_decay_fit` of ``mean_ranks``), ``rule``,
    ``dtype``, ``chunk_size``.
    """
    if data is None:
        raise MetricError("jacobian_rank needs a dataset")
    dtype = _DTYPES[params.dtype]
    points = select_layers(model, params.layers)
    names = [m for _, m in points]
    n_inputs = min(params.n_inputs, int(data.inputs.shape[0]))
    input_dim = int(data.inputs[0].numel())
    ranks: list[list[int]] = []
    first: dict[str, list[Any]] = {"thresholds": [], "gaps": [], "sigma_max": [], "singular_values": []}
    out_dims: list[int] = []
    chunk = params.chunk_size
    with eval_model(model, dtype, ctx.device) as net:
        for i in range(n_inputs):
            x = data.inputs[i].to(device=ctx.device, dtype=dtype)
            fj = forward_jacobians(net, lambda p: p[None], x, names, chunk_size=chunk,
                                   memory_budget_mb=params.memory_budget_mb)
            chunk = fj.chunk_size
            out_dims = [int(j.shape[0]) for j in fj.jacobians]
            row = jacobian_ranks(fj.jacobians, params.tolerance, dtype, first if i == 0 else None)
            ranks.append(row)
    profile = rank_profile(points, out_dims, input_dim, ranks, first, params.keep_singular_values)
    return {
        **profile,
        "input_dim": input_dim,
        "n_inputs": n_inputs,
        "decay_fit": exponential_decay_fit(profile["mean_ranks"]),
        "rule": params.tolerance.model_dump(),
        "dtype": params.dtype,
        "chunk_size": chunk,
    }


# --------------------------------------------------------------------------------------------------------------
# feature_dimension
# --------------------------------------------------------------------------------------------------------------


class FeatureDimensionParams(SpecModel):
    """Parameters of ``feature_dimension``."""

    layers: Literal["auto"] | list[str] = Field(
        "auto", description="'auto' (for nn.Sequential: every Linear/activation output) or module names."
    )
    tolerance: RankRule = Field(default_factory=FengRule, description="Numerical-rank rule (suite.linalg.rank).")
    rank_of: Literal["covariance", "features"] = Field(
        "covariance",
        description="Rank of the covariance (eigenvalues s_i^2, paper) or of the centred feature matrix (s_i).",
    )
    n_samples: int | None = Field(None, ge=2, description="Dataset samples used (None: all).")
    batch_size: int = Field(1024, ge=1, description="Samples per forward pass.")
    dtype: Literal["float32", "float64"] = Field("float32", description="Precision of the forward pass.")
    keep_singular_values: bool = Field(True, description="Store the singular values of every centred feature matrix.")


def _fd_summarize(values: dict[str, Any]) -> dict[str, Any]:
    return {"samples": values["n_samples"], "input dim": values["input_feature_dim"],
            **_summary_common(values, "dims")}


def _fd_details(values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["point", "width", "dim", "threshold", "gap"]
    rows = [[lab, d, r, f"{t:.3g}", _fmt(g)] for lab, d, r, t, g in
            zip(values["layers"], values["out_dims"], values["dims"], values["thresholds"], values["gaps"])]
    return headers, rows


def _fd_plot(values: dict[str, Any]) -> list[tuple[str, Any]]:
    vals = {**values, "ranks": [values["dims"]], "mean_ranks": values["dims"],
            "std_ranks": [0.0] * len(values["dims"]), "full_ranks": values["out_dims"]}
    figs = [("feature dimension vs depth", plot_rank_profile(vals, f"feature dimension ({values['rank_of']})"))]
    if values.get("singular_values"):
        figs.append(("normalised singular values of centred features",
                     plot_singular_values({**vals, "thresholds": values["sv_thresholds"]},
                                          "singular values of centred features; colour = depth")))
    return figs


@register_metric(
    FeatureDimensionParams, needs_data=True, version=1, summarize=_fd_summarize, details=_fd_details, plot=_fd_plot
)
def feature_dimension(
    model: nn.Module, data: Any, params: FeatureDimensionParams, ctx: MetricContext
) -> dict[str, Any]:
    """Numerical rank of the feature covariance per layer over the dataset, with an exponential decay fit.

    See the module docstring for the formulas. Returns (aligned with ``layers``): ``layers``, ``modules``,
    ``out_dims``, ``dims`` (the numerical ranks), ``thresholds`` (on the ranked quantity: eigenvalues
    ``s_i^2`` for ``covariance``, ``s_i`` for ``features``), ``sv_thresholds`` (the same threshold on the
    scale of ``s_i``), ``gaps`` (``s_r / s_{r+1}``), ``singular_values`` (of the centred features); plus
    ``input_feature_dim`` (the same rank for the inputs), ``n_samples``, ``decay_fit``, ``rank_of``, ``rule``.
    """
    if data is None:
        raise MetricError("feature_dimension needs a dataset")
    dtype = _DTYPES[params.dtype]
    points = select_layers(model, params.layers)
    names = [m for _, m in points]
    inputs = data.inputs if params.n_samples is None else data.inputs[: params.n_samples]
    n = int(inputs.shape[0])
    if n < 2:
        raise MetricError("feature_dimension needs at least 2 samples")
    feats: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    with (
        eval_model(model, dtype, ctx.device) as net,
        capture_outputs(net, names, clone=False) as store,
        torch.no_grad(),
    ):
        for s in range(0, n, params.batch_size):
            store.clear()
            net(inputs[s : s + params.batch_size].to(device=ctx.device, dtype=dtype))
            for name in names:
                feats[name].append(store[name].reshape(store[name].shape[0], -1).to(torch.float64))

    def rank_and_sigma(f: torch.Tensor) -> tuple[Any, torch.Tensor, float]:
        fc = f - f.mean(0, keepdim=True)
        sigma = singular_values(fc)
        d = fc.shape[1]
        if params.rank_of == "covariance":
            res = rank_from_singular_values(sigma**2, (d, d), params.tolerance, dtype)
            sv_thr = math.sqrt(res.threshold)
        else:
            res = rank_from_singular_values(sigma, (fc.shape[0], d), params.tolerance, dtype)
            sv_thr = res.threshold
        return res, sigma, sv_thr

    keys = ("out_dims", "dims", "thresholds", "sv_thresholds", "gaps", "singular_values")
    out: dict[str, list[Any]] = {k: [] for k in keys}
    for name in names:
        f = torch.cat(feats.pop(name))
        res, sigma, sv_thr = rank_and_sigma(f)
        out["out_dims"].append(int(f.shape[1]))
        out["dims"].append(res.rank)
        out["thresholds"].append(res.threshold)
        out["sv_thresholds"].append(sv_thr)
        # the gap is reported on singular values of F_c (the square root of the eigenvalue gap)
        gap = res.gap if res.gap is None or params.rank_of == "features" else math.sqrt(res.gap)
        out["gaps"].append(gap)
        out["singular_values"].append(sigma.cpu().tolist())
    in_res, _, _ = rank_and_sigma(inputs.reshape(n, -1).to(torch.float64))
    if not params.keep_singular_values:
        out.pop("singular_values")
    return {
        "layers": [lab for lab, _ in points],
        "modules": names,
        **out,
        "input_feature_dim": in_res.rank,
        "n_samples": n,
        "decay_fit": exponential_decay_fit([float(d) for d in out["dims"]]),
        "rank_of": params.rank_of,
        "rule": params.tolerance.model_dump(),
        "dtype": params.dtype,
    }
