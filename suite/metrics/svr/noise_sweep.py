"""``svr_noise_sweep``: how internal dimensions drift when a map's spectral neurons are rotated by noise.

Generalises the validation of Meller & Berkouk, App. B.1 (Fig. 9) to any model: the output
representations ``U_i`` of map ``i`` (for the layer pair ``pair``) are replaced by ``U_i R(eps)`` with
``R(eps) = expm(eps (A - A^T))``, ``A`` standard Gaussian ``M x M``: a random rotation of the spectral
neurons on the orthogonal group, the identity at ``eps = 0``. For the builtin ``block_orthogonal`` net,
whose first adjacency is ``|P|^2``, this is exactly the paper's ``P(eps) = P expm(eps (A - A^T))``.
For every ``eps`` and repeat the adjacency and internal dimensions (:mod:`suite.metrics.svr.spectral`)
are recomputed; the paper reports that they recover ``p`` at low noise and drift to about ``n / 2``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import nn

from suite.errors import MetricError
from suite.metrics.registry import MetricContext, register_metric
from suite.metrics.svr.representation import compute_svr
from suite.metrics.svr.spectral import SpectralNeurons, adjacency, internal_dimensions
from suite.models.block_orthogonal import rotation_noise
from suite.spec.base import SpecModel

__all__ = ["NoiseSweepParams", "svr_noise_sweep"]


class NoiseSweepParams(SpecModel):
    """Parameters of ``svr_noise_sweep``."""

    noise: list[float] = Field(
        [0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0], min_length=1, description="eps values, each >= 0."
    )
    repeats: int = Field(20, ge=1, description="Independent rotations per eps (paper Fig. 9: a 95% band).")
    pair: int = Field(0, ge=0, description="Index of the layer pair whose previous map is rotated.")
    layers: list[str] | None = Field(None, description="fnmatch patterns of the SVR chain (as in svr).")


def _mean_ci(xs: list[int]) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the half-width of a normal 95% interval of the mean."""
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return mean, sd, 1.96 * sd / math.sqrt(n)


def _plot(values: dict[str, Any]) -> list[tuple[str, Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    eps = values["noise"]
    for key, label in (("d_out", "d_out"), ("d_in", "d_in")):
        mean = values[f"{key}_mean"]
        half = values[f"{key}_ci95"]
        xs = [max(e, 1e-3) for e in eps]
        ax.plot(xs, mean, marker="o", label=label)
        ax.fill_between(xs, [m - h for m, h in zip(mean, half)], [m + h for m, h in zip(mean, half)], alpha=0.25)
    ax.axhline(values["shared_dim"] / 2, color="grey", lw=0.8, ls="--", label="n / 2")
    ax.set_xscale("log")
    ax.set_xlabel("noise eps (0 drawn at 1e-3)")
    ax.set_ylabel("internal dimension")
    ax.set_title(f"internal dims vs rotation noise ({values['repeats']} repeats, 95% band)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return [("internal dimensions vs noise (App. B.1, Fig. 9)", fig)]


def _summarize(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "n": values["shared_dim"],
        "d at eps=0": f"({values['d_out_mean'][0]:.1f}, {values['d_in_mean'][0]:.1f})" if values["noise"][0] == 0 else "-",
        f"d at eps={values['noise'][-1]:g}": f"({values['d_out_mean'][-1]:.1f}, {values['d_in_mean'][-1]:.1f})",
    }


def _details(values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["eps", "d_out mean ± 95%", "d_in mean ± 95%", "d_out range"]
    rows = [
        [f"{e:g}", f"{mo:.1f} ± {ho:.1f}", f"{mi:.1f} ± {hi:.1f}", f"{min(raw)}..{max(raw)}"]
        for e, mo, ho, mi, hi, raw in zip(
            values["noise"], values["d_out_mean"], values["d_out_ci95"], values["d_in_mean"], values["d_in_ci95"], values["d_out_all"]
        )
    ]
    return headers, rows


@register_metric(NoiseSweepParams, needs_data=False, summarize=_summarize, details=_details, plot=_plot)
def svr_noise_sweep(model: nn.Module, data: Any, params: NoiseSweepParams, ctx: MetricContext) -> dict[str, Any]:
    """Internal dimensions of one SVR layer pair under rotation noise ``U -> U expm(eps (A - A^T))`` (App. B.1).

    Values: ``noise``; per eps ``d_out_mean``, ``d_out_sd``, ``d_out_ci95`` (and ``d_in_*``) over
    ``repeats`` draws and the raw ``d_out_all``/``d_in_all``; ``d_at_zero`` = ``[d_out, d_in]`` of the
    noise-free pair (every repeat agrees there); ``shared_dim`` ``n``.
    """
    if any(e < 0 for e in params.noise):
        raise MetricError(f"noise values must be >= 0, got {params.noise}")
    result = compute_svr(model, layers=params.layers)
    if params.pair >= len(result.adjacencies):
        raise MetricError(f"pair {params.pair} out of range: the chain has {len(result.adjacencies)} layer pair(s)")
    prev, nxt = result.neurons[params.pair], result.neurons[params.pair + 1]
    c, m = result.shared_dim(params.pair), prev.n_neurons
    d_zero = list(internal_dimensions(result.adjacencies[params.pair], c)[:2])
    gen = torch.Generator().manual_seed(ctx.seed)
    d_out_all: list[list[int]] = []
    d_in_all: list[list[int]] = []
    for eps in params.noise:
        outs, ins = [], []
        for _ in range(params.repeats):
            rot = rotation_noise(m, eps, gen)
            rotated = SpectralNeurons(torch.einsum("czm,mk->czk", prev.u, rot), prev.s, prev.v, prev.method)
            d_out, d_in, _ = internal_dimensions(adjacency(rotated, nxt), c)
            outs.append(d_out)
            ins.append(d_in)
        d_out_all.append(outs)
        d_in_all.append(ins)
    out_stats = [_mean_ci(xs) for xs in d_out_all]
    in_stats = [_mean_ci(xs) for xs in d_in_all]
    return {
        "pair": f"{result.maps[params.pair].name} -> {result.maps[params.pair + 1].name}",
        "shared_dim": c,
        "repeats": params.repeats,
        "noise": list(params.noise),
        "d_at_zero": d_zero,
        "d_out_mean": [s[0] for s in out_stats],
        "d_out_sd": [s[1] for s in out_stats],
        "d_out_ci95": [s[2] for s in out_stats],
        "d_in_mean": [s[0] for s in in_stats],
        "d_in_sd": [s[1] for s in in_stats],
        "d_in_ci95": [s[2] for s in in_stats],
        "d_out_all": d_out_all,
        "d_in_all": d_in_all,
    }
