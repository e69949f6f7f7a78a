"""Benchmark pairs of the SVR family (Singular Value Representation, Meller & Berkouk).

Ours: :func:`suite.metrics.svr.representation.compute_svr` + :func:`~suite.metrics.svr.representation.svr_values`
(float64, ``driver="auto"``: Gram eigendecomposition for large well-conditioned maps, LAPACK SVD otherwise;
``max_neurons`` keeps the top-k by a partial eigendecomposition). ``svr_values`` is the metric's whole
output, so ours also computes what the reference leaves out (node intensities, block concentrations,
strongest edges, heatmaps).

Reference: :func:`numpy_reference_svr`, the straightforward per-layer NumPy/SciPy code written here from
the paper's formulas (``shared/REFERENCE.md`` section 2), like the released code (github danmlr/svr,
``svr.py``): the weights of every Conv/Linear module in definition order; per map ``np.linalg.svd`` of
the flattened ``o x (i K^2)`` float64 weight (or ``scipy.sparse.linalg.svds(k)`` when
``min(shape) > k``, sorted descending: the released code's ``max_dim_svd``); adjacency
``np.tensordot`` of ``V_{i+1}`` (unflattened to ``c x Z x N``) with ``U_i`` over the shared dimension
``c``, squared and summed over the ``Z`` kernel positions (an FC/7x7 map after a conv treats the feature
map as its kernel); threshold ``chi2.isf(p, Z) / (c Z)`` with ``p = 1 - Phi(3)``; significant count
``#{a > threshold}``; internal dimensions ``argmax B[i, j] - i j / c`` with ``B`` the double cumsum,
counted from 1.

Pairs (sizes: ``default``/``vgg19`` = timm ``vgg19`` random init, any timm ``vgg11``/``vgg13``/``vgg16``,
``small`` and ``medium`` = a stand-in with VGG19's exact structure and module names at 1/16 and 1/4 width;
see :func:`vgg_model`):

* ``svr_vgg19``: the whole SVR, every spectral neuron of all 19 maps (18 pairs).
* ``svr_vgg19_top128``: the released code's setting, the top ``k`` spectral neurons per map
  (``k = 128`` for timm models; ``small``: 16, ``medium``: 64).
* ``svr_vgg19_features``: only the 16 conv maps (``layers=["features.*"]``), full SVR.

Agreement (checked once before timing, see :func:`agree_full` and :func:`agree_top`):

* full SVR: same maps, singular values ``|s - s_ref| <= 1e-8 s_ref + 1e-10 sigma_1`` (per map),
  thresholds ``rtol 1e-12``, identical significant counts and internal dimensions for every pair.
  The ``1e-10 sigma_1`` term is needed by the Gram driver: the eigenvalues of ``A A^T`` carry an
  absolute error ~ ``eps sigma_1^2``, so ``sigma_j`` has a relative error ~ ``eps (sigma_1 / sigma_j)^2``.
  On timm vgg19 (random init) the square 4096 x 4096 ``pre_logits.fc2`` has ``sigma_min / sigma_1 ~ 9e-5``
  and its smallest singular value differs by 1.6e-8 relative (1.5e-12 of ``sigma_1``); a plain
  ``rtol 1e-8`` fails on that one value. Everything else agrees to ~1e-14; adjacencies to ~2e-10.
* top-k: singular values ``rtol 1e-6`` (ARPACK), the adjacency restricted to the top
  ``min(32, k)`` neurons of both maps within ``atol 1e-6``, significant counts within
  ``max(2, 1%)`` of each other and identical internal dimensions. The count slack allows for rotations
  of near-degenerate singular vectors (trained weights); on the random-init vgg19 and the stand-ins
  everything in fact agrees far tighter (:func:`main` prints the observed discrepancies): singular
  values to ~4e-15 relative, the whole k x k adjacencies to ~5e-14, identical counts and dimensions,
  because the top singular values of a random map are well separated, so ARPACK and the partial Gram
  eigendecomposition return the same vectors.

``python benchmarks/bench_svr.py [--pair NAME] [--size SIZE]`` (:func:`main`) prints the per-component
timings of both sides (one run each) and the observed discrepancies.
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from suite.bench.harness import Pair, register_pair
from suite.metrics.svr.representation import SvrParams, SvrResult, compute_svr, svr_values

__all__ = [
    "OursSvr",
    "ReferenceSvr",
    "VggStandIn",
    "agree_full",
    "agree_top",
    "discrepancies",
    "numpy_reference_svr",
    "reference_weights",
    "svr_vgg19",
    "svr_vgg19_features",
    "svr_vgg19_top128",
    "vgg_model",
]

SIGMA = 3.0
SV_RTOL_FULL = 1e-8
SV_ATOL_FULL = 1e-10  # times sigma_1 of the map: the Gram driver's error grows like eps (sigma_1 / sigma_j)^2
SV_RTOL_TOP = 1e-6
THRESHOLD_RTOL = 1e-12
TOP_BLOCK = 32
TOP_BLOCK_ATOL = 1e-6
TOP_COUNT_TOLERANCE = 0.01  # relative: |ours - ref| <= 1% of the count (and at most 2 edges when small)

_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]

# size -> (timm name or "stand-in", width divisor, top k)
_SIZES: dict[str, tuple[str, int, int]] = {
    "default": ("vgg19", 1, 128),
    "vgg19": ("vgg19", 1, 128),
    "vgg16": ("vgg16", 1, 128),
    "vgg13": ("vgg13", 1, 128),
    "vgg11": ("vgg11", 1, 128),
    "medium": ("stand-in", 4, 64),
    "small": ("stand-in", 16, 16),
}


# ------------------------------------------------------------------------------------------ models


class _ConvMlp(nn.Module):
    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, hidden, 7)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, hidden, 1)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.fc2(self.act1(self.fc1(x))))


class _Head(nn.Module):
    def __init__(self, hidden: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class VggStandIn(nn.Module):
    """timm's ``vgg19`` at ``1 / div`` width: the same modules, names and init.

    ``features`` (16 3x3 convs), ``pre_logits.fc1`` (7x7 conv), ``pre_logits.fc2`` (1x1 conv), ``head.fc``
    (Linear ``4096/div -> 1000/div``); kaiming fan-out init for convs, N(0, 0.01) for the Linear head.
    """

    def __init__(self, div: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 3
        for v in _VGG19:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(prev, int(v) // div, 3, padding=1), nn.ReLU(inplace=True)]
                prev = int(v) // div
        self.features = nn.Sequential(*layers)
        self.pre_logits = _ConvMlp(prev, 4096 // div)
        self.head = _Head(4096 // div, 1000 // div)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images ``(B, 3, H, W)`` with ``H, W >= 224`` (unused by the SVR, which reads weights)."""
        return self.head(self.pre_logits(self.features(x)))


