"""``structural_rank_loss``: PCA dimension and Jacobian rank before and after one network component.

Feng et al., "Rank Diminishing in Deep Neural Networks", NeurIPS 2022, Sec. 4.1 (Theorem 3, structural
impetus) and Sec. 4.3 / Fig. 3: Gaussian inputs, random weights, a component plugged after an FC layer;
"PCA dimension of feature spaces and rank of Jacobian matrix ... before and after the features pass the
network components". Runs on the built-in ``structural_probe`` (:mod:`suite.models.structural`), which
exposes the two stages ``x -> fc(x)`` ("before") and ``x -> component(fc(x))`` ("after").

Everything is computed on a float64 copy of the model (its float32 weights are exactly representable, so
it is the same network evaluated without float32 rounding) and float64 inputs, on ``ctx.device``.

**PCA dimension** of a batch of ``B`` feature vectors (rows of ``F``, ``D`` columns): the singular values
``s_i`` of the *centred* data matrix ``F - mean(F)`` from :func:`suite.linalg.rank.singular_values`
(never the covariance matrix itself). The PCA eigenvalues are ``lambda_i = s_i^2`` (the released code's
``cov = X^T X``, Algorithm A2; a ``1/B`` factor does not change a relative rule). ``pca_spectrum``
decides what the rank rule is applied to:

* ``eigenvalues`` (default; the paper's rule, Sec. 4.3): count ``lambda_i > 1.19e-7 * N * lambda_max``
  with ``N = D`` (the number of PCA eigenvalues; zeros padded when ``B < D``), i.e.
  ``rank_from_singular_values(s^2, (D, D), rule)``. On singular values this is
  ``s_i > sqrt(1.19e-7 * D) * s_1`` -- a much coarser cut (0.031 s_1 at the paper's D = 8,192).
* ``singular_values``: the numerical rank of the centred data matrix itself under the rule,
  ``s_i > 1.19e-7 * min(B, D) * s_1`` (``feng``), consistent with the Jacobian ranks.

**Jacobian rank** at each of the first ``n_jacobian_inputs`` samples: the full ``D_out x D_in`` Jacobian
of ``x -> features`` (before: ``x -> fc(x)``, i.e. ``W_fc``; after: ``x -> component(fc(x))``) by
forward-mode AD (``torch.func.jacfwd``) in float64; rank from its singular values under ``tolerance``
(default ``feng``, eq. 4: ``sigma_i > 1.19e-7 * min(M, N) * sigma_1``). For a batch-coupled component
(BatchNorm with batch statistics) the Jacobian is that of the sample's own output with respect to its
own input, the other ``B - 1`` samples of the batch held fixed (the diagonal block of the batch Jacobian),
differentiated through the per-channel sufficient statistics of the fixed rows (:func:`_batchnorm_sample_fn`;
the direct ``jacfwd`` through the module on the whole batch costs ``B`` times more and agrees to rounding).

**Predictions** (exact arithmetic, generic random weights; the FC is invertible so the composed rank is the
component's): ``predicted_jacobian_rank``: ``relu`` = number of positive FC outputs at that input;
``layernorm`` ``D - 2`` (mean and radial directions; ``D - 1`` with ``norm_eps > 0``, which only shrinks
the radial direction), ``instancenorm`` ``D - 2C`` (``D - C``), ``groupnorm`` ``D - 2G`` (``D - G``);
``attention`` ``min(D, T h)`` (``T = S^2`` tokens, head dim ``h``: every output token lies in the
``h``-dimensional row space of ``W_o``); ``conv3x3``, ``fc``, ``batchnorm``, ``gelu``, ``identity``: ``D``.
``predicted_pca_dim_after`` = ``min(B - 1, D - c, T h)`` with ``c`` the linear constraints the
component's output satisfies (LayerNorm 1: the normalised entries sum to zero; InstanceNorm ``C``;
GroupNorm ``G``; else 0) and ``T h`` only for attention. These are Theorem 3's "invariant directions";
the measured ranks under a float32-level threshold may fall below them (the numerical rank loss Fig. 3
reports for FC and conv), never above in exact arithmetic.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from suite.errors import MetricError
from suite.linalg.rank import FengRule, RankResult, RankRule, rank_from_singular_values, singular_values
from suite.metrics.registry import MetricContext, register_metric
from suite.spec.base import SpecModel

__all__ = [
    "StructuralRankLossParams",
    "feature_jacobian",
    "pca_dimension",
    "predicted_jacobian_rank",
    "predicted_pca_dim",
    "structural_rank_loss",
]


class StructuralRankLossParams(SpecModel):
    """Parameters of ``structural_rank_loss``."""

    tolerance: RankRule = Field(default_factory=FengRule, description="Numerical-rank rule (PCA and Jacobians).")
    pca_spectrum: Literal["eigenvalues", "singular_values"] = Field(
        "eigenvalues",
        description="Apply the rule to PCA eigenvalues s^2 with N = D (paper) or to the singular values s of the "
        "centred feature matrix.",
    )
    batch: int | None = Field(None, ge=2, description="Samples used for the PCA (default: the whole dataset).")
    n_jacobian_inputs: int = Field(3, ge=1, description="Jacobians at the first k samples.")
    keep_spectra: bool = Field(True, description="Store the normalised PCA and (first-input) Jacobian spectra.")


def pca_dimension(
    features: torch.Tensor,
    rule: Any,
    spectrum: Literal["eigenvalues", "singular_values"] = "eigenvalues",
    source_dtype: torch.dtype = torch.float32,
) -> tuple[RankResult, torch.Tensor]:
    """PCA dimension of ``features`` (``B x D``, one sample per row) and the spectrum it was decided on.

    Singular values ``s`` of the centred matrix in float64; ``eigenvalues``: rule applied to ``s^2`` padded
    with zeros to ``D`` values and shape ``(D, D)``; ``singular_values``: rule applied to ``s`` with shape
    ``(B, D)`` (module doc). Returns the :class:`RankResult` and the (descending) spectrum.
    """
    f = features.reshape(features.shape[0], -1).to(torch.float64)
    b, d = f.shape
    sigma = singular_values(f - f.mean(dim=0, keepdim=True))
    if spectrum == "singular_values":
        return rank_from_singular_values(sigma, (b, d), rule, source_dtype), sigma
    lam = sigma**2
    if lam.numel() < d:
        lam = torch.cat([lam, lam.new_zeros(d - lam.numel())])
    return rank_from_singular_values(lam, (d, d), rule, source_dtype), lam


def feature_jacobian(
    model: nn.Module,
    x: torch.Tensor,
    stage: Literal["before", "after"],
    context: torch.Tensor | None = None,
    index: int | None = None,
    direct: bool = False,
) -> torch.Tensor:
    """Full Jacobian ``d features / d x`` (``D_out x D_in``) of one input ``x`` (one sample, any shape).

    ``stage="before"``: ``x -> model.before(x)``; ``"after"``: ``x -> model(x)``. For a batch-coupled model
    pass ``context`` (the batch, same shape as a batch of ``x``) and ``index``: the sample's row of the
    batch is replaced by ``x`` and the other rows are held fixed. Computed with ``torch.func.jacfwd`` in
    the dtype of ``x`` and the model (use float64 for both).

    Batch-coupled components: ``direct=True`` differentiates ``model.component`` applied to the whole batch
    (cost ``B * D`` per tangent: reference only). The default differentiates the same function through
    the sufficient statistics of the held-fixed rows (:func:`_batchnorm_sample_fn`), cost ``D`` per tangent;
    the tests check the two agree to rounding.
    """
    from torch.func import jacfwd

    shape = tuple(x.shape)

    if stage == "before":
        def fn(v: torch.Tensor) -> torch.Tensor:
            return model.before(v.view(1, *shape)).flatten()
    elif context is None:
        def fn(v: torch.Tensor) -> torch.Tensor:
            return model(v.view(1, *shape)).flatten()
    else:
        if index is None:
            raise ValueError("a batch context needs the sample's index")
        with torch.no_grad():
            fixed = model.before(context)
        if direct:
            def fn(v: torch.Tensor) -> torch.Tensor:
                z = model.before(v.view(1, *shape))
                batch = torch.cat([fixed[:index], z, fixed[index + 1:]])
                return model.component(batch)[index].flatten()
        else:
            sample_fn = _batchnorm_sample_fn(model.component, torch.cat([fixed[:index], fixed[index + 1:]]))

            def fn(v: torch.Tensor) -> torch.Tensor:
                return sample_fn(model.before(v.view(1, *shape))[0]).flatten()

    return jacfwd(fn)(x.reshape(-1).clone())  # clone: make_dual on a view of a large batch is very slow


def _batchnorm_sample_fn(bn: nn.Module, others: torch.Tensor):
    """``z -> BatchNorm(batch = [others; z])[last]`` through per-channel sufficient statistics of ``others``.

    Training-mode BatchNorm2d (Ioffe & Szegedy 2015, Alg. 1; torch's biased batch variance over N, H, W):
    ``y = gamma (z - mu) / sqrt(var + eps) + beta`` with ``mu``, ``var`` over all ``n = B * H * W`` entries
    of a channel. The other rows enter only through ``m0`` (their channel mean), ``q = sum (z_j - m0)^2`` and
    their count; with ``d = z - m0``: ``mu - m0 = sum(d) / n``, ``var = (q + sum d^2) / n - (mu - m0)^2``.
    """
    if not isinstance(bn, nn.BatchNorm2d):
        raise MetricError(f"only BatchNorm2d is supported as a batch-coupled component (got {type(bn).__name__})")
    others = others.detach()
    count = others.shape[0] * others.shape[2] * others.shape[3]
    m0 = others.mean(dim=(0, 2, 3))
    q = ((others - m0.view(1, -1, 1, 1)) ** 2).sum(dim=(0, 2, 3))
    weight = bn.weight if bn.weight is not None else torch.ones_like(m0)
    bias = bn.bias if bn.bias is not None else torch.zeros_like(m0)

    def fn(z: torch.Tensor) -> torch.Tensor:  # z: (C, H, W)
        d = z - m0.view(-1, 1, 1)
        n = count + z.shape[1] * z.shape[2]
        shift = d.sum(dim=(1, 2)) / n
        var = (q + (d * d).sum(dim=(1, 2))) / n - shift * shift
        scale = weight / torch.sqrt(var + bn.eps)
        return (d - shift.view(-1, 1, 1)) * scale.view(-1, 1, 1) + bias.view(-1, 1, 1)

    return fn


def _linear_constraints(model: nn.Module) -> int:
    name = model.component_name
    if name == "layernorm":
        return 1
    if name == "instancenorm":
        return model.feature_shape[0]
    if name == "groupnorm":
        return int(model.component.num_groups)
    return 0


def predicted_jacobian_rank(model: nn.Module, fc_output: torch.Tensor) -> int:
    """Exact-arithmetic Jacobian rank after the component for generic weights (module doc, "Predictions")."""
    d = model.dim
    name = model.component_name
    if name == "relu":
        return int((fc_output > 0).sum())
    exact = float(getattr(model.component, "eps", 0.0)) == 0.0
    if name in ("layernorm", "instancenorm", "groupnorm"):
        return d - _linear_constraints(model) * (2 if exact else 1)
    if name == "attention":
        c, s, _ = model.feature_shape
        return min(d, s * s * model.component.head_dim)
    return d


def predicted_pca_dim(model: nn.Module, batch: int) -> int:
    """Exact-arithmetic PCA dimension after the component for generic weights and Gaussian inputs."""
    bound = min(batch - 1, model.dim - _linear_constraints(model))
    if model.component_name == "attention":
        c, s, _ = model.feature_shape
        bound = min(bound, s * s * model.component.head_dim)
    return bound


def _fmt_gap(gap: float | None) -> str:
    return "-" if gap is None else f"{gap:.3g}"


def _summarize(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "component": values["component"],
        "D": values["ambient_dim"],
        "batch": values["batch"],
        "PCA in -> before -> after": " -> ".join(str(v) for v in values["pca_sequence"]),
        "Jacobian D -> before -> after (min)": " -> ".join(str(v) for v in values["rank_sequence"]),
        "PCA loss": values["pca_loss"],
        "Jacobian loss (max)": max(values["jacobian_loss"]),
    }


def _details(values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["measured on", "before", "after", "loss", "predicted after", "gap before", "gap after"]
    rows = [[
        f"PCA, batch of {values['batch']} ({values['pca_spectrum']})",
        values["pca_dim_before"], values["pca_dim_after"], values["pca_loss"], values["predicted_pca_dim_after"],
        _fmt_gap(values["pca_gaps"][1]), _fmt_gap(values["pca_gaps"][2]),
    ]]
    for i in range(len(values["jacobian_rank_before"])):
        rows.append([
            f"Jacobian at input {i}", values["jacobian_rank_before"][i], values["jacobian_rank_after"][i],
            values["jacobian_loss"][i], values["predicted_jacobian_rank"][i],
            _fmt_gap(values["jacobian_gaps_before"][i]), _fmt_gap(values["jacobian_gaps_after"][i]),
        ])
    return headers, rows


def _plot(values: dict[str, Any]) -> list[tuple[str, Any]]:
    """Normalised PCA spectra and first-input Jacobian singular values, before and after, with thresholds."""
    if "pca_spectra" not in values:
        return []
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    for ax, key, thr_key, title in (
        (axes[0], "pca_spectra", "pca_thresholds_rel", f"PCA spectrum ({values['pca_spectrum']})"),
        (axes[1], "jacobian_spectra", "jacobian_thresholds_rel", "Jacobian singular values (input 0)"),
    ):
        for j, stage in enumerate(("before", "after")):
            spec = values[key][stage]
            ax.plot(range(1, len(spec) + 1), [max(v, 1e-30) for v in spec], color=f"C{j}", lw=1, label=stage)
            if values[thr_key].get(stage) is not None:
                ax.axhline(values[thr_key][stage], color=f"C{j}", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("index i")
        ax.set_ylabel("value / largest")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{values['component']}: dotted = rank thresholds", fontsize=9)
    fig.tight_layout()
    return [(f"spectra before and after {values['component']}", fig)]


@register_metric(
    StructuralRankLossParams, needs_data=True, version=1, summarize=_summarize, details=_details, plot=_plot
)
def structural_rank_loss(
    model: nn.Module, data: Any, params: StructuralRankLossParams, ctx: MetricContext
) -> dict[str, Any]:
    """PCA dimension and Jacobian rank before/after a component on Gaussian inputs (Feng et al. Fig. 3; module doc).

    Returns ``component``, ``ambient_dim`` (D), ``input_dim``, ``batch``, ``pca_spectrum``; ``pca_dim_input``,
    ``pca_dim_before``, ``pca_dim_after``, ``pca_loss`` (before - after), ``pca_gaps`` ([input, before, after]),
    ``predicted_pca_dim_after``; per Jacobian input: ``jacobian_rank_before``, ``jacobian_rank_after``,
    ``jacobian_loss`` (before - after), ``jacobian_gaps_before/after``, ``predicted_jacobian_rank``, with
    ``jacobian_rank_before_min`` / ``jacobian_rank_after_min``; sequences for ``monotone`` checks:
    ``pca_sequence`` = [pca_dim_input, pca_dim_before, pca_dim_after], ``rank_sequence`` =
    [input_dim, min before, min after], ``jacobian_sequences`` (one [input_dim, before_i, after_i] per input);
    ``rule``; and, when ``keep_spectra``, ``pca_spectra`` / ``jacobian_spectra`` ({before, after}, normalised
    by the largest value) with ``pca_thresholds_rel`` / ``jacobian_thresholds_rel``.
    """
    for attr in ("before", "component", "dim", "feature_shape", "component_name"):
        if not hasattr(model, attr):
            raise MetricError(f"structural_rank_loss needs a builtin structural_probe model (missing .{attr})")
    if data is None:
        raise MetricError("structural_rank_loss needs a dataset (e.g. kind: gaussian, shape: [C, S, S])")
    inputs = data.inputs if params.batch is None else data.inputs[: params.batch]
    b = int(inputs.shape[0])
    d_in = int(inputs[0].numel())
    if d_in != model.dim:
        raise MetricError(f"inputs have {d_in} entries per sample; the probe expects C*S*S = {model.dim}")
    if b < 2:
        raise MetricError("structural_rank_loss needs at least 2 samples for a PCA")
    source_dtype = model.fc.weight.dtype
    device = ctx.device
    model64 = copy.deepcopy(model).to(device=device, dtype=torch.float64).eval().requires_grad_(False)
    x = inputs.to(device=device, dtype=torch.float64)
    rule = params.tolerance

    with torch.no_grad():
        before = model64.before(x)
        after = model64(x)
    pca_in, _ = pca_dimension(x, rule, params.pca_spectrum, source_dtype)
    pca_before, spec_before = pca_dimension(before, rule, params.pca_spectrum, source_dtype)
    pca_after, spec_after = pca_dimension(after, rule, params.pca_spectrum, source_dtype)

    k = min(params.n_jacobian_inputs, b)
    ranks_before, ranks_after, gaps_before, gaps_after, predicted = [], [], [], [], []
    jac_spectra: dict[str, list[float]] = {}
    jac_thr: dict[str, float | None] = {}
    for i in range(k):
        jb = feature_jacobian(model64, x[i], "before")
        coupled = bool(model64.batch_coupled)
        ja = feature_jacobian(model64, x[i], "after", context=x if coupled else None, index=i if coupled else None)
        for stage, jac, ranks, gaps in (
            ("before", jb, ranks_before, gaps_before), ("after", ja, ranks_after, gaps_after)
        ):
            sigma = singular_values(jac)
            res = rank_from_singular_values(sigma, (jac.shape[0], jac.shape[1]), rule, source_dtype)
            ranks.append(res.rank)
            gaps.append(res.gap)
            if i == 0 and params.keep_spectra:
                top = res.sigma_max
                jac_spectra[stage] = [float(s) / top if top > 0 else 0.0 for s in sigma.cpu()]
                jac_thr[stage] = res.threshold / top if top > 0 else None
        predicted.append(predicted_jacobian_rank(model64, before[i].flatten()))

    out: dict[str, Any] = {
        "component": model64.component_name,
        "ambient_dim": model64.dim,
        "input_dim": d_in,
        "batch": b,
        "pca_spectrum": params.pca_spectrum,
        "pca_dim_input": pca_in.rank,
        "pca_dim_before": pca_before.rank,
        "pca_dim_after": pca_after.rank,
        "pca_loss": pca_before.rank - pca_after.rank,
        "pca_gaps": [pca_in.gap, pca_before.gap, pca_after.gap],
        "predicted_pca_dim_after": predicted_pca_dim(model64, b),
        "jacobian_rank_before": ranks_before,
        "jacobian_rank_after": ranks_after,
        "jacobian_rank_before_min": min(ranks_before),
        "jacobian_rank_after_min": min(ranks_after),
        "jacobian_loss": [rb - ra for rb, ra in zip(ranks_before, ranks_after)],
        "jacobian_gaps_before": gaps_before,
        "jacobian_gaps_after": gaps_after,
        "predicted_jacobian_rank": predicted,
        "pca_sequence": [pca_in.rank, pca_before.rank, pca_after.rank],
        "rank_sequence": [d_in, min(ranks_before), min(ranks_after)],
        "jacobian_sequences": [[d_in, rb, ra] for rb, ra in zip(ranks_before, ranks_after)],
        "rule": rule.model_dump(),
    }
    if params.keep_spectra:
        def norm(spec: torch.Tensor) -> list[float]:
            top = float(spec[0]) if spec.numel() else 0.0
            return [float(v) / top if top > 0 else 0.0 for v in spec.cpu()]

        out["pca_spectra"] = {"before": norm(spec_before), "after": norm(spec_after)}
        out["pca_thresholds_rel"] = {
            "before": pca_before.threshold / pca_before.sigma_max if pca_before.sigma_max > 0 else None,
            "after": pca_after.threshold / pca_after.sigma_max if pca_after.sigma_max > 0 else None,
        }
        out["jacobian_spectra"] = jac_spectra
        out["jacobian_thresholds_rel"] = jac_thr
    return out
