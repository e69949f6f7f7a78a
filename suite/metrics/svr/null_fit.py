"""``svr_null_fit``: how well the SVR null models fit the adjacency coefficients of random weights.

Reproduces Meller & Berkouk, App. B.2 (Fig. 10: Gaussian weights; Fig. 11: uniform weights on [-1, 1]):
the weights of every map of the model's SVR chain are redrawn i.i.d., the SVR is computed, and the
empirical survival function of the scaled adjacency coefficients is compared with the null model's.
Only the *shapes* of the model's maps are used (:func:`suite.metrics.svr.maps.svr_chain`); the model's
own weights are never read, so this is a data-free self-test of the significance machinery
(:mod:`suite.metrics.svr.significance`) on the exact shapes a spec analyses.

Notation. A pair of consecutive maps shares a space of dimension ``c`` (the previous map's outputs).
Its adjacency coefficient is ``a = ||X^T Y||_F^2`` (:mod:`suite.metrics.svr.spectral`) with ``X`` the
previous map's output representation, shape ``(c, Z_u)``, and ``Y`` the next map's input representation,
shape ``(c, Z_v)``; ``Z = Z_u Z_v`` is the number of kernel positions summed over (``SvrResult.dof``:
``Z = 1`` between FC maps, ``Z = K^2`` into a ``K x K`` conv under the SVR flattening).

Null models, with ``x = c Z a``:

* **chi2 model** (Thm 2.1 for FC, Thm 4.1 and its Remark for conv): ``x ~ chi2(Z)``, i.e.
  ``c a ~ chi2(Z) / Z``; this is the law the significance thresholds use.
* **exact law** when ``Z_u = 1`` or ``Z_v = 1`` and the two representations are independent and uniform
  on their spheres (Thm 4.1's hypothesis: a vector ``X`` on ``S^{c-1}``, a ``c x Z`` matrix ``Y`` on
  ``S^{cZ-1}``): writing ``Y = G / ||G||`` with ``G`` standard Gaussian ``(c, Z)`` (the device of the
  proofs in App. A.2-A.4), ``X^T G ~ N(0, I_Z)`` is independent of the ``(c-1) Z`` Gaussian coordinates
  of ``G`` orthogonal to ``X``, so ``a = chi2(Z) / (chi2(Z) + chi2((c-1) Z)) ~ Beta(Z/2, (c-1) Z/2)``,
  i.e. ``x ~ c Z Beta(Z/2, (c-1) Z/2)``. For ``Z = 1`` this is the classical finite-``c`` law behind
  Thm 2.1, ``c <X, Y>^2 ~ c Beta(1/2, (c-1)/2)`` (:func:`~suite.metrics.svr.significance.beta_law`);
  for every ``Z`` its ``c -> infinity`` limit is the chi2 model. With ``Z_u > 1`` and ``Z_v > 1``
  (co-SVR conv into an FC map on a feature map) no closed form is used: exact-law entries are ``None``.
  Gaussian weights give exactly uniform (Haar) singular vectors, independent between maps; other i.i.d.
  laws (uniform, Fig. 11) only approximately (measured: ``moment4`` about 0.1% below the exact value for
  uniform weights at ``c = 16``, ``Z = 9``, visible as ``moment4_z ~ -5`` with 1e6 coefficients).

Statistics per layer pair, on the ``N`` coefficients pooled over the ``repeats`` redraws:

* ``ks_distance``: the two-sided Kolmogorov-Smirnov statistic ``sup_x |F_N(x) - F_{chi2(Z)}(x)|``, exact
  on the sorted sample ``x_(1) <= ... <= x_(N)``: ``max_i max(i/N - F(x_(i)), F(x_(i)) - (i-1)/N)``
  (the statistic of ``scipy.stats.ks_1samp``). It mixes the model error of the chi2 approximation
  (``sup |F_exact - F_chi2|``, measured ``0.28/c`` for ``Z = 1``, ``0.17/c`` for ``Z = 9``, ``0.15/c`` for
  ``Z = 25``) with sampling noise (``~ 1/sqrt(N)``).
* ``ks_distance_exact``: the same against the exact law: sampling noise only, if the SVR is right.
* ``tail_ratios``: for each ``sigma`` the released code's tail ``p = 1 - Phi(sigma)``
  (:func:`~suite.metrics.svr.significance.sigma_to_tail`), the chi2 quantile ``q = chi2.isf(p, Z)`` (so
  ``q / (c Z)`` is the significance threshold of :func:`~suite.metrics.svr.significance.threshold`) and
  ``ratio = #{x > q} / (p N)``: 1 when the null model's tail is exact, the false-positive rate of the
  significance test relative to its nominal level. ``ratio_se = sqrt((1 - p) / (p N))`` is its binomial
  standard error for independent coefficients; ``exact_ratio = P_exact(x > q) / p`` is what the exact
  law predicts (< 1 at 2 and 3 sigma: the Beta tail is lighter than the chi2 one) and
  ``exact_z = (count - N p_exact) / sqrt(N p_exact (1 - p_exact))`` the binomial z-score of the count
  against it (``p_exact = P_exact(x > q)``), a tail test free of the ``O(1/c)`` model error.
* ``mean_ratio = c * mean(a)``: ``E a = 1/c`` under both models (Sec. 2.4). It holds for any i.i.d.
  symmetric weight law, not only Gaussian: ``E[u u^T]`` commutes with every signed permutation, hence
  is ``I / c``. When the previous map has ``c`` spectral neurons (``M_prev = c``) every row of the
  adjacency sums to ``||Y||^2 = 1`` and ``mean_ratio = 1`` identically, which then tests nothing.
  ``mean_ratio_se``: standard error from the per-repeat means.
* ``moment4 = mean(a^2)``, which for ``Z = 1`` is the fourth moment ``E <X, Y>^4``, against
  ``moment4_exact = E a^2 = (Z + 2) / (c (c Z + 2))`` of the Beta law (``= 3 / (c^2 + 2c)`` for ``Z = 1``,
  Prop. A.1; :func:`~suite.metrics.svr.significance.fourth_moment_fc`) and ``moment4_chi2 =
  (Z + 2) / (c^2 Z)`` of the chi2 model (``3 / c^2``, Remark to Prop. A.1);
  ``moment4_rel_error = |moment4 / moment4_exact - 1|``; ``moment4_se`` is the standard error of the
  mean of the ``repeats`` per-repeat means (coefficients of one adjacency matrix are correlated; whole
  redraws are independent) and ``moment4_z = (moment4 - moment4_exact) / moment4_se``.

The draws use a ``torch.Generator`` seeded with the case seed, so a case is deterministic; every map's
weights for all repeats are drawn at once, in chain order, in float64, and decomposed by one batched
``torch.linalg.svd`` per map (the flattening of :func:`suite.metrics.svr.spectral.decompose`). The scale
of the weights is irrelevant (the SVR is invariant to positive rescaling, Sec. 2.3).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from scipy import stats
from torch import nn

from suite.errors import MetricError
from suite.metrics.registry import MetricContext, register_metric
from suite.metrics.svr.maps import SvrMap, svr_chain
from suite.metrics.svr.significance import beta_law, chi2_law, fourth_moment_fc, sigma_to_tail
from suite.metrics.svr.spectral import adjacency_of, factor_weight
from suite.spec.base import SpecModel

__all__ = [
    "SvrNullFitParams",
    "batched_neurons",
    "draw_weights",
    "exact_law",
    "ks_distance",
    "moment4_exact",
    "pair_fit",
    "sigma_key",
    "svr_null_fit",
]

CHUNK_BYTES = 1 << 27  # largest intermediate (repeats x Z_v N x Z_u M) tensor of the batched adjacency


class SvrNullFitParams(SpecModel):
    """Parameters of ``svr_null_fit``."""

    distribution: Literal["gaussian", "uniform"] = Field(
        "gaussian",
        description="Law of the redrawn weights: standard normal (Fig. 10) or uniform on [-1, 1] (Fig. 11).",
    )
    repeats: int = Field(
        20, ge=1, le=100_000, description="Independent redraws of all weights; coefficients are pooled."
    )
    sigmas: list[float] = Field(
        [1.0, 2.0, 3.0], min_length=1, description="Tail levels p = 1 - Phi(sigma) at which tail ratios are reported."
    )
    layers: list[str] | None = Field(
        None, description="fnmatch patterns of module names; default: every map that chains."
    )
    flatten: Literal["svr", "co_svr"] = Field(
        "svr", description="Conv flattening: o x (i K^2) (svr) or (o K^2) x i (co_svr)."
    )
    curve_points: int = Field(60, ge=2, le=2000, description="Points of the stored survival curve per pair.")

    @field_validator("sigmas")
    @classmethod
    def _positive_distinct(cls, sigmas: list[float]) -> list[float]:
        if any(not (s > 0 and math.isfinite(s)) for s in sigmas):
            raise ValueError(f"every sigma must be a positive finite number; got {sigmas}")
        if len({sigma_key(s) for s in sigmas}) != len(sigmas):
            raise ValueError(f"sigmas must be distinct; got {sigmas}")
        return sigmas


def sigma_key(sigma: float) -> str:
    """Name of the flat tail-ratio list for ``sigma``: ``tail_ratio_3sigma``, ``tail_ratio_2p5sigma``.

    The decimal point becomes ``p`` because check keys are dotted paths.
    """
    return "tail_ratio_" + f"{sigma:g}".replace(".", "p") + "sigma"


def draw_weights(shape: tuple[int, ...], repeats: int, distribution: str, generator: torch.Generator) -> torch.Tensor:
    """``repeats`` i.i.d. float64 weights of ``shape``: standard normal or uniform on [-1, 1]."""
    size = (repeats, *shape)
    if distribution == "gaussian":
        return torch.randn(size, generator=generator, dtype=torch.float64)
    if distribution == "uniform":
        return torch.rand(size, generator=generator, dtype=torch.float64).mul_(2.0).sub_(1.0)
    raise ValueError(f"unknown distribution {distribution!r}")


def batched_neurons(w: torch.Tensor, kind: str, flatten: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and input representations of a batch of weights ``(R, o, c, Z)``:
    :func:`~suite.metrics.svr.spectral.factor_weight` with LAPACK's SVD (singular values are not needed)."""
    u, _, v, _ = factor_weight(w, kind, flatten, driver="svd")
    return u, v