def vgg_model(size: str) -> tuple[nn.Module, int, str]:
    """``(model, top k, description)`` of a size (module docstring); seed 0, eval mode."""
    if size not in _SIZES:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(_SIZES)}")
    name, div, k = _SIZES[size]
    torch.manual_seed(0)
    if name == "stand-in":
        return VggStandIn(div).eval(), k, f"vgg19 stand-in at 1/{div} width"
    import timm

    return timm.create_model(name, pretrained=False).eval(), k, f"timm {name}"


# ------------------------------------------------------------------------------------------ reference


@dataclass
class ReferenceSvr:
    """What the NumPy reference computes; ``seconds`` holds its component timings."""

    names: list[str]
    singular_values: list[np.ndarray]
    adjacencies: list[np.ndarray]
    thresholds: list[float]
    significant: list[int]
    internal_dims: list[tuple[int, int]]
    seconds: dict[str, float] = field(default_factory=dict)


def reference_weights(model: nn.Module, layers: list[str] | None = None) -> list[tuple[str, torch.Tensor]]:
    """``(name, weight)`` of every Conv2d/Linear in definition order (the released code's weight list).

    Optionally filtered by fnmatch ``layers`` patterns. Weights are the modules' own tensors.
    """
    return [
        (name, m.weight.detach())
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
        and (layers is None or any(fnmatch.fnmatchcase(name, p) for p in layers))
    ]


