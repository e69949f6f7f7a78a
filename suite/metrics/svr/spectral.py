"""Spectral neurons, adjacency matrices and internal dimensions of the SVR (Meller & Berkouk).

Notation (paper Sec. 2.2, 4.2; ``../shared/REFERENCE.md`` section 2). A map's weight is held as
``W`` of shape ``(o, c, Z)`` (:mod:`suite.metrics.svr.maps`): ``o`` outputs, ``c`` input channels,
``Z`` kernel positions.

* **SVR flattening** (Sec. 4.2): ``W -> (o, c Z)``, ``A = U S V^T``; spectral neuron ``k`` is
  ``(U[:, k], S[k], V[:, k])`` with the input representation ``V[:, k]`` unflattened to a filter ``c x Z``.
* **co-SVR flattening** (Sec. 4.4): ``W -> (o Z, c)``; the output representation ``U[:, k]`` is a filter
  ``o x Z`` and the input representation a vector. Applies to conv maps; FC maps always use the SVR form.

Both are stored uniformly as ``u`` of shape ``(o, Z_u, M)`` and ``v`` of shape ``(c, Z_v, M)``.

* **Adjacency** between map ``i`` (spectral neurons ``m``) and map ``i+1`` (spectral neurons ``n``),
  which share a space of dimension ``c`` (Sec. 2.2 for FC, Sec. 4.2 for conv)::

      a[n, m] = sum_{z_u, z_v} ( sum_{k<=c} u_i[k, z_u, m] v_{i+1}[k, z_v, n] )^2

  For FC maps this is ``|V_{i+1}^T U_i|^2`` entrywise; for convs the squared Frobenius norm of the
  effective filter ``sum_k u_{k,m} V_{k,n}``. Entries lie in ``[0, 1]`` and are invariant to positive
  rescaling of the weights (Sec. 2.3). Rows index the next map, columns the previous one.
* **Internal dimensions** (Sec. 3.2, eq. 1): ``B[i, j] = sum_{k<=i, l<=j} a[k, l]`` and
  ``(d_out, d_in) = argmax_{i,j} (B[i, j] - i j / c)``, counted from 1 (the released code returns the
  0-based argmax: one less). ``d_in`` counts spectral neurons of the previous map (columns), ``d_out``
  those of the next map (rows).
* **Node colour intensity** (Sec. 3.2): ``max_i (sum_{k<=i} a[k, j] - i / c)`` for spectral neuron ``j``
  of the previous map, clipped at 0 and normalised by its maximum over the layer (footnote 9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from suite.metrics.svr.maps import SvrMap

__all__ = [
    "SpectralNeurons",
    "adjacency",
    "adjacency_of",
    "decompose",
    "factor_weight",
    "internal_dimensions",
    "node_intensity",
    "svd_factors",
]

Driver = Literal["auto", "svd", "gram"]
Flatten = Literal["svr", "co_svr"]

GRAM_MIN_DIM = 256  # auto: below this the LAPACK SVD is already fast
GRAM_MIN_RATIO = 1e-5  # gram only when sigma_min / sigma_max >= this (accuracy loss <= 1e5 * eps)


@dataclass(frozen=True)
class SpectralNeurons:
    """Spectral neurons of one map.

    Attributes:
        u: ``(o, Z_u, M)`` output representations (orthonormal columns after flattening).
        s: ``(M,)`` singular values, descending.
        v: ``(c, Z_v, M)`` input representations.
        method: ``"svd"`` or ``"gram"``, how the factors were computed.
    """

    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor
    method: str

    @property
    def n_neurons(self) -> int:
        return int(self.s.shape[0])


def _svd(matrix: torch.Tensor, k: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U (..., R, M), S (..., M), V (..., C, M)`` by LAPACK on the tall orientation (wide inputs are
    transposed); leading dimensions are a batch."""
    if matrix.shape[-2] >= matrix.shape[-1]:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        v = vh.mT
    else:
        v, s, uh = torch.linalg.svd(matrix.mT, full_matrices=False)
        u = uh.mT
    if k is not None:
        u, s, v = u[..., :k], s[..., :k], v[..., :k]
    return u, s, v