def exact_law(shared_dim: int, z_u: int, z_v: int):
    """Exact law of ``x = c Z a`` for uniform representations: ``c Z Beta(Z/2, (c-1) Z/2)`` (module doc).

    ``None`` when both ``Z_u > 1`` and ``Z_v > 1`` (no closed form used) or ``c < 2``. For ``Z = 1`` it is
    :func:`~suite.metrics.svr.significance.beta_law` itself.
    """
    if shared_dim < 2 or (z_u > 1 and z_v > 1):
        return None
    z = z_u * z_v
    if z == 1:
        return beta_law(shared_dim)
    return stats.beta(z / 2.0, (shared_dim - 1) * z / 2.0, scale=float(shared_dim * z))


def moment4_exact(shared_dim: int, z_u: int, z_v: int) -> float | None:
    """``E a^2 = (Z + 2) / (c (c Z + 2))`` under the exact law (``3 / (c^2 + 2c)`` for Z = 1, Prop. A.1)."""
    if exact_law(shared_dim, z_u, z_v) is None:
        return None
    z = z_u * z_v
    if z == 1:
        return fourth_moment_fc(shared_dim)
    return (z + 2.0) / (shared_dim * (shared_dim * z + 2.0))


def ks_distance(sorted_sample: torch.Tensor, cdf) -> float:
    """Two-sided KS statistic ``max_i max(i/N - F(x_(i)), F(x_(i)) - (i-1)/N)`` of a sorted sample against ``cdf``."""
    n = sorted_sample.numel()
    if n == 0:
        raise ValueError("empty sample")
    f = torch.as_tensor(cdf(sorted_sample.numpy()), dtype=torch.float64)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