def numpy_reference_svr(
    weights: list[tuple[str, torch.Tensor]],
    k: int | None = None,
    sigma: float = SIGMA,
    *,
    dims_from: int = 1,
    null_dof: Callable[[int], int] | None = None,
    seed: int = 0,
) -> ReferenceSvr:
    """Compute the SVR by the per-layer NumPy/SciPy code of the module docstring.

    Args:
        weights: ``(name, weight)`` of consecutive maps, conv weights 4-D ``(o, i, K, K)``.
        k: keep the top ``k`` spectral neurons by ``svds`` when ``min(shape) > k`` (released code); all if None.
        sigma: significance in normal sigmas, ``p = 1 - Phi(sigma)``.
        dims_from: 1 (paper); 0 reproduces the released code's off-by-one (a deliberately wrong reference).
        null_dof: chi2 degrees of freedom as a function of the kernel positions ``Z``; default ``Z``
            (paper); ``lambda z: 1`` is the FC law applied to convs (a deliberately wrong reference).
        seed: ARPACK start vector seed.

    Returns:
        Singular values, adjacencies, thresholds, counts, internal dimensions and component timings.

    """
    from scipy.sparse.linalg import svds

    p = stats.norm.sf(sigma)
    secs: dict[str, float] = {}
    names, us, ss, vs = [], [], [], []
    for name, w in weights:
        t0 = time.perf_counter()
        mat = w.cpu().numpy().astype(np.float64).reshape(w.shape[0], -1)  # o x (i K^2)
        if k is not None and min(mat.shape) > k:
            u, s, vt = svds(mat, k=k, rng=seed)
            order = np.argsort(s)[::-1]
            u, s, vt = u[:, order], s[order], vt[order]
        else:
            u, s, vt = np.linalg.svd(mat, full_matrices=False)
        names.append(name)
        us.append(u)
        ss.append(s)
        vs.append(vt.T)  # (i K^2, M)
        secs[f"svd {name} {tuple(mat.shape)}"] = time.perf_counter() - t0
    adjs, thrs, counts, dims = [], [], [], []
    for i in range(len(us) - 1):
        t0 = time.perf_counter()
        c = us[i].shape[0]
        v = vs[i + 1].reshape(c, -1, vs[i + 1].shape[1])  # (c, Z, N): filters i x K x K, or the feature map
        z = v.shape[1]
        g = np.tensordot(v, us[i], axes=([0], [0]))  # (Z, N, M)
        np.square(g, out=g)
        a = g.sum(axis=0)  # (N next, M prev)
        del g
        t1 = time.perf_counter()
        dof = z if null_dof is None else null_dof(z)
        thr = float(stats.chi2.isf(p, dof)) / (c * dof)
        count = int((a > thr).sum())
        dev = a.cumsum(axis=0).cumsum(axis=1) - np.outer(np.arange(1, a.shape[0] + 1), np.arange(1, a.shape[1] + 1)) / c
        r, col = np.unravel_index(int(np.argmax(dev)), dev.shape)
        adjs.append(a)
        thrs.append(thr)
        counts.append(count)
        dims.append((int(r) + dims_from, int(col) + dims_from))
        t2 = time.perf_counter()
        secs[f"adjacency {names[i]} -> {names[i + 1]}"] = t1 - t0
        secs[f"stats {names[i]} -> {names[i + 1]}"] = t2 - t1
    return ReferenceSvr(names, ss, adjs, thrs, counts, dims, secs)