def _gram(matrix: torch.Tensor, k: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Factors from the eigendecomposition of the smaller Gram matrix, or ``None`` when ill-conditioned.

    For ``A`` of shape ``(R, C)`` with ``R <= C``: ``A A^T = U S^2 U^T`` and ``V = A^T U S^{-1}``
    (and symmetrically). The Gram matrix squares the condition number, so the vectors of singular value
    ``sigma_j`` lose a factor ``sigma_1 / sigma_j`` of accuracy against a direct SVD; the method is used
    only when every kept ``sigma_j >= GRAM_MIN_RATIO * sigma_1`` (at most 5 more lost digits in float64).
    """
    wide = matrix.shape[0] <= matrix.shape[1]
    a = matrix if wide else matrix.mT
    n = a.shape[0]
    gram = a @ a.mT
    if k is not None and k < n:
        import scipy.linalg

        evals, evecs = scipy.linalg.eigh(gram.numpy(), subset_by_index=[n - k, n - 1], driver="evr")
        evals, evecs = torch.from_numpy(evals), torch.from_numpy(evecs)
    else:
        evals, evecs = torch.linalg.eigh(gram)
    evals, evecs = evals.flip(0), evecs.flip(1)
    s = evals.clamp_min(0.0).sqrt()
    if s.numel() == 0 or s[0] == 0 or s[-1] < GRAM_MIN_RATIO * s[0]:
        return None
    other = (a.mT @ evecs) / s
    return (evecs, s, other) if wide else (other, s, evecs)


def svd_factors(
    matrix: torch.Tensor, driver: Driver = "auto", max_neurons: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """``U (..., R, M), S (..., M), V (..., C, M), method`` of a float64 matrix ``(..., R, C)``;
    ``M = min(R, C, max_neurons)``; leading dimensions are a batch (always decomposed by ``svd``).

    ``driver``: ``svd`` (LAPACK gesdd on the tall orientation), ``gram`` (eigendecomposition of the
    smaller Gram matrix, falling back to ``svd`` when ill-conditioned, see :func:`_gram`) or ``auto``
    (``gram`` for matrices whose smaller side is at least ``GRAM_MIN_DIM``).
    """
    if matrix.dtype != torch.float64:
        raise TypeError(f"svd_factors needs float64, got {matrix.dtype}")
    rows, cols = matrix.shape[-2:]
    k = None if max_neurons is None or max_neurons >= min(rows, cols) else max_neurons
    use_gram = driver == "gram" or (driver == "auto" and min(rows, cols) >= GRAM_MIN_DIM)
    if use_gram and matrix.ndim == 2:
        factors = _gram(matrix, k)
        if factors is not None:
            return (*factors, "gram")
    return (*_svd(matrix, k), "svd")


def factor_weight(
    w: torch.Tensor, kind: str, flatten: Flatten = "svr", driver: Driver = "auto", max_neurons: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """``u (..., o, Z_u, M)``, ``s (..., M)``, ``v (..., c, Z_v, M)`` and the method, for a weight
    ``(..., o, c, Z)`` under the SVR (or co-SVR, conv maps only) flattening; leading dimensions are a batch."""
    *batch, o, c, z = w.shape
    if flatten == "co_svr" and kind == "conv":
        u, s, v, how = svd_factors(w.transpose(-1, -2).reshape(*batch, o * z, c), driver, max_neurons)
        return u.reshape(*batch, o, z, -1), s, v.reshape(*batch, c, 1, -1), how
    u, s, v, how = svd_factors(w.reshape(*batch, o, c * z), driver, max_neurons)
    return u.reshape(*batch, o, 1, -1), s, v.reshape(*batch, c, z, -1), how


def decompose(m: SvrMap, flatten: Flatten = "svr", driver: Driver = "auto", max_neurons: int | None = None) -> SpectralNeurons:
    """Spectral neurons of one map under the SVR (or co-SVR, conv maps only) flattening."""
    return SpectralNeurons(*factor_weight(m.weight, m.kind, flatten, driver, max_neurons))


def adjacency_of(u: torch.Tensor, v: torch.Tensor, chunk_bytes: int = 1 << 28) -> torch.Tensor:
    """``a[..., n, m]`` from output representations ``u (..., c, Z_u, M)`` of the previous map and input
    representations ``v (..., c, Z_v, N)`` of the next one; shape ``(..., N, M)``, leading dims a batch.

    One matrix product ``V^T U`` over the shared dimension per chunk of next-map neurons (a chunk holds at
    most ``chunk_bytes`` of the intermediate ``(..., Z_v, n, Z_u, M)`` tensor), squared and summed over the
    kernel positions (module docstring).
    """
    *batch, c, zu, m = u.shape
    *_, c_next, zv, n = v.shape
    if c != c_next:
        raise ValueError(f"maps do not share a space: {c} outputs vs {c_next} inputs")
    b = math.prod(batch)
    uf = u.reshape(b, c, zu * m)
    vb = v.reshape(b, c, zv, n)
    step = max(1, min(n, chunk_bytes // max(b * zv * zu * m * 8, 1)))
    out = torch.empty((b, n, m), dtype=torch.float64)
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        vf = vb[..., n0:n1].reshape(b, c, zv * (n1 - n0))
        g = (vf.mT @ uf).reshape(b, zv, n1 - n0, zu, m)
        out[:, n0:n1] = g.square().sum(dim=(1, 3))
    return out.reshape(*batch, n, m)


def adjacency(prev: SpectralNeurons, nxt: SpectralNeurons, chunk_bytes: int = 1 << 28) -> torch.Tensor:
    """Adjacency ``a[n, m]`` between the spectral neurons of two consecutive maps, shape ``(M_next, M_prev)``."""
    return adjacency_of(prev.u, nxt.v, chunk_bytes)


def internal_dimensions(a: torch.Tensor, shared_dim: int) -> tuple[int, int, float]:
    """``(d_out, d_in, deviation)``: the argmax of ``B[i, j] - i j / c`` counted from 1 (Sec. 3.2, eq. 1).

    Args:
        a: adjacency ``(M_next, M_prev)``.
        shared_dim: ``c``, the dimension of the space the two maps share (null mean of a coefficient is
            ``1 / c``).

    Returns:
        ``d_out`` (rows, next map), ``d_in`` (columns, previous map), both in ``1..M``, and the maximal
        deviation ``B[d_out, d_in] - d_out d_in / c`` (the first maximum in row-major order on ties).
    """
    rows = torch.arange(1, a.shape[0] + 1, dtype=torch.float64)
    cols = torch.arange(1, a.shape[1] + 1, dtype=torch.float64)
    dev = a.cumsum(0).cumsum(1) - torch.outer(rows, cols) / shared_dim
    flat = int(torch.argmax(dev))
    i, j = divmod(flat, a.shape[1])
    return i + 1, j + 1, float(dev[i, j])


def node_intensity(a: torch.Tensor, shared_dim: int) -> torch.Tensor:
    """Colour intensity of every spectral neuron of the previous map (columns of ``a``), in ``[0, 1]``.

    ``max_i (sum_{k<=i} a[k, j] - i / c)`` clipped at 0, divided by its maximum over the layer (Sec. 3.2
    and footnote 9; all zeros when no neuron deviates).
    """
    steps = torch.arange(1, a.shape[0] + 1, dtype=torch.float64)[:, None] / shared_dim
    raw = (a.cumsum(0) - steps).max(dim=0).values.clamp_min(0.0)
    top = raw.max() if raw.numel() else torch.tensor(0.0)
    return raw / top if top > 0 else raw
