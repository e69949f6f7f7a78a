"""Hessian rank bounds of deep linear CNNs (Singh, Hofmann & Schölkopf, ICML 2023), with derived end blocks.

The network (:mod:`suite.models.cnn_fc`) is ``F(x) = T^{L+1} T^L ... T^1 x``: ``L`` bias-free convolutions,
written as Toeplitz matrices ``T^l`` of shape ``(m_l d_l, m_{l-1} d_{l-1})`` (Singh et al. 2023, Sec. 3,
"Toeplitz framework"), and a dense head ``T^{L+1} = W^{L+1}`` of shape ``(K, m_L d_L)``. ``d_l`` is the
number of spatial positions after layer ``l`` (``H_l W_l`` in 2-D), ``k_l`` the number of kernel taps
(``k^2`` in 2-D); conv ``l`` has ``p_l = m_l m_{l-1} k_l`` parameters, the head ``p_{L+1} = K m_L d_L``.

**Effective sizes** (derived here; they equal ``d_l`` for stride 1 with ``pad_l <= k_l - 1``, which
includes the slides' setting). With stride and padding some positions carry nothing: a position whose window covers
only zero padding (or dead positions) is identically zero ("dead"), and a position that no window of a
later layer reads (stride > kernel, or a remainder that ``floor`` drops) never reaches the output. With
``R_l`` the coordinate projection onto the positions of layer ``l`` that are neither,
``F = W^{L+1} R_L T^L R_{L-1} ... R_1 T^1 R_0`` identically in the weights, so every argument below
runs through the subspaces of dimension ``M_l = m_l c_l``, ``c_l`` the number of such positions
(``c_L`` counts live positions; ``c_0`` the input positions that can reach the output).

Quantities (``r = rank(X^T X)`` data rank, ``s = rank(E[delta x^T])`` residual rank, ``delta = dl/dF``;
``K' = K - 1`` for cross-entropy, whose output Hessian ``diag(p) - p p^T`` has rank ``K - 1`` (Singh et al.
2021, Sec. 4), else ``K' = K``):

* ``r_c = min(r, m_0 c_0)``; ``q_o = min(r_c, M_1, ..., M_L, K')``.
* ``rank(H_o) <= min(p, q_o (r_c + K' - q_o), sum_{l=1}^{L+1} min(p_l, a_l b_l))`` with
  ``a_l = min(K', M_l, ..., M_L)`` and ``b_l = min(r_c, M_1, ..., M_{l-1})``: Thm 1 of the slides,
  ``min(p, q_o (d_0 + K - q_o))`` with ``q_o = min(d_0, m_l d_l, K)``, with ``d_0 -> r_c``,
  ``m_l d_l -> M_l``, ``K -> K'``, and a per-layer cap (derived).
* ``q_f = min(q_o, s)``; column block ``l`` of ``H_f`` (rows: all parameters, columns: layer ``l``):

  - ``l = 2..L``:   ``min(q_f M_{l-1} + q_f M_l - q_f^2, p_l, p - p_l)``  (Thm 2 with ``m_l d_l -> M_l``)
  - ``l = 1``:      ``min(q_f s + q_f M_1 - q_f^2, p_1, p - p_1)``         (derived)
  - ``l = L + 1``:  ``min(q_f M_L + q_f s - q_f^2, p_{L+1}, p - p_{L+1})`` (derived)

* ``rank(H_f) <= min(p, sum_l block_l)`` (Thm 2, eq. 1); ``rank(H_L) <= min(p, bound(H_o) + bound(H_f))``
  (subadditivity of the rank; slides, "Rank of the loss Hessian").

Why ``r`` replaces ``d_0`` in ``H_o``. For MSE, ``rank(H_o)`` is the dimension of
``{dA X^T : dtheta}``, ``A = T^{L+1:1}`` the ``K x d_0`` end-to-end map; every ``dA`` is a sum of
``T^{L+1:l+1} dT^l T^{l-1:1}`` and so lies in ``C ⊗ R^{d_0} + R^K ⊗ R`` with ``C = col(T^{L+1:2})``
(``dim a <= min(K, M_l)``) and ``R = row(T^{L:1})`` (the proof of Thm 1). Multiplying by ``X^T`` keeps
``span(X)`` (dimension ``r``) of the row side: the dimension is at most ``a r + b (K - a)`` with
``b = dim(R P_X) <= min(r, M_l)``, increasing in ``a`` and ``b``, and equal to ``q_o (r + K - q_o)`` at their
largest values. Cross-entropy multiplies ``J_i`` by ``G_i^{1/2}``, whose kernel always holds the all-ones
vector: ``K -> K'``. Per layer, the ``p_l`` columns of ``[G_i^{1/2} J_i]_i`` of layer ``l`` map into
``1^⊥ C_l ⊗ R_l`` (``C_l = col(T^{L+1:l+1})``, ``R_l = row(T^{l-1:1} X^T)``, dimensions at most ``a_l`` and
``b_l``), and the rank of a matrix is at most the sum of the ranks of its column blocks.

Why these end blocks. Block ``l`` maps ``dT^l`` to the gradients of
``tr(Omega^T T^{L+1:k+1} dT^k T^{k-1:l+1} dT^l T^{l-1:1})`` with respect to every other ``T^k``
(``Omega = E[delta x^T]``, ``K x d_0``, rank ``s``). For ``l = 1``, ``dT^1`` enters only through
``Y = dT^1 Omega^T`` (``M_1 x K``, rows in ``row(Omega^T)``): a space of dimension ``s M_1``. Through any
hidden space ``M_j`` every ``Y = v u^T`` with ``u in range(Omega) ∩ ker((T^{L+1:j+1})^T)`` and
``v in ker(T^{j:2})`` is in the kernel, which leaves ``s M_1 - (s - q)(M_1 - q) = q s + q M_1 - q^2`` with
``q = min(s, M_1, ..., M_L)`` (``s`` and ``Omega`` taken on the used input positions, whose rank is at most
``min(s, r_c)``: so ``q <= q_f``, and ``q s + q M_1 - q^2`` grows with ``q <= min(s, M_1)`` and with ``s``).
This is the FCN block of layer 1 (Singh et al. 2021, proof of Thm 4,
``rank(H_f) = 2q sum M_l + 2qs - L q^2`` split into block columns ``q M_{l-1} + q M_l - q^2``) with its
input side replaced by ``s``; the head is the mirror image (``Z = (dT^{L+1})^T Omega``) with its output
side replaced by ``s``. Toeplitz columns are a linear restriction of dense ones (a rank can only drop):
hence the cap ``p_l`` (columns). ``F`` is linear in each layer's parameters, so the diagonal block of
``H_f`` vanishes and a block column has at most ``p - p_l`` non-zero rows. All bounds were checked
against exact float64 Hessians of random 1-D and 2-D linear CNNs (``tests/test_hessian_cnn.py``).

Equality (:func:`outer_rank_is_exact`): when every conv is generically injective -- stride 1,
``2 pad_l >= k_l - 1`` (so ``d_l >= d_{l-1}``) and ``m_l >= m_{l-1}`` -- the head alone spans
``1^⊥ ⊗ span(h_i)`` with ``rank(h) = r``, so ``rank(H_o) = K' r = q_o (r + K' - q_o)`` for any data.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING, Any

from suite.errors import MetricError
from suite.theory.registry import Prediction, register_theory

if TYPE_CHECKING:
    from suite.spec.expand import Case

__all__ = [
    "ConvGeometry",
    "LinearCNNBounds",
    "conv_geometry",
    "conv_output_size",
    "linear_cnn_bounds",
    "linear_cnn_hessian_bounds",
    "linear_cnn_outer_rank",
    "outer_rank_is_exact",
    "per_layer",
]

CITATION = (
    "Singh, Hofmann & Schölkopf, The Hessian perspective into the nature of convolutional neural networks, "
    "ICML 2023: Thm 1 (outer-product Hessian), Thm 2 (functional Hessian column blocks); first and last "
    "blocks, d_0 -> r and effective sizes derived in suite/theory/hessian_cnn.py"
)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Positions along one axis after a convolution: ``floor((size + 2 padding - kernel) / stride) + 1``.

    The slides' ``d_l = (d_{l-1} - k_l + 2 pad_l) / stride_l + 1`` (Singh et al. 2023, "Summary"), rounded
    down as ``torch.nn.Conv1d``/``Conv2d`` do. May be ``<= 0`` when the kernel does not fit.
    """
    return (size + 2 * padding - kernel) // stride + 1