# ------------------------------------------------------------------------------------------ agreement


@dataclass
class OursSvr:
    """Ours: the in-memory result and the metric values."""

    result: SvrResult
    values: dict[str, Any]


def discrepancies(ours: OursSvr, ref: ReferenceSvr, block: int = TOP_BLOCK) -> dict[str, Any]:
    """Observed differences between ours and the reference (diagnostics, no verdict).

    Max relative singular value error, max |adjacency| difference (whole and top ``block`` x ``block``),
    per-pair count and internal dimension differences, max relative threshold difference.
    """
    sv_pairs = list(zip(ours.values["singular_values"], ref.singular_values, strict=False))
    sv = max(float(np.max(np.abs(np.asarray(a) - b) / np.abs(b))) for a, b in sv_pairs)
    sv_s1 = max(float(np.max(np.abs(np.asarray(a) - b))) / float(b[0]) for a, b in sv_pairs)
    adj_all, adj_top = 0.0, 0.0
    for a, b in zip(ours.result.adjacencies, ref.adjacencies, strict=False):
        if tuple(a.shape) != b.shape:
            return {"shapes differ": [tuple(a.shape), b.shape]}
        d = np.abs(a.numpy() - b)
        adj_all = max(adj_all, float(d.max()))
        adj_top = max(adj_top, float(d[:block, :block].max()))
    return {
        "singular_values_max_rel": sv,
        "singular_values_max_abs_over_sigma1": sv_s1,
        "adjacency_max_abs": adj_all,
        f"adjacency_top{block}_max_abs": adj_top,
        "count_diff": [o - r for o, r in zip(ours.values["significant_edges"], ref.significant, strict=False)],
        "dims_diff": [
            (o[0] - r[0], o[1] - r[1]) for o, r in zip(ours.values["internal_dims"], ref.internal_dims, strict=False)
        ],
        "threshold_max_rel": max(
            abs(pr["threshold"] - t) / t for pr, t in zip(ours.values["pairs"], ref.thresholds, strict=False)
        ),
    }


def _same_maps(ours: OursSvr, ref: ReferenceSvr) -> str | None:
    names = [layer["name"] for layer in ours.values["layers"]]
    if names != ref.names:
        return f"maps differ: {names} vs {ref.names}"
    for name, a, b in zip(names, ours.values["singular_values"], ref.singular_values, strict=True):
        if len(a) != len(b):
            return f"{name}: {len(a)} vs {len(b)} spectral neurons"
    return None


def _singular_values(ours: OursSvr, ref: ReferenceSvr, rtol: float, atol_s1: float = 0.0) -> str | None:
    """``|s - s_ref| <= rtol s_ref + atol_s1 s_ref[0]`` for every spectral neuron of every map."""
    for name, a, b in zip(ref.names, ours.values["singular_values"], ref.singular_values, strict=True):
        if not np.allclose(a, b, rtol=rtol, atol=atol_s1 * float(b[0])):
            d = np.abs(np.asarray(a) - b)
            return (
                f"{name}: singular values differ by up to {float(np.max(d / b)):.2e} relative, "
                f"{float(np.max(d)) / float(b[0]):.2e} of sigma_1 (rtol {rtol:g}, atol {atol_s1:g} sigma_1)"
            )
    return None


def _thresholds(ours: OursSvr, ref: ReferenceSvr) -> str | None:
    for pr, t in zip(ours.values["pairs"], ref.thresholds, strict=True):
        if not math.isclose(pr["threshold"], t, rel_tol=THRESHOLD_RTOL):
            return f"{pr['prev']} -> {pr['next']}: threshold {pr['threshold']!r} vs {t!r}"
    return None


