"""``svr``: the Singular Value Representation of a model (Meller & Berkouk): spectral neurons of every
map, adjacency between consecutive maps, significant edges against the null model, internal dimensions
and node colour intensities. Reads only the weights (``dataset: none``).

Formulas are in :mod:`suite.metrics.svr.spectral` (decomposition, adjacency, internal dimensions) and
:mod:`suite.metrics.svr.significance` (null models, thresholds); which maps form the chain, and what the
graph means around skip connections, in :mod:`suite.metrics.svr.maps`.

Beyond the paper, each layer pair reports where its significant edges sit: the share of them joining
the top ``top_fraction`` spectral neurons on both sides, next to that block's share of all coefficients
(the null expectation); their ratio is the *top lift* (> 1: edges concentrate among the top singular
values, as after training, Sec. 3.1). The same for the bottom block (near-kernel connections of
BatchNorm VGGs, Sec. 5.2), and the *super-feature* chain: pairs where the edge between the two top
spectral neurons is significant and the strongest of the top neuron's column (Sec. 5.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from suite.errors import MetricError
from suite.metrics.registry import MetricContext, register_metric
from suite.metrics.svr.maps import SvrChain, SvrMap, kernel_size_label, svr_chain
from suite.metrics.svr.significance import expected_null_count, sigma_to_tail, threshold
from suite.metrics.svr.spectral import (
    SpectralNeurons,
    adjacency,
    decompose,
    internal_dimensions,
    node_intensity,
)
from suite.spec.base import SpecModel

__all__ = ["SvrParams", "SvrResult", "compute_svr", "pair_statistics", "svr"]


class SvrParams(SpecModel):
    """Parameters of ``svr``."""

    layers: list[str] | None = Field(None, description="fnmatch patterns of module names; default: every map that chains.")
    flatten: Literal["svr", "co_svr"] = Field("svr", description="Conv flattening: o x (i K^2) (svr) or (o K^2) x i (co_svr).")
    fold_batchnorm: bool = Field(False, description="Scale each map by the eval-mode BatchNorm after it (paper: off).")
    sigma: float | None = Field(3.0, gt=0.0, description="Significance in normal sigmas: p = 1 - Phi(sigma) (released code).")
    tail_p: float | None = Field(
        None, gt=0.0, lt=1.0, description="Significance as the probability p that a null edge passes (paper Fig. 2: 0.15)."
    )
    driver: Literal["auto", "svd", "gram"] = Field("auto", description="SVD method (suite.metrics.svr.spectral.svd_factors).")
    max_neurons: int | None = Field(
        None, ge=1, description="Keep only the top spectral neurons of each map (released code: 128); default all."
    )
    top_fraction: float = Field(0.25, gt=0.0, le=1.0, description="Size of the top/bottom blocks, as a fraction of each layer.")
    max_edges: int = Field(2000, ge=0, description="Strongest significant edges stored per layer pair (graph export).")
    heatmap_size: int = Field(64, ge=0, description="Adjacency heatmaps stored mean-pooled to at most this size; 0: none.")

    @model_validator(mode="after")
    def _one_level(self) -> SvrParams:
        if self.tail_p is not None and "sigma" in self.model_fields_set and self.sigma is not None:
            raise ValueError("give either sigma or tail_p, not both")
        if self.tail_p is None and self.sigma is None:
            raise ValueError("give sigma or tail_p")
        return self

    @property
    def p(self) -> float:
        """Probability that a null coefficient is called significant."""
        return self.tail_p if self.tail_p is not None else sigma_to_tail(self.sigma)


@dataclass
class SvrResult:
    """In-memory SVR: the chain, spectral neurons per map and adjacency per consecutive pair."""

    chain: SvrChain
    neurons: list[SpectralNeurons]
    adjacencies: list[torch.Tensor]

    @property
    def maps(self) -> list[SvrMap]:
        return self.chain.maps

    def shared_dim(self, pair: int) -> int:
        return self.maps[pair].out_dim

    def dof(self, pair: int) -> int:
        return int(self.neurons[pair].u.shape[1] * self.neurons[pair + 1].v.shape[1])


def compute_svr(
    model: nn.Module,
    *,
    layers: list[str] | None = None,
    flatten: str = "svr",
    fold_batchnorm: bool = False,
    driver: str = "auto",
    max_neurons: int | None = None,
) -> SvrResult:
    """Chain, spectral neurons and adjacency matrices of ``model`` (all float64, on the CPU)."""
    chain = svr_chain(model, layers, fold_batchnorm)
    if not chain.maps:
        skipped = "; ".join(f"{n}: {r}" for n, r in chain.skipped) or "no Linear or Conv module"
        raise MetricError(f"svr: no linear map to decompose ({skipped})")
    neurons = [decompose(m, flatten, driver, max_neurons) for m in chain.maps]
    adjs = [adjacency(neurons[i], neurons[i + 1]) for i in range(len(neurons) - 1)]
    return SvrResult(chain, neurons, adjs)


def _block_share(a: torch.Tensor, mask: torch.Tensor, rows: int, cols: int, bottom: bool) -> tuple[float | None, float]:
    """Share of significant edges inside the top (or bottom) ``rows x cols`` block, and the block's share of all."""
    n, m = a.shape
    block = torch.zeros_like(mask)
    if bottom:
        block[n - rows :, m - cols :] = True
    else:
        block[:rows, :cols] = True
    total = int(mask.sum())
    null_share = rows * cols / (n * m)
    return (int((mask & block).sum()) / total if total else None), null_share