def _axis_effective(size: int, kernels: list[int], strides: list[int], paddings: list[int]) -> list[int]:
    """Count, along one axis and per layer ``0..L``, the positions that are live and used.

    Live: some window reaches a live position of the layer before (layer 0: all). Used: read by a used
    position of the next layer (layer ``L``: every live position, the head reads them all).
    """
    sizes = [size]
    live = [set(range(size))]
    for k, st, pad in zip(kernels, strides, paddings):
        n_out = conv_output_size(sizes[-1], k, st, pad)
        live.append({j for j in range(n_out) if any(st * j - pad + t in live[-1] for t in range(k))})
        sizes.append(n_out)
    used = [set()] * len(sizes)
    used[-1] = live[-1]
    for layer in range(len(kernels), 0, -1):
        k, st, pad = kernels[layer - 1], strides[layer - 1], paddings[layer - 1]
        read = {st * j - pad + t for j in used[layer] for t in range(k)}
        used[layer - 1] = live[layer - 1] & read
    return [len(u) for u in used]


@dataclass(frozen=True)
class ConvGeometry:
    """Per-layer sizes of a CNN, layer 0 (the input) first.

    ``shapes[l]``: spatial shape after layer ``l`` (``[d]`` or ``[H, W]``); ``sizes[l] = d_l`` its number of
    positions; ``effective[l] = c_l`` the positions that are live and reach the output (module doc);
    ``channels[l] = m_l``; ``taps[l - 1] = k_l``, kernel taps of conv ``l`` (``k`` or ``k^2``).
    """

    shapes: list[list[int]]
    sizes: list[int]
    effective: list[int]
    channels: list[int]
    taps: list[int]

    @property
    def conv_params(self) -> list[int]:
        """``p_l = m_l m_{l-1} k_l`` for ``l = 1..L`` (no biases)."""
        m, k = self.channels, self.taps
        return [m[i] * m[i - 1] * k[i - 1] for i in range(1, len(m))]

    @property
    def features(self) -> int:
        """``m_L d_L``, the flattened input size of the head."""
        return self.channels[-1] * self.sizes[-1]


