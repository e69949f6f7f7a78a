"""``ginibre_lyapunov``: Lyapunov exponents and rank-vs-depth of a deep linear chain (implicit impetus).

Feng et al., "Rank Diminishing in Deep Neural Networks", NeurIPS 2022, Sec. 4.2, Theorems 4-5 and
App. A.7. For ``J_F = W_L ... W_1`` with i.i.d. ``n x n`` Gaussian ``W_l``,
``(1/L) log sigma_k(J_F) -> lambda_k = 0.5 (log 2 + digamma((n-k+1)/2)) (+ log std)`` (eq. (10), (A93);
:mod:`suite.theory.ginibre`), so ``sigma_k / sigma_1 ~ exp(-L (lambda_1 - lambda_k))`` and the numerical
rank of the chain collapses to 1 exponentially in depth.

The metric reads the ``nn.Linear`` weights of the model in module order (``model.modules()``); they must all
be square and of the same size ``n`` (the built-in ``gaussian_chain``; any bias-free linear chain works).
It computes, in float64 (the per-layer loop in NumPy on the CPU, see ``_walk``; torch on ``ctx.device``
otherwise):

1. **Exponents by QR re-orthonormalisation** (Benettin et al. 1980; the standard estimator of Lyapunov
   spectra): ``Q_0 = I``; for ``l = 1..L``: ``Z_l = W_l Q_{l-1} = Q_l R_l`` (QR),
   ``s_k += log |R_l[k, k]|``; ``exponent_k = s_k / L``. This never forms the product, so it neither
   overflows nor loses the small directions to rounding; ``|R_l[k,k]|`` is floored at the smallest
   positive float64 (``log = -708``) so an exactly singular layer gives a finite number. Reported sorted
   descending (``exponents``) and in QR column order (``exponents_qr_order``). Identities: the QR
   accumulation equals ``log |diag R|`` of a QR factorisation of the product ``P_L = W_L ... W_1``
   (``P_L = Q_L (R_L ... R_1)``), so ``sum_k exponent_k = (1/L) log |det P_L| = (1/L) sum_k log sigma_k(P_L)``
   exactly; individual exponents equal ``(1/L) log sigma_k(P_L)`` only as ``L -> inf``.
2. **Rank versus depth**: the numerical rank, under the ``tolerance`` rule (default ``feng``:
   ``sigma_i > 1.19e-7 * n * sigma_1``, Feng et al. eq. 4), of the partial products ``P_l = W_l ... W_1``
   at depths ``l`` = 1, every ``record_every``-th layer, and ``L``. What is ranked exactly: the
   *normalised* partial product ``P_l / c_l``, formed in float64 by the recursion
   ``P_l = (W_l P_{l-1}) / max|W_l P_{l-1}|`` (``c_l`` = product of the per-step max-abs scalings; its log is
   kept). Numerical rank under a relative rule is invariant to that scaling, so this is
   ``Rank_eps(W_l ... W_1)``; the scaling only keeps the entries from overflowing/underflowing (the raw
   product grows like ``exp(l lambda_1)``). Each step's rounding perturbs the normalised product by
   ``O(eps_float64)`` relative to ``sigma_1``, orders of magnitude below the feng threshold (``1.19e-7 n``),
   so the rank is that of the exact product under the rule. Singular values come from
   :func:`suite.linalg.rank.singular_values` of the matrix itself (never ``P^T P``). The numerical rank is
   *not* monotone step by step: ``log(sigma_k / sigma_1)`` is a random walk with drift
   ``-(lambda_1 - lambda_k)``, so near the threshold it can rise by one between consecutive depths (at
   n = 16, stride 1, this happened in every seed tried); only the exact rank is non-increasing (Thm 2).
3. **Deviation from theory**: ``exponents - ginibre_exponents(n, std)`` and its max abs value; ``std`` is
   the ``std`` param, else the model's ``weight_std`` attribute (set by ``gaussian_chain``), else 1.
   The exact finite-``L`` standard error of each QR estimate for Ginibre weights,
   ``sqrt(trigamma((n-k+1)/2) / (4L))``, is reported with the z-scores (the estimator is unbiased).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from suite.errors import MetricError
from suite.linalg.rank import FengRule, RankRule, rank_from_singular_values, singular_values
from suite.metrics.registry import MetricContext, register_metric
from suite.spec.base import SpecModel
from suite.theory.ginibre import ginibre_exponents, ginibre_standard_errors

__all__ = ["GinibreLyapunovParams", "chain_weights", "ginibre_lyapunov", "qr_exponents", "recorded_depths"]

_TINY = float(torch.finfo(torch.float64).tiny)  # 2.2e-308; log = -708.4


class GinibreLyapunovParams(SpecModel):
    """Parameters of ``ginibre_lyapunov``."""

    tolerance: RankRule = Field(default_factory=FengRule, description="Rank rule for the rank-vs-depth curve.")
    record_every: int = Field(1, ge=1, description="Depth stride of the rank-vs-depth curve (1 and L always kept).")
    std: float | None = Field(
        None, gt=0.0, description="Weight std the theory is shifted by (log std); default: model.weight_std, else 1."
    )
    keep_spectra: bool = Field(True, description="Store log10(sigma_k / sigma_1) of every recorded partial product.")


def chain_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights of every ``nn.Linear`` of ``model`` in module order, detached; all must be ``n x n``."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, nn.Linear)]
    if not weights:
        raise MetricError("ginibre_lyapunov needs a model with nn.Linear layers (e.g. builtin gaussian_chain)")
    n = weights[0].shape[0]
    bad = [i for i, w in enumerate(weights) if tuple(w.shape) != (n, n)]
    if bad:
        shapes = ", ".join(f"{i}: {tuple(weights[i].shape)}" for i in bad[:3])
        raise MetricError(f"ginibre_lyapunov needs square n x n layers of one size n = {n}; got {shapes}")
    return weights


def recorded_depths(depth: int, record_every: int) -> list[int]:
    """Depths at which the partial product is ranked: 1, every ``record_every``-th layer, and ``depth``."""
    return sorted({1, depth, *range(record_every, depth + 1, record_every)})


def qr_exponents(weights: list[torch.Tensor], device: torch.device | str = "cpu") -> torch.Tensor:
    """Lyapunov exponents by QR re-orthonormalisation, in QR column order (not sorted), float64 on the CPU.

    ``Q_0 = I``; ``W_l Q_{l-1} = Q_l R_l``; returns ``(1/L) sum_l log |diag R_l|`` (module doc, item 1).
    """
    return _walk(weights, set(), device)[0]


def _walk(
    weights: list[torch.Tensor], wanted: set[int], device: torch.device | str, use_numpy: bool | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], float, float]:
    """One pass over the chain: QR exponents, normalised partial products at ``wanted`` depths, their log scale.

    Returns ``(exponents in QR order, [P_l / c_l for l in wanted], log c_L, sum of squared weights)``, all
    float64. On the CPU the loop runs in NumPy: ``torch.linalg.qr`` on small matrices enters an OpenMP
    parallel region per call, which costs milliseconds per call when the cores are shared with other
    processes (a 16 x 16 QR went from 11 us to 7 ms); NumPy's LAPACK does not thread at these sizes.
    ``use_numpy`` overrides the choice (the tests run the torch branch on the CPU).
    """
    n = int(weights[0].shape[0])
    cpu = torch.device(device).type == "cpu" if use_numpy is None else use_numpy
    xp: Any = np if cpu else torch

    def as64(w: torch.Tensor) -> Any:
        w = w.detach().to(device="cpu" if cpu else device, dtype=torch.float64)
        return w.numpy() if cpu else w

    q = np.eye(n) if cpu else torch.eye(n, dtype=torch.float64, device=device)
    product = q.copy() if cpu else q.clone()
    log_r: Any = 0.0
    log_scale, sum_sq = 0.0, 0.0
    recorded: list[torch.Tensor] = []
    for l, w in enumerate(weights, start=1):
        w64 = as64(w)
        sum_sq += float((w64 * w64).sum())
        q, r = xp.linalg.qr(w64 @ q)
        log_r = log_r + xp.log(abs(r.diagonal()).clip(min=_TINY))
        product = w64 @ product
        scale = float(abs(product).max())
        if scale > 0:
            product = product / scale
            log_scale += math.log(scale)
        if l in wanted:
            recorded.append(torch.from_numpy(product.copy()) if cpu else product.clone())
    exponents = torch.as_tensor(log_r / len(weights), dtype=torch.float64).cpu()
    return exponents, recorded, log_scale, sum_sq


def _summarize(values: dict[str, Any]) -> dict[str, Any]:
    ranks, depths = values["ranks"], values["depths"]
    to_one = next((d for d, r in zip(depths, ranks) if r <= 1), None)
    return {
        "n x L": f"{values['n']} x {values['depth']}",
        "std": f"{values['std']:g}",
        "max |measured - theory|": f"{values['max_abs_deviation']:.4f}",
        "max |z|": f"{values['max_abs_z']:.2f}",
        "rank at L": ranks[-1],
        "first recorded depth with rank <= 1": "-" if to_one is None else to_one,
    }


def _details(values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["k", "measured lambda_k", "theory lambda_k", "measured - theory", "std. error", "z"]
    rows = [
        [k + 1, f"{m:.5f}", f"{t:.5f}", f"{d:+.5f}", f"{s:.5f}", f"{z:+.2f}"]
        for k, (m, t, d, s, z) in enumerate(
            zip(values["exponents"], values["theory_exponents"], values["deviations"], values["standard_errors"],
                values["z_scores"])
        )
    ]
    return headers, rows


def _plot(values: dict[str, Any]) -> list[tuple[str, Any]]:
    """Measured vs theory exponents; rank of the partial products vs depth (with the asymptotic prediction)."""
    import matplotlib.pyplot as plt

    figures = []
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ks = list(range(1, values["n"] + 1))
    ax.plot(ks, values["theory_exponents"], "-", color="k", lw=1,
            label="theory 0.5(log 2 + digamma((n-k+1)/2)) + log std")
    ax.errorbar(ks, values["exponents"], yerr=[2 * s for s in values["standard_errors"]], fmt="o", ms=3,
                color="C0", label="measured (QR), +-2 std. err.")
    ax.set_xlabel("k")
    ax.set_ylabel("lambda_k")
    ax.set_title(f"Lyapunov exponents, n = {values['n']}, L = {values['depth']}")
    ax.legend(fontsize=7)
    figures.append(("Lyapunov exponents: measured vs theory", fig))

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(values["depths"], values["ranks"], "o-", ms=3, color="C0",
            label="numerical rank of W_l...W_1 (measured depths)")
    ax.plot(values["depths"], values["theory_ranks"], ":", color="k", lw=1,
            label="asymptotic: #{k: l(lambda_1 - lambda_k) < -log(thr/sigma_1)}")
    ax.set_xlabel("depth l")
    ax.set_ylabel("rank")
    ax.set_yscale("log")
    ax.set_title("rank of the partial products vs depth")
    ax.legend(fontsize=7)
    figures.append(("rank vs depth", fig))
    return figures


@register_metric(
    GinibreLyapunovParams, needs_data=False, version=1, summarize=_summarize, details=_details, plot=_plot
)
def ginibre_lyapunov(model: nn.Module, data: None, params: GinibreLyapunovParams, ctx: MetricContext) -> dict[str, Any]:
    """Lyapunov exponents (QR) and rank-vs-depth of a chain of n x n linear maps, vs Ginibre theory (see module doc).

    Returns ``n``, ``depth`` (L), ``std`` and ``std_source`` (what the theory is shifted by), ``weight_rms``
    (empirical RMS of the weights), ``exponents`` (QR estimates, sorted descending), ``exponents_qr_order``,
    ``theory_exponents``, ``deviations`` (measured - theory), ``max_abs_deviation``, ``standard_errors`` (exact
    finite-L std of each estimate under Ginibre weights), ``z_scores``, ``max_abs_z``, ``top_exponent_from_norm``
    (``(1/L) log ||W_L...W_1||_2``, Corollary 1), and aligned per-depth lists ``depths``, ``ranks``,
    ``thresholds_rel`` (threshold / sigma_1; None for a zero product), ``gaps`` and ``theory_ranks`` (the
    asymptotic count ``#{k : l (lambda_1 - lambda_k) < -log(threshold / sigma_1)}``, no O(1) prefactor), plus
    ``log10_sigma_ratios`` (per depth, ``log10(sigma_k / sigma_1)`` of the normalised product, floored at
    -300) when ``keep_spectra``; and ``rule``.
    """
    weights = chain_weights(model)
    n, depth = int(weights[0].shape[0]), len(weights)
    source_dtype = weights[0].dtype
    device = ctx.device
    depths = recorded_depths(depth, params.record_every)
    wanted = set(depths)

    exponents_qr, recorded, log_scale, sum_sq = _walk(weights, wanted, device)
    exponents = torch.sort(exponents_qr, descending=True).values

    sigmas = singular_values(torch.stack(recorded).to(device)).cpu()  # one batched float64 SVD, (len(depths), n)

    if params.std is not None:
        std_source = "param"
    else:
        std_source = "model.weight_std" if hasattr(model, "weight_std") else "default 1.0"
    std = float(params.std if params.std is not None else getattr(model, "weight_std", 1.0))
    theory = ginibre_exponents(n, std)
    errors = ginibre_standard_errors(n, depth)
    deviations = [float(m) - t for m, t in zip(exponents.tolist(), theory)]
    z_scores = [d / s if s > 0 else 0.0 for d, s in zip(deviations, errors)]

    ranks, thresholds_rel, gaps, theory_ranks, ratios = [], [], [], [], []
    for l, sigma in zip(depths, sigmas):
        res = rank_from_singular_values(sigma, (n, n), params.tolerance, source_dtype)
        ranks.append(res.rank)
        rel = res.threshold / res.sigma_max if res.sigma_max > 0 else math.inf
        thresholds_rel.append(rel if rel < math.inf else None)
        gaps.append(res.gap)
        log_rel = math.log(rel) if 0 < rel < math.inf else (-math.inf if rel == 0 else math.inf)
        theory_ranks.append(sum(1 for t in theory if -l * (theory[0] - t) > log_rel))
        if params.keep_spectra:
            top = float(sigma[0])
            ratios.append([math.log10(max(float(s) / top, 1e-300)) if top > 0 else -300.0 for s in sigma])

    top_sigma = float(sigmas[-1, 0])
    out: dict[str, Any] = {
        "n": n,
        "depth": depth,
        "std": std,
        "std_source": std_source,
        "weight_rms": math.sqrt(sum_sq / (depth * n * n)),
        "exponents": exponents.tolist(),
        "exponents_qr_order": exponents_qr.tolist(),
        "theory_exponents": theory,
        "deviations": deviations,
        "max_abs_deviation": max(abs(d) for d in deviations),
        "standard_errors": errors,
        "z_scores": z_scores,
        "max_abs_z": max(abs(z) for z in z_scores),
        "top_exponent_from_norm": (math.log(top_sigma) + log_scale) / depth if top_sigma > 0 else None,
        "depths": depths,
        "ranks": ranks,
        "thresholds_rel": thresholds_rel,
        "gaps": gaps,
        "theory_ranks": theory_ranks,
        "rule": params.tolerance.model_dump(),
    }
    if params.keep_spectra:
        out["log10_sigma_ratios"] = ratios
    return out