def pair_statistics(a: torch.Tensor, shared_dim: int, dof: int, tail_p: float, top_fraction: float) -> dict[str, Any]:
    """Significance counts, internal dimensions and block concentration of one adjacency ``(M_next, M_prev)``."""
    n, m = a.shape
    thr = threshold(shared_dim, dof, tail_p)
    mask = a > thr
    significant = int(mask.sum())
    expected = expected_null_count(n, m, tail_p)
    d_out, d_in, deviation = internal_dimensions(a, shared_dim)
    rows, cols = max(1, math.ceil(top_fraction * n)), max(1, math.ceil(top_fraction * m))
    top, null_top = _block_share(a, mask, rows, cols, bottom=False)
    bottom, null_bottom = _block_share(a, mask, rows, cols, bottom=True)
    top_col = a[:, 0]
    return {
        "shape": [n, m],
        "shared_dim": shared_dim,
        "dof": dof,
        "threshold": thr,
        "scaled_threshold": thr * shared_dim,
        "significant": significant,
        "expected_null": expected,
        "excess": significant / expected if expected > 0 else None,
        "internal_dims": [d_out, d_in],
        "deviation": deviation,
        "block": [rows, cols],
        "top_concentration": top,
        "top_null_share": null_top,
        "top_lift": top / null_top if top is not None else None,
        "bottom_concentration": bottom,
        "bottom_lift": bottom / null_bottom if bottom is not None else None,
        "super_feature_edge": bool(mask[0, 0]) and int(torch.argmax(top_col)) == 0,
        "mean_coefficient": float(a.mean()),
        "max_coefficient": float(a.max()),
    }