def conv_geometry(
    input_size: list[int],
    in_channels: int,
    channels: list[int],
    kernels: list[int],
    strides: list[int],
    paddings: list[int],
) -> ConvGeometry:
    """Spatial shapes, sizes and effective sizes of ``L = len(channels)`` convs with square kernels.

    Every axis of ``input_size`` (``[d_0]`` or ``[H, W]``) is mapped by :func:`conv_output_size`; in 2-D the
    live and used positions are products of those of each axis. Raises ``ValueError`` naming the layer
    when a size is not positive.
    """
    if not (len(channels) == len(kernels) == len(strides) == len(paddings)):
        raise ValueError(
            f"one kernel, stride and padding per layer: {len(channels)} channels, {len(kernels)} kernels, "
            f"{len(strides)} strides, {len(paddings)} paddings"
        )
    shapes = [list(input_size)]
    for i, (k, st, pad) in enumerate(zip(kernels, strides, paddings), start=1):
        new = [conv_output_size(size, k, st, pad) for size in shapes[-1]]
        if any(n < 1 for n in new):
            raise ValueError(
                f"conv layer {i} (kernel {k}, stride {st}, padding {pad}) maps spatial size {shapes[-1]} to {new}: "
                "every size must stay >= 1 (use a smaller kernel, a smaller stride or more padding)"
            )
        shapes.append(new)
    per_axis = [_axis_effective(size, kernels, strides, paddings) for size in input_size]
    effective = [prod(axis[i] for axis in per_axis) for i in range(len(shapes))]
    taps = [k ** len(input_size) for k in kernels]
    return ConvGeometry(shapes, [prod(s) for s in shapes], effective, [in_channels, *channels], taps)