def _sig(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else float(f"{x:.{digits}g}")


def pair_fit(
    a: torch.Tensor, shared_dim: int, z_u: int, z_v: int, sigmas: list[float], curve_points: int = 60
) -> dict[str, Any]:
    """Fit statistics (module doc) of the coefficients ``a`` of one layer pair, shape ``(R, N, M)``.

    Args:
        a: adjacency coefficients of ``R`` independent redraws.
        shared_dim: ``c``.
        z_u: kernel positions of the previous map's output representation (1 under the SVR flattening).
        z_v: kernel positions of the next map's input representation.
        sigmas: tail levels.
        curve_points: points of the stored survival curve.

    Returns:
        JSON-ready dict: ``c``, ``Z``, ``n``, ``ks_distance``, ``ks_distance_exact``, ``tail_ratios``,
        ``mean_ratio`` (``_se``), ``moment4`` (``_exact``, ``_chi2``, ``_rel_error``, ``_se``, ``_z``) and
        ``survival`` (``c_a`` grid with ``empirical``, ``chi2`` and ``exact`` survival functions).
    """
    c, z = shared_dim, z_u * z_v
    repeats = a.shape[0]
    n = a.numel()
    x = (a.reshape(-1) * (c * z)).sort().values
    chi2 = chi2_law(z)
    exact = exact_law(c, z_u, z_v)

    tails = []
    for s in sigmas:
        p = sigma_to_tail(s)
        q = float(chi2.isf(p))
        count = int(n - torch.searchsorted(x, torch.tensor([q], dtype=torch.float64), right=True).item())
        p_exact = None if exact is None else float(exact.sf(q))
        tails.append(
            {
                "sigma": s,
                "p": p,
                "quantile": q,
                "c_threshold": q / z,
                "count": count,
                "expected": p * n,
                "ratio": count / (p * n),
                "ratio_se": math.sqrt((1.0 - p) / (p * n)),
                "exact_ratio": None if p_exact is None else p_exact / p,
                "exact_z": None if not p_exact else (count - p_exact * n) / math.sqrt(n * p_exact * (1.0 - p_exact)),
            }
        )

    def se(per_repeat: torch.Tensor) -> float | None:  # standard error of the mean over whole redraws
        return float(per_repeat.std() / math.sqrt(repeats)) if repeats > 1 else None

    per_repeat_mean = a.reshape(repeats, -1).mean(dim=1) * c
    per_repeat_m4 = a.reshape(repeats, -1).square().mean(dim=1)
    m4 = float(per_repeat_m4.mean())
    m4_exact = moment4_exact(c, z_u, z_v)
    m4_se = se(per_repeat_m4)
    m4_z = None if (m4_exact is None or not m4_se) else (m4 - m4_exact) / m4_se

    grid = torch.linspace(0.0, float(x[-1]), curve_points, dtype=torch.float64)
    emp = 1.0 - torch.searchsorted(x, grid, right=True).to(torch.float64) / n
    return {
        "c": c,
        "Z": z,
        "Z_u": z_u,
        "Z_v": z_v,
        "repeats": repeats,
        "n": n,
        "ks_distance": ks_distance(x, chi2.cdf),
        "ks_distance_exact": None if exact is None else ks_distance(x, exact.cdf),
        "tail_ratios": tails,
        "mean_ratio": float(per_repeat_mean.mean()),
        "mean_ratio_se": se(per_repeat_mean),
        "moment4": m4,
        "moment4_exact": m4_exact,
        "moment4_chi2": (z + 2.0) / (c * c * z),
        "moment4_rel_error": None if m4_exact is None else abs(m4 / m4_exact - 1.0),
        "moment4_se": m4_se,
        "moment4_z": m4_z,
        "max_c_a": float(x[-1]) / z,
        "survival": {
            "c_a": [_sig(float(g) / z) for g in grid],
            "empirical": [_sig(float(e)) for e in emp],
            "chi2": [_sig(float(chi2.sf(float(g)))) for g in grid],
            "exact": None if exact is None else [_sig(float(exact.sf(float(g)))) for g in grid],
        },
    }


def _summarize(values: dict[str, Any]) -> dict[str, Any]:
    pairs = values["pairs"]
    exact = [p["ks_distance_exact"] for p in pairs if p["ks_distance_exact"] is not None]
    zs = [abs(p["moment4_z"]) for p in pairs if p["moment4_z"] is not None]
    top = max(values["sigmas"])
    ratios = [t["ratio"] for p in pairs for t in p["tail_ratios"] if t["sigma"] == top]
    return {
        "weights": f"{values['distribution']} x {values['repeats']}",
        "pairs": len(pairs),
        "coefficients": sum(p["n"] for p in pairs),
        "max KS vs chi2": f"{max(p['ks_distance'] for p in pairs):.4f}",
        "max KS vs exact": f"{max(exact):.4f}" if exact else "-",
        f"tail ratio @{top:g} sigma": f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-",
        "max |moment4 z|": f"{max(zs):.2f}" if zs else "-",
    }


def _details(values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["pair", "c", "Z", "N", "KS chi2", "KS exact"]
    headers += [f"ratio @{s:g} sigma (count)" for s in values["sigmas"]]
    headers += ["c mean(a)", "moment4 rel. err (z)"]
    rows = []
    for p in values["pairs"]:
        m4 = "-"
        if p["moment4_rel_error"] is not None:
            z = "" if p["moment4_z"] is None else f" ({p['moment4_z']:+.2f})"
            m4 = f"{p['moment4_rel_error']:.4f}{z}"
        exact = "-" if p["ks_distance_exact"] is None else f"{p['ks_distance_exact']:.4f}"
        rows.append(
            [f"{p['prev']} -> {p['next']}", p["c"], p["Z"], p["n"], f"{p['ks_distance']:.4f}", exact]
            + [f"{t['ratio']:.3f} ({t['count']})" for t in p["tail_ratios"]]
            + [f"{p['mean_ratio']:.4f}", m4]
        )
    return headers, rows


def _plot(values: dict[str, Any]) -> list[tuple[str, Any]]:
    """Survival functions of ``c a`` on log-y, one panel per pair: empirical, chi2(Z)/Z, exact Beta (Fig. 10)."""
    pairs = values["pairs"]
    if not pairs:
        return []
    from matplotlib.figure import Figure

    cols = min(len(pairs), 3)
    rows = math.ceil(len(pairs) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, p in zip(axes, pairs):
        sv = p["survival"]
        xs = sv["c_a"]
        keep = [i for i, e in enumerate(sv["empirical"]) if e > 0]
        label = f"empirical ({values['distribution']}, N={p['n']})"
        ax.plot([xs[i] for i in keep], [sv["empirical"][i] for i in keep], "o", ms=3, color="C0", label=label)
        ax.plot(xs, [max(v, 1e-300) for v in sv["chi2"]], "-", color="C3", lw=1.2, label=f"chi2({p['Z']}) / {p['Z']}")
        if sv["exact"] is not None:
            b = (p["c"] - 1) * p["Z"] / 2
            law = f"c Beta(1/2, {b:g})" if p["Z"] == 1 else f"cZ Beta({p['Z'] / 2:g}, {b:g}) / Z"
            ax.plot(xs, [max(v, 1e-300) for v in sv["exact"]], "--", color="k", lw=1, label=f"exact: {law}")
        for t in p["tail_ratios"]:
            ax.axvline(t["c_threshold"], color="0.6", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.set_ylim(max(0.3 / p["n"], 1e-12), 1.5)
        ax.set_xlabel("c * a")
        ax.set_ylabel("1 - cdf")
        ax.set_title(f"{p['prev']} -> {p['next']} (c={p['c']}, Z={p['Z']})", fontsize=9)
        ax.legend(fontsize=6)
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    title = "SVR adjacency coefficients of random weights vs null models (App. B.2); dotted: sigma thresholds"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return [("survival function of c * adjacency vs null model", fig)]


def svr_null_fit_values(model: nn.Module, params: SvrNullFitParams, seed: int) -> dict[str, Any]:
    """The JSON values of ``svr_null_fit`` for the chain shapes of ``model`` (see the metric's docstring)."""
    chain = svr_chain(model, params.layers)
    if len(chain.maps) < 2:
        skipped = "; ".join(f"{n}: {r}" for n, r in chain.skipped) or "none skipped"
        raise MetricError(f"svr_null_fit: needs at least two chained maps, found {len(chain.maps)} ({skipped})")
    gen = torch.Generator().manual_seed(int(seed))
    pairs = []
    prev_u: torch.Tensor | None = None  # output representations of the previous map, batched over repeats
    for i, m in enumerate(chain.maps):  # weights drawn map by map, in chain order
        w = draw_weights(tuple(m.weight.shape), params.repeats, params.distribution, gen)
        u, v = batched_neurons(w, m.kind, params.flatten)
        del w
        if prev_u is not None:
            a = adjacency_of(prev_u, v, CHUNK_BYTES)
            c, z_u, z_v = int(prev_u.shape[1]), int(prev_u.shape[2]), int(v.shape[2])
            fit = pair_fit(a, c, z_u, z_v, params.sigmas, params.curve_points)
            shape = [int(a.shape[1]), int(a.shape[2])]
            pairs.append({"prev": chain.maps[i - 1].name, "next": m.name, "shape": shape, **fit})
        prev_u = u
    flat: dict[str, Any] = {
        "ks_distance": [p["ks_distance"] for p in pairs],
        "ks_distance_exact": [p["ks_distance_exact"] for p in pairs],
    }
    for j, s in enumerate(params.sigmas):
        flat[sigma_key(s)] = [p["tail_ratios"][j]["ratio"] for p in pairs]
    for j, s in enumerate(params.sigmas):
        flat[sigma_key(s).replace("tail_ratio_", "tail_z_")] = [p["tail_ratios"][j]["exact_z"] for p in pairs]
    flat.update(
        {
            "mean_ratio": [p["mean_ratio"] for p in pairs],
            "moment4_rel_error": [p["moment4_rel_error"] for p in pairs],
            "moment4_z": [p["moment4_z"] for p in pairs],
        }
    )
    return {
        "distribution": params.distribution,
        "repeats": params.repeats,
        "flatten": params.flatten,
        "sigmas": list(params.sigmas),
        "maps": [_map_info(m) for m in chain.maps],
        "skipped": [{"name": n, "reason": r} for n, r in chain.skipped],
        "pairs": pairs,
        **flat,
    }


def _map_info(m: SvrMap) -> dict[str, Any]:
    return {"name": m.name, "kind": m.kind, "weight_shape": list(m.weight_shape), "ocz": list(m.weight.shape)}


@register_metric(SvrNullFitParams, needs_data=False, summarize=_summarize, details=_details, plot=_plot)
def svr_null_fit(model: nn.Module, data: Any, params: SvrNullFitParams, ctx: MetricContext) -> dict[str, Any]:
    """Fit of the SVR null models to the adjacency coefficients of i.i.d. random weights (App. B.2, Fig. 10/11).

    Redraws the weights of the model's SVR chain ``repeats`` times (seeded by the case seed; only the
    shapes of the model are used) and compares ``x = c Z a`` with ``chi2(Z)`` and with the exact law
    ``c Z Beta(Z/2, (c-1) Z/2)`` (module docstring for every formula). Computed in float64 on the CPU.

    Values: ``pairs`` (one dict per consecutive pair: ``prev``, ``next``, ``shape``, ``c``, ``Z``, ``n``,
    KS distances, ``tail_ratios``, mean and moment statistics, ``survival`` curve) and, one entry per pair
    for checks, ``ks_distance``, ``ks_distance_exact`` (None without exact law), ``tail_ratio_<s>sigma``
    per sigma (:func:`sigma_key`), ``tail_z_<s>sigma`` (count against the exact law's tail, None without
    it), ``mean_ratio``, ``moment4_rel_error`` and ``moment4_z``; plus
    ``distribution``, ``repeats``, ``flatten``, ``sigmas``, ``maps`` and ``skipped``.
    """
    return svr_null_fit_values(model, params, ctx.seed)