def agree_full(ours: OursSvr, ref: ReferenceSvr) -> str | None:
    """Full SVR: same maps, singular values rtol 1e-8 (+ 1e-10 sigma_1), thresholds rtol 1e-12, same counts and dims."""
    problem = _same_maps(ours, ref) or _singular_values(ours, ref, SV_RTOL_FULL, SV_ATOL_FULL) or _thresholds(ours, ref)
    if problem:
        return problem
    if ours.values["significant_edges"] != ref.significant:
        return f"significant counts differ: {ours.values['significant_edges']} vs {ref.significant}"
    dims = [tuple(d) for d in ours.values["internal_dims"]]
    if dims != ref.internal_dims:
        return f"internal dimensions differ: {dims} vs {ref.internal_dims}"
    return None


def agree_top(ours: OursSvr, ref: ReferenceSvr) -> str | None:
    """Top-k SVR: singular values rtol 1e-6, the top-``min(32, k)`` adjacency block atol 1e-6, ...

    ... significant counts within ``max(2, 1%)`` and identical internal dimensions (module docstring).
    """
    problem = _same_maps(ours, ref) or _singular_values(ours, ref, SV_RTOL_TOP) or _thresholds(ours, ref)
    if problem:
        return problem
    for i, (a, b) in enumerate(zip(ours.result.adjacencies, ref.adjacencies, strict=True)):
        d = float(np.max(np.abs(a[:TOP_BLOCK, :TOP_BLOCK].numpy() - b[:TOP_BLOCK, :TOP_BLOCK])))
        if d > TOP_BLOCK_ATOL:
            return f"{ref.names[i]} -> {ref.names[i + 1]}: top-{TOP_BLOCK} adjacency differs by {d:.2e}"
    for i, (o, r) in enumerate(zip(ours.values["significant_edges"], ref.significant, strict=True)):
        if abs(o - r) > max(2, TOP_COUNT_TOLERANCE * r):
            return f"{ref.names[i]} -> {ref.names[i + 1]}: significant counts {o} vs {r}"
    dims = [tuple(d) for d in ours.values["internal_dims"]]
    if dims != ref.internal_dims:
        return f"internal dimensions differ: {dims} vs {ref.internal_dims}"
    return None


# ------------------------------------------------------------------------------------------ pairs


def _make(size: str, layers: list[str] | None, top: bool, reference: Callable[..., ReferenceSvr] | None = None) -> Pair:
    model, k, desc = vgg_model(size)
    k_used = k if top else None
    params = SvrParams(sigma=SIGMA)
    weights = reference_weights(model, layers)
    ref_fn = reference or numpy_reference_svr

    def ours() -> OursSvr:
        result = compute_svr(model, layers=layers, driver="auto", max_neurons=k_used)
        return OursSvr(result, svr_values(result, params))

    def ref() -> ReferenceSvr:
        return ref_fn(weights, k_used)

    what = f"{desc}, {len(weights)} maps" + (f", top {k} neurons" if top else ", all neurons")
    return Pair(ours, ref, agree_top if top else agree_full, what)


@register_pair(
    target=10.0,
    description=(
        "SVR of vgg19, all 19 maps and all spectral neurons: compute_svr + svr_values vs per-layer "
        "NumPy/SciPy (issue: >= 10x and < 10 s)"
    ),
)
def svr_vgg19(device: torch.device, size: str) -> Pair:
    """Sizes: ``default``/``vgg19``, ``vgg11``..``vgg16`` (timm), ``small``/``medium`` (stand-ins). CPU only."""
    return _make(size, None, top=False)


@register_pair(
    target=None,
    description=(
        "SVR of vgg19, top-128 spectral neurons per map (released code's max_dim_svd): partial Gram eigh vs scipy svds"
    ),
)
def svr_vgg19_top128(device: torch.device, size: str) -> Pair:
    """Keep the top 128 (``small``/``medium``: 16/64) like the released code; full size: minutes (svds)."""
    return _make(size, None, top=True)