@dataclass(frozen=True)
class LinearCNNBounds:
    """Bounds on ``rank(H_o)``, ``rank(H_f)``, ``rank(H_L)`` of a deep linear CNN and their ingredients.

    ``widths[l - 1] = M_l = m_l c_l`` (``l = 1..L``); ``blocks[l - 1]`` bounds column block ``l`` of ``H_f``
    (``l = 1..L+1``, the head last); ``blocks_paper`` and ``outer_paper`` are the slides' forms with the
    derived end blocks (``d_l`` in place of ``c_l``, ``d_0`` in place of ``r``, caps ``p_l`` and ``p``).
    """

    r: int
    r_c: int
    s: int
    k_eff: int
    q_o: int
    q_f: int
    p: int
    geometry: ConvGeometry
    widths: list[int]
    outer: int
    outer_paper: int
    blocks: list[int]
    blocks_paper: list[int]
    functional: int
    loss: int


def _blocks(q: int, s: int, widths: list[int], params: list[int], p: int, row_cap: bool) -> list[int]:
    """``min(q A + q B - q^2, p_l[, p - p_l])`` per block, ``(A, B) = (s, M_1), (M_1, M_2), ..., (M_L, s)``."""
    sides = [s, *widths, s]
    out = []
    for i, p_l in enumerate(params):
        caps = [p_l, p - p_l] if row_cap else [p_l]
        out.append(min(q * sides[i] + q * sides[i + 1] - q * q, *caps))
    return out


def _jacobian_blocks(r_c: int, widths: list[int], k_eff: int, params: list[int]) -> list[int]:
    """``min(p_l, a_l b_l)`` per layer ``l = 1..L+1``.

    ``a_l = min(K', M_l, ..., M_L)`` and ``b_l = min(r_c, M_1, ..., M_{l-1})`` bound the column and row
    spaces that layer ``l``'s Jacobian columns map into (module doc).
    """
    out = []
    for i, p_l in enumerate(params):
        a = min([k_eff, *widths[i:]])
        b = min([r_c, *widths[:i]])
        out.append(min(p_l, a * b))
    return out


