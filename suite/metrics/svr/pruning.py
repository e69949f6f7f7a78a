"""``svr_pruning``: keep only the top spectral neurons of each map, down to the internal dimensions, and
measure the accuracy on held-out data (Meller & Berkouk, Sec. 3.1: pruning the bottom spectral neurons of
a trained MLP changes its accuracy by less than about 1%).

Map ``l`` of the SVR chain (:mod:`suite.metrics.svr.maps`) is replaced by its rank-``k_l`` truncation
``U_k S_k V_k^T`` (Eckart-Young), reshaped to the module's weight; biases are kept. ``k_l`` is the
largest internal dimension touching the map (:func:`suite.metrics.svr.spectral.internal_dimensions`):
``d_in`` of the pair where it is the previous map and ``d_out`` of the pair where it is the next one.
The last map is kept whole unless ``prune_last`` (its rows are the classes). As a control the same
``k_l`` *bottom* spectral neurons are kept instead, which should destroy the accuracy if the top
neurons carry the function.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import Field
from torch import nn

from suite.errors import MetricError
from suite.metrics.registry import MetricContext, register_metric
from suite.metrics.svr.representation import compute_svr
from suite.metrics.svr.spectral import internal_dimensions
from suite.spec.base import SpecModel
from suite.training.trainer import evaluate

__all__ = ["PruningParams", "kept_neurons", "svr_pruning"]


class PruningParams(SpecModel):
    """Parameters of ``svr_pruning``."""

    layers: list[str] | None = Field(None, description="fnmatch patterns of the SVR chain (as in svr).")
    prune_last: bool = Field(False, description="Also truncate the last map (the class scores) to its internal dim.")


def kept_neurons(dims: list[tuple[int, int]], n_neurons: list[int], prune_last: bool) -> list[int]:
    """Spectral neurons kept per map: ``k_l = max(d_in of pair l, d_out of pair l-1)``; the last map whole
    unless ``prune_last``; a map in no pair keeps everything."""
    kept = []
    for i, total in enumerate(n_neurons):
        touching = ([dims[i][1]] if i < len(dims) else []) + ([dims[i - 1][0]] if i > 0 else [])
        if not touching or (i == len(n_neurons) - 1 and not prune_last):
            kept.append(total)
        else:
            kept.append(max(touching))
    return kept


@torch.no_grad()
def _accuracy(model: nn.Module, data: Any, device: torch.device) -> float:
    return evaluate(model, data, device=device)[1]


@torch.no_grad()
def _truncated(model: nn.Module, result: Any, kept: list[int], bottom: bool) -> nn.Module:
    """A copy of ``model`` whose chain maps are replaced by their rank-``k`` truncations (top or bottom neurons)."""
    pruned = copy.deepcopy(model)
    modules = dict(pruned.named_modules())
    for m, nrn, k in zip(result.maps, result.neurons, kept):
        if k >= nrn.n_neurons:
            continue
        sel = slice(nrn.n_neurons - k, nrn.n_neurons) if bottom else slice(0, k)
        u = nrn.u.reshape(nrn.u.shape[0], -1)[:, sel]
        v = nrn.v.reshape(-1, nrn.n_neurons)[:, sel]
        w = (u * nrn.s[sel]) @ v.mT
        weight = modules[m.name].weight
        weight.copy_(w.reshape(weight.shape).to(weight.dtype))
    return pruned


def _summarize(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "accuracy before": f"{100 * values['accuracy_before']:.2f}%",
        "after (top kept)": f"{100 * values['accuracy_after']:.2f}%",
        "drop (points)": f"{values['accuracy_drop_points']:.2f}",
        "bottom kept (control)": f"{100 * values['accuracy_bottom_control']:.2f}%",
        "kept / neurons": f"{sum(values['kept'])}/{sum(values['n_neurons'])}",
    }


def _details(values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["map", "spectral neurons", "kept", "dense params", "kept params (factored)"]
    rows = [
        [name, n, k, dense, fact]
        for name, n, k, dense, fact in zip(values["maps"], values["n_neurons"], values["kept"], values["dense_params"], values["factored_params"])
    ]
    return headers, rows


@register_metric(PruningParams, needs_data=True, summarize=_summarize, details=_details)
def svr_pruning(model: nn.Module, data: Any, params: PruningParams, ctx: MetricContext) -> dict[str, Any]:
    """Accuracy before and after keeping only the top ``k_l`` spectral neurons per map (Sec. 3.1).

    Values: ``accuracy_before``, ``accuracy_after``, ``accuracy_drop_points`` (``100 (before - after)``),
    ``accuracy_bottom_control`` (bottom ``k_l`` kept instead), ``internal_dims`` per pair, ``kept`` and
    ``n_neurons`` per map, ``dense_params`` and ``factored_params`` (``k (o + c Z)``) per map,
    ``kept_fraction`` of all spectral neurons.
    """
    if data is None or data.targets is None:
        raise MetricError("svr_pruning needs a labelled dataset (accuracy before and after pruning)")
    result = compute_svr(model, layers=params.layers)
    dims = [internal_dimensions(a, result.shared_dim(i))[:2] for i, a in enumerate(result.adjacencies)]
    n_neurons = [nrn.n_neurons for nrn in result.neurons]
    kept = kept_neurons(dims, n_neurons, params.prune_last)
    before = _accuracy(model, data, ctx.device)
    after = _accuracy(_truncated(model, result, kept, bottom=False), data, ctx.device)
    control = _accuracy(_truncated(model, result, kept, bottom=True), data, ctx.device)
    shapes = [tuple(m.weight.shape) for m in result.maps]
    return {
        "maps": [m.name for m in result.maps],
        "n_samples": int(data.inputs.shape[0]),
        "internal_dims": [list(d) for d in dims],
        "n_neurons": n_neurons,
        "kept": kept,
        "kept_fraction": sum(kept) / sum(n_neurons),
        "dense_params": [o * c * z for o, c, z in shapes],
        "factored_params": [min(k * (o + c * z), o * c * z) for (o, c, z), k in zip(shapes, kept)],
        "accuracy_before": before,
        "accuracy_after": after,
        "accuracy_drop_points": 100.0 * (before - after),
        "accuracy_bottom_control": control,
    }