@register_pair(
    target=None,
    description=(
        "SVR of vgg19's 16 conv maps (features.*), all spectral neurons: compute_svr + svr_values vs per-layer NumPy"
    ),
)
def svr_vgg19_features(device: torch.device, size: str) -> Pair:
    """Only ``features.*``; same sizes as ``svr_vgg19``."""
    return _make(size, ["features.*"], top=False)


# ------------------------------------------------------------------------------------------ breakdown


def _ours_breakdown(model: nn.Module, layers: list[str] | None, k: int | None) -> tuple[OursSvr, dict[str, float]]:
    from suite.metrics.svr.maps import svr_chain
    from suite.metrics.svr.spectral import adjacency, decompose

    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    chain = svr_chain(model, layers)
    secs["chain (float64 weights)"] = time.perf_counter() - t0
    neurons = []
    for m in chain.maps:
        t0 = time.perf_counter()
        neurons.append(decompose(m, "svr", "auto", k))
        secs[f"decompose {m.name} {m.out_dim}x{m.in_channels * m.kernel} [{neurons[-1].method}]"] = (
            time.perf_counter() - t0
        )
    adjs = []
    for i in range(len(neurons) - 1):
        t0 = time.perf_counter()
        adjs.append(adjacency(neurons[i], neurons[i + 1]))
        secs[f"adjacency {chain.maps[i].name} -> {chain.maps[i + 1].name}"] = time.perf_counter() - t0
    result = SvrResult(chain, neurons, adjs)
    t0 = time.perf_counter()
    values = svr_values(result, SvrParams(sigma=SIGMA))
    secs["svr_values"] = time.perf_counter() - t0
    return OursSvr(result, values), secs


def _print_components(side: str, secs: dict[str, float], total: float, top: int) -> None:
    ranked = sorted(secs.items(), key=lambda kv: -kv[1])
    for key, s in ranked[:top]:
        print(f"  {side:5s} {s:9.3f} s  {key}")
    if len(ranked) > top:
        print(f"  {side:5s} {sum(s for _, s in ranked[top:]):9.3f} s  {len(ranked) - top} other components")
    print(f"  {side:5s} {total:9.3f} s  TOTAL")


def main(argv: list[str] | None = None) -> None:
    """Print both sides' component timings (one run each) and the observed discrepancies."""
    import argparse

    parser = argparse.ArgumentParser(prog="python benchmarks/bench_svr.py", description=main.__doc__)
    parser.add_argument(
        "--pair", default="svr_vgg19_features", choices=["svr_vgg19", "svr_vgg19_top128", "svr_vgg19_features"]
    )
    parser.add_argument("--size", default="small", choices=list(_SIZES))
    parser.add_argument("--skip-reference", action="store_true", help="time ours only")
    parser.add_argument("--top", type=int, default=8, help="components listed per side (the rest summed)")
    args = parser.parse_args(argv)
    model, k, desc = vgg_model(args.size)
    layers = ["features.*"] if args.pair == "svr_vgg19_features" else None
    k_used = k if args.pair == "svr_vgg19_top128" else None
    print(f"{args.pair} [{args.size}]: {desc}, k={k_used}")
    t0 = time.perf_counter()
    ours, secs = _ours_breakdown(model, layers, k_used)
    total_ours = time.perf_counter() - t0
    _print_components("ours", secs, total_ours, args.top)
    if args.skip_reference:
        return
    t0 = time.perf_counter()
    ref = numpy_reference_svr(reference_weights(model, layers), k_used)
    total_ref = time.perf_counter() - t0
    _print_components("ref", ref.seconds, total_ref, args.top)
    print(f"  ratio ref/ours {total_ref / total_ours:.2f}x (one run each, first calls included: not a measurement)")
    agree = agree_top if k_used else agree_full
    print(f"  agreement: {agree(ours, ref) or 'agree'}")
    for key, val in discrepancies(ours, ref, min(TOP_BLOCK, k_used or TOP_BLOCK)).items():
        print(f"  {key}: {val}")