def linear_cnn_bounds(
    input_size: list[int],
    in_channels: int,
    channels: list[int],
    kernels: list[int],
    strides: list[int],
    paddings: list[int],
    num_outputs: int,
    data_rank: int,
    residual_rank: int,
    loss: str = "mse",
) -> LinearCNNBounds:
    """Upper bounds on the Hessian ranks of a bias-free linear CNN with a dense head (formulas: module doc).

    Args:
        input_size: ``[d_0]`` (1-D) or ``[H, W]`` (2-D).
        in_channels: ``m_0``.
        channels: ``m_l``, filters of conv ``l = 1..L``.
        kernels: kernel side of conv ``l`` (``k`` taps in 1-D, ``k^2`` in 2-D).
        strides: stride of conv ``l``.
        paddings: zero padding of conv ``l`` on each side.
        num_outputs: ``K``, outputs of the dense head.
        data_rank: ``r = rank(X^T X)`` of the flattened inputs.
        residual_rank: ``s = rank(E[delta x^T])``, ``delta = dl/dF``.
        loss: ``mse`` or ``cross_entropy`` (``K -> K - 1`` in ``q_o`` and ``H_o``).

    Returns:
        :class:`LinearCNNBounds`: ``outer = min(p, q_o (r_c + K' - q_o), sum_l min(p_l, a_l b_l))``, the
        block bounds, ``functional = min(p, sum blocks)`` and ``loss = min(p, outer + functional)``.

    Raises:
        ValueError: an unknown loss, no conv layer, or a layer whose output would be empty.
    """
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss must be mse or cross_entropy; got {loss!r}")
    if not channels:
        raise ValueError("a linear CNN needs at least one conv layer")
    geo = conv_geometry(input_size, in_channels, channels, kernels, strides, paddings)
    k_eff = num_outputs - 1 if loss == "cross_entropy" else num_outputs
    widths = [m * c for m, c in zip(geo.channels[1:], geo.effective[1:])]  # M_l = m_l c_l, l = 1..L
    params = [*geo.conv_params, num_outputs * geo.features]
    p = sum(params)
    r, s = data_rank, residual_rank
    r_c = min(r, in_channels * geo.effective[0])
    q_o = max(0, min([r_c, *widths, k_eff]))
    q_f = min(q_o, s)
    outer = min(p, q_o * (r_c + k_eff - q_o), sum(_jacobian_blocks(r_c, widths, k_eff, params)))
    # the slides' Thm 1 verbatim (d_0 and m_l d_l), with K -> K' for cross-entropy
    d0 = in_channels * geo.sizes[0]
    paper_widths = [m * d for m, d in zip(geo.channels[1:], geo.sizes[1:])]
    q_paper = max(0, min([d0, *paper_widths, k_eff]))
    outer_paper = min(p, q_paper * (d0 + k_eff - q_paper))
    blocks = _blocks(q_f, s, widths, params, p, row_cap=True)
    blocks_paper = _blocks(min(q_paper, s), s, paper_widths, params, p, row_cap=False)
    functional = min(p, sum(blocks))
    return LinearCNNBounds(
        r=r, r_c=r_c, s=s, k_eff=k_eff, q_o=q_o, q_f=q_f, p=p, geometry=geo, widths=widths,
        outer=outer, outer_paper=outer_paper, blocks=blocks, blocks_paper=blocks_paper,
        functional=functional, loss=min(p, outer + functional),
    )


def outer_rank_is_exact(
    strides: list[int], kernels: list[int], paddings: list[int], channels_with_input: list[int]
) -> bool:
    """Whether ``rank(H_o) = K' r`` holds for generic weights and any data (module doc, "Equality").

    True when every conv has stride 1, ``2 pad_l >= k_l - 1`` (no spatial shrinking) and ``m_l >= m_{l-1}``
    (``channels_with_input = [m_0, m_1, ..., m_L]``): each Toeplitz map is then generically injective (a
    single tap with an injective channel matrix already is), so the head features ``h_i = T^{L:1} x_i`` have
    rank ``r`` and the head's Jacobian alone reaches the bound ``q_o (r + K' - q_o) = K' r``.
    """
    non_shrinking = all(st == 1 and 2 * pad >= k - 1 for st, k, pad in zip(strides, kernels, paddings))
    widening = all(b >= a for a, b in zip(channels_with_input[:-1], channels_with_input[1:]))
    return non_shrinking and widening


def per_layer(value: list[int] | int, n: int) -> list[int]:
    """Expand a per-layer setting (one int for all ``n`` layers, or a list) to a list of ``n`` ints."""
    return list(value) if isinstance(value, list) else [value] * n


