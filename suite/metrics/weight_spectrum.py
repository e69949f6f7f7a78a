"""``weight_spectrum``: singular values and numerical rank of every linear map of a model.

Which matrix is ranked:

* ``nn.Linear`` with weight ``W`` of shape ``(out, in)``: ``W`` itself.
* ``nn.Conv{1,2,3}d`` with weight of shape ``(o, i/g, K_1, ..., K_d)``: the flattened
  ``o x (i/g * prod K)`` matrix (the SVR convention of Meller & Berkouk, Sec. 2.2). For grouped
  convolutions (``g > 1``) this stacks the groups' kernels side by side, not the block-diagonal map.

Per map it reports the singular values (float64), the numerical rank under the spec's rule
(:mod:`suite.linalg.rank`), the threshold and the gap ``sigma_r / sigma_{r+1}``, the stable rank
``sum sigma_i^2 / sigma_1^2`` and the effective rank ``exp(H(sigma / sum sigma))`` (Roy & Vetterli 2007).
Maps of equal shape are decomposed together in one batched ``svdvals`` call. Biases are ignored.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from suite.errors import MetricError
from suite.linalg.rank import FengRule, RankRule, effective_rank, rank_from_singular_values, singular_values, stable_rank
from suite.metrics.registry import MetricContext, register_metric
from suite.spec.base import SpecModel

__all__ = ["WeightSpectrumParams", "linear_maps", "weight_spectrum"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class WeightSpectrumParams(SpecModel):
    """Parameters of ``weight_spectrum``."""

    tolerance: RankRule = Field(default_factory=FengRule, description="Numerical-rank rule (suite.linalg.rank).")
    layers: list[str] = Field(["*"], min_length=1, description="fnmatch patterns of module names to include.")
    layer_types: list[Literal["linear", "conv"]] = Field(["linear", "conv"], min_length=1)
    keep_singular_values: bool = Field(True, description="Store every singular value in the results.")


def linear_maps(model: nn.Module, patterns: list[str], layer_types: list[str]) -> list[tuple[str, str, torch.Tensor]]:
    """``(name, kind, matrix)`` for every Linear/Conv module whose name matches one of ``patterns``.

    ``matrix`` has shape ``(out, in)`` for Linear and ``(o, i/g * prod K)`` for conv; it is a view of the
    weight, detached.
    """
    maps = []
    for name, module in model.named_modules():
        if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if isinstance(module, nn.Linear) and "linear" in layer_types:
            maps.append((name, "linear", module.weight.detach()))
        elif isinstance(module, _CONV) and "conv" in layer_types:
            kind = type(module).__name__.lower()
            maps.append((name, kind, module.weight.detach().reshape(module.weight.shape[0], -1)))
    return maps


def _summarize(values: dict[str, Any]) -> dict[str, Any]:
    ranks, full = values["ranks"], values["full_ranks"]
    deficient = [n for n, r, f in zip(values["layers"], ranks, full) if r < f]
    return {
        "maps": values["n_layers"],
        "rank-deficient maps": len(deficient),
        "sum rank / sum min(M,N)": f"{sum(ranks)}/{sum(full)}",
        "min stable rank": f"{min(values['stable_ranks']):.2f}" if ranks else "-",
        "smallest gap": _fmt_gap(min((g for g in values["gaps"] if g is not None), default=None)),
    }


def _fmt_gap(gap: float | None) -> str:
    return "-" if gap is None else f"{gap:.3g}"


def _details(values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["layer", "kind", "M x N", "sigma_1", "threshold", "rank", "min(M,N)", "gap", "stable rank", "eff. rank"]
    rows = [
        [
            name,
            kind,
            f"{shape[0]} x {shape[1]}",
            f"{smax:.4g}",
            f"{thr:.3g}",
            rank,
            full,
            _fmt_gap(gap),
            f"{sr:.2f}",
            f"{er:.2f}",
        ]
        for name, kind, shape, smax, thr, rank, full, gap, sr, er in zip(
            values["layers"],
            values["kinds"],
            values["shapes"],
            values["sigma_max"],
            values["thresholds"],
            values["ranks"],
            values["full_ranks"],
            values["gaps"],
            values["stable_ranks"],
            values["effective_ranks"],
        )
    ]
    return headers, rows


def _plot(values: dict[str, Any]) -> list[tuple[str, Any]]:
    """Normalised spectra sigma_i / sigma_1 of every map against i / min(M, N), log scale, with ranks marked."""
    if not values.get("singular_values"):
        return []
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    cmap = plt.get_cmap("viridis")
    n = len(values["singular_values"])
    for i, (name, sigma, rank, thr) in enumerate(
        zip(values["layers"], values["singular_values"], values["ranks"], values["thresholds"])
    ):
        top = sigma[0] if sigma and sigma[0] > 0 else None
        if top is None:
            continue
        xs = [(k + 1) / len(sigma) for k in range(len(sigma))]
        ys = [max(v / top, 1e-18) for v in sigma]
        ax.plot(xs, ys, color=cmap(i / max(n - 1, 1)), lw=1, label=name if n <= 8 else None)
        ax.axhline(thr / top, color=cmap(i / max(n - 1, 1)), lw=0.5, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("i / min(M, N)")
    ax.set_ylabel("sigma_i / sigma_1")
    ax.set_title("singular values per map (dotted: rank threshold); colour = depth")
    if n <= 8:
        ax.legend(fontsize=7)
    return [("normalised singular values per map", fig)]


@register_metric(
    WeightSpectrumParams, needs_data=False, version=1, summarize=_summarize, details=_details, plot=_plot
)
def weight_spectrum(
    model: nn.Module, data: None, params: WeightSpectrumParams, ctx: MetricContext
) -> dict[str, Any]:
    """Singular values, numerical rank, gap, stable and effective rank of every linear map (see module doc).

    Returns a dict of per-layer lists, aligned: ``layers``, ``kinds``, ``shapes`` ([M, N]), ``ranks``,
    ``full_ranks`` (min(M, N)), ``thresholds``, ``gaps`` (None where undefined), ``sigma_max``,
    ``stable_ranks``, ``effective_ranks``, ``singular_values`` (when kept); plus ``n_layers`` and ``rule``.
    """
    maps = linear_maps(model, params.layers, params.layer_types)
    if not maps:
        raise MetricError(f"no Linear/Conv module matches layers={params.layers} and layer_types={params.layer_types}")
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (_, _, w) in enumerate(maps):
        by_shape[(w.shape[0], w.shape[1])].append(i)
    sigmas: list[torch.Tensor] = [torch.empty(0)] * len(maps)
    for idx in by_shape.values():
        values = singular_values(torch.stack([maps[i][2] for i in idx]).to(ctx.device)).cpu()
        for j, i in enumerate(idx):
            sigmas[i] = values[j]
    out: dict[str, list[Any]] = defaultdict(list)
    for (name, kind, w), sigma in zip(maps, sigmas):
        shape = (int(w.shape[0]), int(w.shape[1]))
        rank = rank_from_singular_values(sigma, shape, params.tolerance, w.dtype)
        out["layers"].append(name)
        out["kinds"].append(kind)
        out["shapes"].append(list(shape))
        out["ranks"].append(rank.rank)
        out["full_ranks"].append(rank.n_singular)
        out["thresholds"].append(rank.threshold)
        out["gaps"].append(rank.gap)
        out["sigma_max"].append(rank.sigma_max)
        out["stable_ranks"].append(stable_rank(sigma))
        out["effective_ranks"].append(effective_rank(sigma))
        if params.keep_singular_values:
            out["singular_values"].append(sigma.tolist())
    return {**out, "n_layers": len(maps), "rule": params.tolerance.model_dump()}
