"""``partial_jacobian_rank``: partial rank of the Jacobian of every selected layer for an input patch.

Definition (Feng et al., NeurIPS 2022, Sec. 3.2, eq. 5): for a network slice ``f`` (input -> layer
output) and input coordinates ``j_1 < ... < j_K``,

    PartialRank(J_f) = Rank(Sub(J_f, j_1, ..., j_K)) = Rank((d f_i / d x_{j_k})_{i, k}),

the numerical rank (eq. 4, :mod:`suite.linalg.rank`) of the ``out_dim x K`` sub-matrix of Jacobian columns
of a small input patch. Lemma 2: ``|Rank(f_1) - Rank(f_2 o f_1)| >= |PartialRank(f_1) - PartialRank(f_2 o f_1)|``,
so a drop of partial rank between adjacent layers bounds the drop of the full rank from below, and by the
principle of rank diminishing (Thm. 2, eq. 7) the ranks ``Rank(f_1) >= Rank(f_2 o f_1) >= ...`` cannot grow
with depth. The paper's setting (Sec. 4.3): the central 16 x 16 x 3 patch of 224 x 224 ImageNet images
(``K = 768``; rows/cols 104:120), 10 validation images, tolerance ``eps_float32 * N`` (the ``feng`` rule).

Evaluation point (``context``):

* ``image`` (default): the Jacobian at the image itself.
* ``zero_padded``: the released code (Appendix C, Algorithm A1) crops the patch and zero-pads it back to
  the image size, so its Jacobian is taken at an image that is zero outside the patch. Here the patch is
  kept at its own position (for the centre patch this is exactly Algorithm A1's ``(H - h) // 2`` padding).

Both contexts compute ``x(p) = base + pad(p)`` with ``p`` the patch values (the primal) and ``base`` the
image with the patch zeroed (``image``) or all zeros (``zero_padded``): only the evaluation point differs.

Computation (``../shared/DESIGN.md``, "Computing well"): forward mode. The columns of ``J`` for all layers come
from ONE ``torch.func.jvp`` pass of ``p -> (layer_1(x(p)), ..., layer_L(x(p)))`` (layer outputs captured by
forward hooks, flattened), ``vmap``-ed over a chunk of one-hot tangent directions ``e_k`` of the patch, so
``J[:, k] = d f / d p . e_k``. The chunk size comes from ``chunk_size`` or from a memory budget and is halved
on out-of-memory. Attention runs on the math SDPA backend (fused kernels lack forward AD). Ranks are
computed from the singular values of ``J`` itself in float64 (never from ``J^T J``, which the released code
did in float32, squaring the condition number). The released code used reverse mode with one backward per
output element (hours to days per image for ResNet-50); forward mode needs ``K / chunk`` passes.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from suite.errors import MetricError
from suite.linalg.rank import FengRule, RankRule, rank_from_singular_values, singular_values
from suite.metrics.registry import MetricContext, register_metric
from suite.models.layers import capture_outputs, select_layers
from suite.spec.base import SpecModel

__all__ = [
    "ForwardJacobians",
    "eval_model",
    "grouped_singular_values",
    "jacobian_ranks",
    "rank_profile",
    "PartialJacobianParams",
    "forward_jacobians",
    "partial_jacobian_rank",
    "patch_slices",
    "plot_rank_profile",
    "plot_singular_values",
    "rank_summary",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_DEFAULT_CPU_BUDGET_MB = 2048.0


class PartialJacobianParams(SpecModel):
    """Parameters of ``partial_jacobian_rank``."""

    patch: list[int] = Field([16, 16], min_length=2, max_length=2, description="Patch size [h, w] in pixels.")
    position: Literal["center"] | list[int] = Field(
        "center", description="'center' (rows/cols (H-h)//2 ...) or the patch's top-left [row, col]."
    )
    channels: Literal["all"] | list[int] = Field("all", description="Input channels of the patch (default all).")
    context: Literal["image", "zero_padded"] = Field(
        "image",
        description="Evaluation point: the image itself, or the image zeroed outside the patch (released code).",
    )
    layers: Literal["auto"] | list[str] = Field(
        "auto", description="'auto' (Table 1 layer lists, suite.models.layers) or module names ('head:input' = input)."
    )
    n_inputs: int = Field(
        10, ge=1, description="How many dataset inputs (the first ones; fewer if the data has fewer)."
    )
    tolerance: RankRule = Field(default_factory=FengRule, description="Numerical-rank rule (suite.linalg.rank).")
    chunk_size: int | None = Field(
        None, ge=1, description="Tangent columns per vmap chunk; None = from memory_budget_mb, halved on OOM."
    )
    memory_budget_mb: float | None = Field(
        None,
        gt=0,
        description="Budget for one chunk; None = 50% of the CUDA memory free after allocating J, or 2048 MB on CPU.",
    )
    jacobian_storage_dir: str | None = Field(
        None, description="Folder for memory-mapped Jacobians when they do not fit in RAM (CPU only)."
    )
    dtype: Literal["float32", "float64"] = Field("float32", description="Precision of the forward pass.")
    keep_singular_values: bool = Field(True, description="Store the first input's singular values per layer.")

    @field_validator("patch")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(s < 1 for s in v):
            raise ValueError(f"patch sizes must be >= 1; got {v}")
        return v

    @field_validator("position")
    @classmethod
    def _pos(cls, v: Any) -> Any:
        if isinstance(v, list) and (len(v) != 2 or any(s < 0 for s in v)):
            raise ValueError(f"position must be 'center' or [row, col] with row, col >= 0; got {v}")
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: Any) -> Any:
        if isinstance(v, list) and (not v or len(set(v)) != len(v) or any(c < 0 for c in v)):
            raise ValueError(f"channels must be 'all' or a non-empty list of distinct indices >= 0; got {v}")
        return v


# --------------------------------------------------------------------------------------------------------------
# The engine: forward-mode Jacobian columns of several captured layers in one pass
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardJacobians:
    """Per-point Jacobians ``J_l`` of shape ``(out_dim_l, K)`` and how they were computed."""

    jacobians: list[torch.Tensor]
    chunk_size: int
    n_chunks: int
    oom_retries: int


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _activation_bytes(model: nn.Module, run: Callable[[], Any]) -> int:
    """Sum of the bytes of every leaf module's output during one plain forward (a per-column memory estimate)."""
    total = 0

    def hook(mod, args, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total


def _budget_bytes(device: torch.device, memory_budget_mb: float | None) -> float:
    if memory_budget_mb is not None:
        return memory_budget_mb * 2**20
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return 0.5 * free
    return _DEFAULT_CPU_BUDGET_MB * 2**20


def _jacobian_storage(k_cols: int, out_dim: int, like: torch.Tensor, storage_dir: str | None, index: int) -> torch.Tensor:
    """An uninitialised ``(K, out_dim)`` tensor for ``J^T``: in memory, or memory-mapped under ``storage_dir``."""
    if storage_dir is None or like.device.type != "cpu":
        return torch.empty(k_cols, out_dim, dtype=like.dtype, device=like.device)
    import os
    import tempfile

    os.makedirs(storage_dir, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f"jacobian{index}-", suffix=".bin", dir=storage_dir)
    os.close(fd)
    tensor = torch.from_file(path, shared=True, size=k_cols * out_dim, dtype=like.dtype).reshape(k_cols, out_dim)
    os.unlink(path)  # the mapping keeps the data until the tensor is freed
    return tensor


def forward_jacobians(
    model: nn.Module,
    embed: Callable[[torch.Tensor], torch.Tensor],
    primal: torch.Tensor,
    names: Sequence[str],
    *,
    chunk_size: int | None = None,
    memory_budget_mb: float | None = None,
    storage_dir: str | None = None,
) -> ForwardJacobians:
    """Jacobians of every captured point w.r.t. ``primal``, all from the same forward-mode passes.

    ``g(p) = (flatten(h_1), ..., flatten(h_L))`` where ``h_l`` is the tensor at point ``names[l]``
    (:func:`suite.models.layers.capture_outputs`) during ``model(embed(p))``. Column ``k`` of every
    ``J_l = d h_l / d p`` is the tangent ``jvp(g, p, e_k)`` for the one-hot direction ``e_k``
    (``k`` indexes ``p.reshape(-1)``); chunks of directions are batched with ``vmap``.

    Args:
        model: in eval mode, on the device and dtype of ``primal``.
        embed: ``p -> model input`` (a batch of one), differentiable and out-of-place.
        primal: the evaluation point ``p``; ``K = p.numel()`` columns.
        names: point names (module names, optionally ``:input``).
        chunk_size: directions per pass; ``None`` = ``budget / (activation bytes + captured bytes)`` per
            column, at least 1. On out-of-memory the chunk is halved and the pass retried.
        memory_budget_mb: budget for one pass (default 50% of the CUDA memory free after allocating the
            Jacobians, 2048 MB on CPU). The per-column estimate is the sum of the bytes of every leaf
            module's output in one plain forward (tangents have the activations' shapes) plus the captured
            outputs; it is conservative since intermediate tangents are freed under ``no_grad``.
        storage_dir: when given, the Jacobians live in memory-mapped files in this folder instead of
            RAM (ResNet-50 at 224 x 224 with K = 768 needs 17.5 GB of float32 Jacobians); each is stored
            as ``J_l^T`` (K x out_dim) so a chunk of columns is one contiguous write.

    Returns:
        :class:`ForwardJacobians` with ``J_l`` of shape ``(out_dim_l, K)`` in ``primal``'s dtype.

    """
    from torch.func import jvp, vmap
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = list(names)
    k_cols = primal.numel()
    with capture_outputs(model, names) as store:

        def g(p: torch.Tensor) -> tuple[torch.Tensor, ...]:
            store.clear()
            model(embed(p))
            missing = [n for n in names if n not in store]
            if missing:
                raise MetricError(f"points {missing} were not reached during the forward pass")
            return tuple(store[n].reshape(-1) for n in names)

        with torch.no_grad():
            out_dims = [int(t.numel()) for t in g(primal)]
        # the Jacobians themselves (sum(out_dims) x K) are allocated first, outside the chunk budget
        jac_t = [_jacobian_storage(k_cols, d, primal, storage_dir, i) for i, d in enumerate(out_dims)]
        if chunk_size is None:
            act = _activation_bytes(model, lambda: model(embed(primal)))
            captured = sum(out_dims) * primal.element_size()
            chunk_size = int(_budget_bytes(primal.device, memory_budget_mb) // max(act + captured, 1))
        chunk = max(1, min(int(chunk_size), k_cols))
        flat_shape = primal.shape

        def columns(tangents: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return vmap(lambda t: jvp(g, (primal,), (t,))[1])(tangents)

        start, n_chunks, retries = 0, 0, 0
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            while start < k_cols:
                stop = min(start + chunk, k_cols)
                idx = torch.arange(start, stop, device=primal.device)
                tangents = torch.zeros(stop - start, k_cols, dtype=primal.dtype, device=primal.device)
                tangents[torch.arange(stop - start, device=primal.device), idx] = 1
                try:
                    outs = columns(tangents.reshape(stop - start, *flat_shape))
                except Exception as exc:
                    if not _is_oom(exc) or chunk == 1:
                        raise
                    del tangents
                    if primal.device.type == "cuda":
                        torch.cuda.empty_cache()
                    chunk = max(1, chunk // 2)
                    retries += 1
                    continue
                for j, t in zip(jac_t, outs):
                    j[start:stop] = t
                del outs, tangents
                start, n_chunks = stop, n_chunks + 1
    return ForwardJacobians([j.T for j in jac_t], chunk, n_chunks, retries)


def grouped_singular_values(mats: Sequence[torch.Tensor], max_batch_bytes: int = 256 * 2**20) -> list[torch.Tensor]:
    """Singular values (float64, descending) of each matrix, via :func:`suite.linalg.rank.singular_values`.

    Matrices of equal shape are stacked and decomposed in one batched call while the float64 stack stays
    under ``max_batch_bytes``; larger ones are decomposed one at a time.
    """
    out: list[torch.Tensor | None] = [None] * len(mats)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, m in enumerate(mats):
        groups.setdefault(tuple(m.shape), []).append(i)
    for shape, idx in groups.items():
        per = math.prod(shape) * 8
        step = max(1, max_batch_bytes // max(per, 1))
        for s in range(0, len(idx), step):
            part = idx[s : s + step]
            if len(part) == 1:
                out[part[0]] = singular_values(mats[part[0]])
            else:
                values = singular_values(torch.stack([mats[i] for i in part]))
                for j, i in enumerate(part):
                    out[i] = values[j]
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------------
# The metric
# --------------------------------------------------------------------------------------------------------------


def jacobian_ranks(
    jacobians: Sequence[torch.Tensor], rule: Any, dtype: torch.dtype, record: dict[str, list[Any]] | None = None
) -> list[int]:
    """Numerical rank of each Jacobian (float64 singular values of ``J`` itself, :mod:`suite.linalg.rank`).

    With ``record``, appends each matrix's ``thresholds``, ``gaps``, ``sigma_max`` and ``singular_values``.
    """
    ranks = []
    for jac, sigma in zip(jacobians, grouped_singular_values(jacobians)):
        res = rank_from_singular_values(sigma, (jac.shape[0], jac.shape[1]), rule, dtype)
        ranks.append(res.rank)
        if record is not None:
            record["thresholds"].append(res.threshold)
            record["gaps"].append(res.gap)
            record["sigma_max"].append(res.sigma_max)
            record["singular_values"].append(sigma.cpu().tolist())
    return ranks


def rank_profile(
    points: Sequence[tuple[str, str]], out_dims: list[int], n_cols: int, ranks: list[list[int]],
    first: dict[str, list[Any]], keep_singular_values: bool,
) -> dict[str, Any]:
    """The per-layer values shared by the Jacobian-rank metrics, aligned with ``points``.

    ``layers``/``modules``, ``out_dims``, ``full_ranks`` (``min(out_dim, n_cols)``), ``ranks``
    (``[input][layer]``), ``ranks_first``, ``mean_ranks``/``std_ranks`` over inputs, and input 0's
    ``thresholds``, ``gaps``, ``sigma_max`` (and ``singular_values`` when kept) from ``first``.
    """
    mean, std = rank_summary(ranks)
    recorded = {k: v for k, v in first.items() if keep_singular_values or k != "singular_values"}
    return {
        "layers": [lab for lab, _ in points],
        "modules": [m for _, m in points],
        "out_dims": out_dims,
        "full_ranks": [min(d, n_cols) for d in out_dims],
        "ranks": ranks,
        "ranks_first": ranks[0],
        "mean_ranks": mean,
        "std_ranks": std,
        **recorded,
    }


def patch_slices(
    image_hw: tuple[int, int], patch: Sequence[int], position: str | Sequence[int]
) -> tuple[slice, slice]:
    """Row and column slices of the patch: centre = ``(H - h) // 2`` (Feng et al., Algorithm A1) or ``[row, col]``."""
    (hh, ww), (h, w) = image_hw, patch
    if h > hh or w > ww:
        raise MetricError(f"patch {list(patch)} does not fit the {hh} x {ww} input")
    if position == "center":
        r0, c0 = (hh - h) // 2, (ww - w) // 2
    else:
        r0, c0 = position
        if r0 + h > hh or c0 + w > ww:
            raise MetricError(f"patch {list(patch)} at {list(position)} leaves the {hh} x {ww} input")
    return slice(r0, r0 + h), slice(c0, c0 + w)


def _patch_embedding(
    image: torch.Tensor, rows: slice, cols: slice, channels: list[int], context: str
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """``(embed, primal)`` with ``embed(p) = base + pad(p)``; ``primal`` = the image's patch values.

    ``base`` is the image with the patch zeroed (``image`` context) or zeros (``zero_padded``, Feng et al.
    Algorithm A1). ``p`` has shape ``(len(channels), h, w)``; columns are ordered channel-major (c, i, j),
    as the released code's ``view(-1, C * h * w)``.
    """
    c, hh, ww = image.shape
    ch = torch.tensor(channels, device=image.device)
    primal = image[ch][:, rows, cols].clone()
    if context == "zero_padded":
        base = torch.zeros_like(image)
    else:
        base = image.clone()
        mask = torch.zeros_like(image, dtype=torch.bool)
        mask[ch, rows, cols] = True
        base = base.masked_fill(mask, 0.0)
    pad = (cols.start, ww - cols.stop, rows.start, hh - rows.stop)
    select = None
    if channels != list(range(c)):
        select = torch.zeros(c, len(channels), dtype=image.dtype, device=image.device)
        select[ch, torch.arange(len(channels), device=image.device)] = 1

    def embed(p: torch.Tensor) -> torch.Tensor:
        full = p if select is None else torch.einsum("Cc,chw->Chw", select, p)
        return (base + torch.nn.functional.pad(full, pad))[None]

    return embed, primal


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _summarize(values: dict[str, Any]) -> dict[str, Any]:
    mean = values["mean_ranks"]
    rises = [i for i in range(len(mean) - 1) if mean[i + 1] > mean[i]]
    gaps = [g for g in values["gaps"] if g is not None]
    return {
        "points": len(mean),
        "K": values["K"],
        "inputs": values["n_inputs"],
        "mean rank first -> last": f"{mean[0]:.1f} -> {mean[-1]:.1f}" if mean else "-",
        "rises": ", ".join(f"{values['layers'][i]}->{values['layers'][i + 1]}" for i in rises) or "none",
        "smallest gap": _fmt(min(gaps, default=None)),
    }


def _details(values: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["point", "module", "out dim", "min(out, K)", "rank (input 0)", "mean", "std", "threshold", "gap"]
    rows = [
        [lab, mod, d, full, r0, f"{m:.2f}", f"{s:.2f}", f"{t:.3g}", _fmt(g)]
        for lab, mod, d, full, r0, m, s, t, g in zip(
            values["layers"],
            values["modules"],
            values["out_dims"],
            values["full_ranks"],
            values["ranks_first"],
            values["mean_ranks"],
            values["std_ranks"],
            values["thresholds"],
            values["gaps"],
        )
    ]
    return headers, rows


def plot_rank_profile(values: dict[str, Any], title: str) -> Any:
    """Rank against depth: mean with a +-std band, each input as a thin line, min(out, K) dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    xs = list(range(len(values["mean_ranks"])))
    for ranks in values["ranks"]:
        ax.plot(xs, ranks, color="0.75", lw=0.6)
    mean, std = values["mean_ranks"], values["std_ranks"]
    ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.3)
    ax.plot(xs, mean, marker="o", ms=3, label="mean rank")
    ax.plot(xs, values["full_ranks"], ls="--", color="k", lw=0.8, label="min(out dim, K)")
    ax.set_xticks(xs, values["layers"], rotation=90, fontsize=6)
    ax.set_ylabel("rank")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_singular_values(values: dict[str, Any], title: str) -> Any:
    """sigma_i / sigma_1 of each layer's Jacobian (first input), log scale, colour = depth, dots = threshold."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    cmap = plt.get_cmap("viridis")
    sv = values["singular_values"]
    n = len(sv)
    for i, (lab, sigma, thr) in enumerate(zip(values["layers"], sv, values["thresholds"])):
        if not sigma or sigma[0] <= 0:
            continue
        colour = cmap(i / max(n - 1, 1))
        ax.plot(range(1, len(sigma) + 1), [max(v / sigma[0], 1e-18) for v in sigma], color=colour, lw=1,
                label=lab if n <= 8 else None)
        ax.axhline(thr / sigma[0], color=colour, lw=0.5, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("i")
    ax.set_ylabel("sigma_i / sigma_1")
    ax.set_title(title)
    if n <= 8:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _plot(values: dict[str, Any]) -> list[tuple[str, Any]]:
    figs = [("partial rank vs depth", plot_rank_profile(values, f"partial rank, K = {values['K']}"))]
    if values.get("singular_values"):
        figs.append(("normalised singular values per layer",
                     plot_singular_values(values, "singular values of J per layer (input 0); colour = depth")))
    return figs


@contextmanager
def eval_model(model: nn.Module, dtype: torch.dtype, device: torch.device) -> Iterator[nn.Module]:
    """Yield the model in eval mode (batch-norm uses running statistics) in ``dtype`` on ``device``.

    A model of another dtype is deep-copied before conversion; the caller's training flags are restored.
    """
    param = next(iter(model.parameters()), None)
    if param is not None:
        same_device = param.device.type == device.type and (device.index is None or param.device.index == device.index)
        if param.dtype != dtype or not same_device:
            model = copy.deepcopy(model).to(device=device, dtype=dtype)
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


def rank_summary(ranks: list[list[int]]) -> tuple[list[float], list[float]]:
    """Per-layer mean and (population) standard deviation of ``ranks[input][layer]``."""
    t = torch.tensor(ranks, dtype=torch.float64)
    return t.mean(0).tolist(), t.std(0, correction=0).tolist()


@register_metric(
    PartialJacobianParams, needs_data=True, version=1, summarize=_summarize, details=_details, plot=_plot
)
def partial_jacobian_rank(
    model: nn.Module, data: Any, params: PartialJacobianParams, ctx: MetricContext
) -> dict[str, Any]:
    """Partial rank of the Jacobian (Feng et al. 2022, eq. 5) of every selected layer for an input patch.

    Returns (lists aligned with ``layers``): ``layers`` (labels), ``modules``, ``out_dims``, ``full_ranks``
    (``min(out_dim, K)``), ``ranks`` (``[input][layer]``), ``ranks_first`` (= ``ranks[0]``, for exact
    baselines), ``mean_ranks`` and ``std_ranks`` (over inputs; ``mean_ranks`` is what a ``monotone``
    ``non_increasing`` check reads), and for input 0 ``thresholds``, ``gaps`` (``sigma_r / sigma_{r+1}``),
    ``sigma_max`` and ``singular_values``; plus ``K``, ``n_inputs``, ``patch_rows``/``patch_cols``
    (``[start, stop)``), ``channels``, ``context``, ``rule``, ``dtype``, ``chunk_size``, ``n_chunks``,
    ``oom_retries`` and ``seconds_per_input``.
    """
    if data is None:
        raise MetricError("partial_jacobian_rank needs a dataset of images (n, C, H, W)")
    inputs = data.inputs
    if inputs.ndim != 4:
        raise MetricError(f"partial_jacobian_rank needs image inputs of shape (n, C, H, W); got {tuple(inputs.shape)}")
    n_channels, hh, ww = (int(s) for s in inputs.shape[1:])
    channels = list(range(n_channels)) if params.channels == "all" else list(params.channels)
    if max(channels) >= n_channels:
        raise MetricError(f"channels {channels} out of range for {n_channels}-channel inputs")
    rows, cols = patch_slices((hh, ww), params.patch, params.position)
    dtype = _DTYPES[params.dtype]
    points = select_layers(model, params.layers)
    names = [m for _, m in points]
    n_inputs = min(params.n_inputs, int(inputs.shape[0]))
    k_cols = len(channels) * params.patch[0] * params.patch[1]

    ranks: list[list[int]] = []
    first: dict[str, list[Any]] = {"thresholds": [], "gaps": [], "sigma_max": [], "singular_values": []}
    out_dims: list[int] = []
    chunk, n_chunks, retries, seconds = params.chunk_size, 0, 0, []
    with eval_model(model, dtype, ctx.device) as net:
        for i in range(n_inputs):
            t0 = time.perf_counter()
            image = inputs[i].to(device=ctx.device, dtype=dtype)
            embed, primal = _patch_embedding(image, rows, cols, channels, params.context)
            fj = forward_jacobians(
                net, embed, primal, names, chunk_size=chunk, memory_budget_mb=params.memory_budget_mb,
                storage_dir=params.jacobian_storage_dir,
            )
            chunk, n_chunks, retries = fj.chunk_size, n_chunks + fj.n_chunks, retries + fj.oom_retries
            out_dims = [int(j.shape[0]) for j in fj.jacobians]
            row = jacobian_ranks(fj.jacobians, params.tolerance, dtype, first if i == 0 else None)
            del fj
            ranks.append(row)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)
            seconds.append(time.perf_counter() - t0)
    return {
        **rank_profile(points, out_dims, k_cols, ranks, first, params.keep_singular_values),
        "K": k_cols,
        "n_inputs": n_inputs,
        "patch_rows": [rows.start, rows.stop],
        "patch_cols": [cols.start, cols.stop],
        "channels": channels,
        "context": params.context,
        "rule": params.tolerance.model_dump(),
        "dtype": params.dtype,
        "chunk_size": chunk,
        "n_chunks": n_chunks,
        "oom_retries": retries,
        "seconds_per_input": seconds,
    }