def _linear_cnn(case: Case, values: dict[str, Any], theory: str) -> tuple[LinearCNNBounds, dict[str, Any]]:
    """Bounds for a case's ``cnn_fc`` model, checked to be linear, with the report's details."""
    model = case.model
    name = getattr(model, "name", None)
    needs = f"{theory} needs a builtin cnn_fc with activation identity and bias false (a deep linear CNN)"
    if name != "cnn_fc":
        raise MetricError(f"{needs}; case {case.id} has {getattr(model, 'source', '?')} model {name or '?'}")
    if model.activation != "identity" or model.bias:
        raise MetricError(f"{needs}; case {case.id} has activation {model.activation}, bias {model.bias}")
    for key in ("data_rank", "residual_rank", "n_params"):
        if key not in values:
            raise MetricError(f"{theory} needs the hessian_rank values {key!r}; have {sorted(values)}")
    n = len(model.channels)
    kernels, strides, paddings = (per_layer(v, n) for v in (model.kernel_sizes, model.strides, model.paddings))
    loss = case.metric.params.loss
    bounds = linear_cnn_bounds(
        list(model.input_size), model.in_channels, list(model.channels), kernels, strides, paddings,
        model.num_outputs, int(values["data_rank"]), int(values["residual_rank"]), loss,
    )
    if bounds.p != int(values["n_params"]):
        raise MetricError(f"{theory}: the formula counts p = {bounds.p} parameters, the net has {values['n_params']}")
    geo = bounds.geometry
    details = {
        "loss": loss, "r": bounds.r, "r_c": bounds.r_c, "s": bounds.s, "K'": bounds.k_eff, "q_o": bounds.q_o,
        "q_f": bounds.q_f, "p": bounds.p, "d_l": geo.sizes, "c_l (effective d_l)": geo.effective,
        "m_l": geo.channels, "k_l": geo.taps, "M_l = m_l c_l": bounds.widths,
        "block bounds (l = 1..L+1)": bounds.blocks, "block bounds, paper form": bounds.blocks_paper,
        "H_o bound, paper form": bounds.outer_paper,
    }
    return bounds, details


@register_theory(CITATION)
def linear_cnn_hessian_bounds(case: Case, values: dict[str, Any]) -> Prediction:
    """``[bound rank H_o, bound rank H_f, bound rank H_L]`` of a deep linear CNN (:func:`linear_cnn_bounds`).

    Applies to ``source: builtin, name: cnn_fc`` with ``activation: identity`` and ``bias: false`` under
    the ``hessian_rank`` metric, whose values hold ``data_rank`` r, ``residual_rank`` s and ``n_params``;
    check it with ``relation: bound``. The details carry every intermediate quantity.
    """
    bounds, details = _linear_cnn(case, values, "linear_cnn_hessian_bounds")
    return Prediction([bounds.outer, bounds.functional, bounds.loss], details)


@register_theory(CITATION)
def linear_cnn_outer_rank(case: Case, values: dict[str, Any]) -> Prediction:
    """``rank(H_o) = K' r`` exactly, for linear ``cnn_fc`` nets in the class of :func:`outer_rank_is_exact`.

    Check with ``relation: equal`` on key ``rank_outer``. Refuses (``MetricError``) nets outside the class:
    a stride above 1, a shrinking layer (``2 pad_l < k_l - 1``) or fewer channels than the layer before,
    where the bound of ``linear_cnn_hessian_bounds`` need not be attained.
    """
    bounds, details = _linear_cnn(case, values, "linear_cnn_outer_rank")
    model = case.model
    n = len(model.channels)
    kernels, strides, paddings = (per_layer(v, n) for v in (model.kernel_sizes, model.strides, model.paddings))
    if not outer_rank_is_exact(strides, kernels, paddings, [model.in_channels, *model.channels]):
        raise MetricError(
            "linear_cnn_outer_rank holds only for stride 1, 2 padding >= kernel - 1 and non-decreasing channels "
            f"(m_0 = in_channels first); case {case.id} has strides {strides}, kernels {kernels}, "
            f"paddings {paddings}, channels {[model.in_channels, *model.channels]}: check it with "
            "linear_cnn_hessian_bounds (relation: bound)"
        )
    exact = bounds.k_eff * bounds.r
    return Prediction(exact, {**details, "rank H_o = K' r": exact})