def _strongest_edges(a: torch.Tensor, thr: float, limit: int) -> list[list[float]]:
    """``[n, m, a]`` (1-based spectral neuron indices) of the ``limit`` strongest coefficients above ``thr``."""
    if limit == 0:
        return []
    flat = a.flatten()
    idx = torch.nonzero(flat > thr).flatten()
    if idx.numel() > limit:
        idx = idx[torch.topk(flat[idx], limit).indices]
    idx = idx[torch.argsort(flat[idx], descending=True)]
    cols = a.shape[1]
    return [[int(i) // cols + 1, int(i) % cols + 1, round(float(flat[i]), 8)] for i in idx]


def _heatmap(a: torch.Tensor, size: int) -> dict[str, Any]:
    """The adjacency, mean-pooled to at most ``size x size``, rounded to 6 significant digits."""
    n, m = a.shape
    pooled = (n > size) or (m > size)
    grid = torch.nn.functional.adaptive_avg_pool2d(a[None, None], (min(n, size), min(m, size)))[0, 0] if pooled else a
    return {"pooled": pooled, "shape": [n, m], "values": [[float(f"{x:.6g}") for x in row] for row in grid.tolist()]}


def _longest_true_run(flags: list[bool]) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def svr_values(result: SvrResult, params: SvrParams) -> dict[str, Any]:
    """The JSON values of the ``svr`` metric (see ``register_metric`` below for the keys)."""
    p = params.p
    pairs, edges, heatmaps, intensities = [], [], [], []
    for i, a in enumerate(result.adjacencies):
        c, dof = result.shared_dim(i), result.dof(i)
        stats_i = pair_statistics(a, c, dof, p, params.top_fraction)
        pairs.append({"prev": result.maps[i].name, "next": result.maps[i + 1].name, **stats_i})
        edges.append(_strongest_edges(a, stats_i["threshold"], params.max_edges))
        if params.heatmap_size:
            heatmaps.append(_heatmap(a, params.heatmap_size))
        intensities.append(node_intensity(a, c).tolist())
    layers = [
        {
            "name": m.name,
            "kind": m.kind,
            "weight_shape": list(m.weight_shape),
            "kernel": kernel_size_label(m),
            "n_neurons": nrn.n_neurons,
            "method": nrn.method,
            "bn_folded": m.bn_folded,
        }
        for m, nrn in zip(result.maps, result.neurons)
    ]
    flags = [pr["super_feature_edge"] for pr in pairs]
    return {
        "tail_p": p,
        "flatten": params.flatten,
        "n_layers": len(layers),
        "layers": layers,
        "skipped": [{"name": n, "reason": r} for n, r in result.chain.skipped],
        "singular_values": [nrn.s.tolist() for nrn in result.neurons],
        "pairs": pairs,
        "significant_edges": [pr["significant"] for pr in pairs],
        "expected_null_edges": [pr["expected_null"] for pr in pairs],
        "internal_dims": [pr["internal_dims"] for pr in pairs],
        "d_out": [pr["internal_dims"][0] for pr in pairs],
        "d_in": [pr["internal_dims"][1] for pr in pairs],
        "top_lift": [pr["top_lift"] for pr in pairs],
        "top_concentration": [pr["top_concentration"] for pr in pairs],
        "bottom_lift": [pr["bottom_lift"] for pr in pairs],
        "max_bottom_lift": max((pr["bottom_lift"] for pr in pairs if pr["bottom_lift"] is not None), default=None),
        "total_significant": sum(pr["significant"] for pr in pairs),
        "total_expected_null": sum(pr["expected_null"] for pr in pairs),
        "super_feature_chain": _longest_true_run(flags),
        "node_intensity": intensities,
        "edges": edges,
        "heatmaps": heatmaps,
    }


def _summarize(values: dict[str, Any]) -> dict[str, Any]:
    sig, exp = values["total_significant"], values["total_expected_null"]
    lifts = [x for x in values["top_lift"] if x is not None]
    return {
        "maps": values["n_layers"],
        "skipped": len(values["skipped"]),
        "significant / null expected": f"{sig} / {exp:.1f}",
        "internal dims (d_out, d_in)": " ".join(f"({o},{i})" for o, i in values["internal_dims"]) or "-",
        "mean top lift": f"{sum(lifts) / len(lifts):.2f}" if lifts else "-",
        "super-feature chain": values["super_feature_chain"],
    }


def _details(values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["pair", "c", "Z", "M_next x M_prev", "c*threshold", "significant", "null expected", "(d_out, d_in)", "top conc. (null)", "top lift"]
    rows = []
    for pr in values["pairs"]:
        top = "-" if pr["top_concentration"] is None else f"{pr['top_concentration']:.2f} ({pr['top_null_share']:.2f})"
        lift = "-" if pr["top_lift"] is None else f"{pr['top_lift']:.2f}"
        rows.append(
            [
                f"{pr['prev']} -> {pr['next']}",
                pr["shared_dim"],
                pr["dof"],
                f"{pr['shape'][0]} x {pr['shape'][1]}",
                f"{pr['scaled_threshold']:.3f}",
                pr["significant"],
                f"{pr['expected_null']:.1f}",
                f"({pr['internal_dims'][0]}, {pr['internal_dims'][1]})",
                top,
                lift,
            ]
        )
    for s in values["skipped"]:
        rows.append([f"skipped: {s['name']}", "", "", "", "", "", "", s["reason"], "", ""])
    return headers, rows


def _plot(values: dict[str, Any]) -> list[tuple[str, Any]]:
    from suite.metrics.svr.plots import svr_figures

    return svr_figures(values)


def _export(values: dict[str, Any]) -> list[tuple[str, str]]:
    from suite.metrics.svr.export import svr_exports

    return svr_exports(values)


@register_metric(SvrParams, needs_data=False, summarize=_summarize, details=_details, plot=_plot, export=_export)
def svr(model: nn.Module, data: Any, params: SvrParams, ctx: MetricContext) -> dict[str, Any]:
    """Singular Value Representation of the model's linear maps (Meller & Berkouk, Sec. 2-4).

    Spectral neurons, adjacency, significant edges against the (1/c) chi2(1) and 1/(c K^2) chi2(K^2)
    null models, internal dimensions (counted from 1).

    Values: ``layers`` (name, kind, weight shape, spectral neuron count), ``skipped`` maps with reasons,
    ``singular_values`` per map, per layer pair ``pairs`` (threshold, ``significant`` vs ``expected_null``,
    ``internal_dims`` ``[d_out, d_in]``, top/bottom block concentration and lift, super-feature edge),
    the per-pair lists ``significant_edges``, ``internal_dims``, ``d_out``, ``d_in``, ``top_lift``,
    ``bottom_lift`` (and ``max_bottom_lift``), the longest ``super_feature_chain``,
    ``node_intensity`` per map with a next map, the strongest significant ``edges`` ``[n, m, a]`` (1-based)
    and mean-pooled ``heatmaps``.
    """
    result = compute_svr(
        model,
        layers=params.layers,
        flatten=params.flatten,
        fold_batchnorm=params.fold_batchnorm,
        driver=params.driver,
        max_neurons=params.max_neurons,
    )
    return svr_values(result, params)
