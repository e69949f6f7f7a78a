"""Numerical rank of a symmetric operator known only through products with blocks of vectors.

Algorithm: the adaptive randomised range finder of Halko, Martinsson & Tropp (2011, SIAM Review 53(2),
Alg. 4.2, in its block form) followed by a Rayleigh-Ritz step (HMT Alg. 5.3, direct eigenvalue
decomposition), in float64:

1. Draw a block ``Omega`` of ``b`` standard Gaussian vectors (seeded), form ``Y = H Omega`` and orthogonalise
   it against the basis ``Q`` so far with block classical Gram-Schmidt run twice ("twice is enough",
   Giraud et al. 2005), then Householder QR; ``Q <- [Q, Q_b]`` (``n x k``, orthonormal).
2. Form ``Z_b = H Q_b`` and grow the projected matrix ``T = Q^T H Q`` (``k x k``) by the block column
   ``Q^T Z_b``; ``T`` is exact Rayleigh-Ritz data for ``span(Q)``, whatever the history of ``Q``.
3. At check points, the Ritz values ``theta = eigvalsh(T)`` give ``|theta|`` in place of singular values;
   ``sigma_1 ~ max |theta|`` and the threshold follow the dense rule
   (:func:`suite.linalg.rank.rank_from_singular_values` with the shape ``(n, n)``: numpy
   ``sigma_1 n eps(float64)``, feng ``eps_base n sigma_1``, explicit ``max(atol, rtol sigma_1)``; ``scale``
   replaces ``sigma_1`` by ``max(sigma_1, scale)`` as for ``H_f`` in ``hessian_rank``).
4. Stop when ``k - rank >= oversample`` (the sketch holds ``oversample`` directions beyond the counted
   rank) at two consecutive checks one fresh block apart with the same rank, or when ``k = n`` (then ``Q`` is a basis of ``R^n``, ``T`` is similar to ``H`` and the Ritz values
   are its eigenvalues: the dense answer).

Check points (where ``eigvalsh(T)``, ``O(k^3)``, is paid): when at least ``min(oversample, b)`` columns of
the fresh block brought nothing above the threshold estimate, i.e. ``|R_jj| <= threshold * ||omega_j||`` in
the QR of the block's residual ``(I - QQ^T) H Omega`` (the range is captured: by HMT Sec. 4.3,
``||(I - QQ^T) H|| <= 10 sqrt(2/pi) max_j ||(I - QQ^T) H omega_j||`` with probability ``1 - 10^-b``), when
``k`` has grown by the factor ``growth`` since the last check, and at ``k = n`` or ``max_sketch``. The
threshold estimate between checks uses ``max ||H q_j||`` over the basis vectors, a lower bound on ``sigma_1``.

Why the Ritz values resolve the threshold. The Hessians ranked here have exact low rank ``r`` (Singh et al.
2021: ``r << p`` for deep linear nets), ``H = U Lambda U^T`` with ``U`` ``(n, r)``, and their products are
computed to rounding, ``H^ v = H v + e(v)`` with ``||e(v)|| <= c eps ||H|| ||v||``, ``c`` a modest constant.
With ``S = Q^T U`` (``k x r``), ``T = S Lambda S^T``; its non-zero eigenvalues are those of
``(S^T S)^{1/2} Lambda (S^T S)^{1/2}``, which by Ostrowski's theorem (Horn & Johnson, Matrix Analysis,
Thm. 4.5.9) are ``lambda_j c_j`` with ``c_j`` in ``[cos^2 phi_max, 1]``, ``phi`` the principal angles between
``range(H)`` and ``span(Q)``; the other ``k - r`` are zeros. So once ``span(Q)`` nearly contains ``range(H)``
(``r`` Gaussian images span it with probability one; rounding tilts it by angles ``~ eps ||H|| / lambda_j``),
every non-zero eigenvalue is reproduced to relative accuracy, however small, and the zeros stay zeros;
rounding (``e``, the orthogonality of ``Q``, ``eigvalsh``) adds ``O(eps ||H||)`` to each (Weyl). The numpy
threshold ``sigma_1 n eps`` sits a factor ``~n / c`` above that rounding floor: the zeros fall below it,
and every eigenvalue that the dense ``eigvalsh`` (itself accurate to ``O(eps ||H||)``) puts above it is above
it here too, so the two ranks agree unless an eigenvalue lies within rounding of the threshold. Before the
range is captured, ``T`` is a compression of ``H`` and Cauchy interlacing bounds its ``j``-th largest
(smallest) eigenvalue by that of ``H``: the Ritz count on each side of ``+-threshold`` never exceeds the true
count and does not decrease as ``k`` grows, so the estimate approaches the rank from below. The stop rule
asks for ``oversample`` directions to spare, the oversampling for which HMT (Sec. 10) bound the range
error by a small multiple of the tail ``sigma_{r+1}``, here the rounding floor. Spare directions alone
are no proof that the range is captured: for an indefinite operator, a basis that holds only part of an
eigenspace with eigenvalues of both signs just above the threshold has Ritz values near zero there (a
Rayleigh quotient mixes the signs), which pass for spare directions. So the count must also survive one
more fresh Gaussian block: the images of ``b`` new vectors, projected off the basis, span a random part of
whatever was missed, and the compression of ``H`` to them has Ritz values spread over the missed
eigenvalues' range, so the count rises (the test ``test_sketch_is_not_fooled_by_mixed_signs`` plants 200
eigenvalues at ``+-3`` thresholds beside 40 at ``+-1``: without the extra block the sketch stopped at 50).
This is a heuristic check, not a certificate; the a-posteriori bound of HMT Sec. 4.3 would certify the
range to ``||(I - QQ^T) H|| <= threshold`` but sits ``~sqrt(n)`` above the rounding floor of the residual,
so it would grow most sketches to ``k = n``.

Costs: ``2k`` operator applications, ``~5 n k^2`` flops of orthogonalisation and Rayleigh-Ritz block
columns, ``eigvalsh`` of ``k x k`` at each check point; memory ``n k`` for ``Q``. The basis is built from
images ``H Omega`` of fresh Gaussian blocks rather than a Krylov sequence, so eigenvalues of any
multiplicity are found (block Lanczos finds at most ``b`` copies of a repeated eigenvalue).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from suite.linalg.rank import NumpyRule, RankRule, rank_from_singular_values, rank_threshold

__all__ = ["SketchRank", "sketch_rank"]



@dataclass(frozen=True)
class SketchRank:
    """The numerical rank of a symmetric ``n x n`` operator from a randomised sketch, and how it was reached.

    Attributes:
        rank: number of Ritz values with ``|theta| > threshold``.
        threshold: the absolute threshold of the rule at ``max(sigma_max, scale)`` and shape ``(n, n)``.
        sigma_max: ``max |theta|``, the estimate of ``sigma_1`` (exact once the range is captured).
        gap: ``|theta|_r / |theta|_{r+1}`` (Ritz values in descending modulus), ``None`` when ``r = 0`` or
            ``r = k``; ``inf`` when ``|theta|_{r+1} = 0``.
        sketch_size: ``k``, the number of basis vectors in the end.
        matvecs: operator applications (vectors), ``2k``.
        n: the operator's size.
        exact: the sketch reached ``n``, so the Ritz values are the eigenvalues.
        converged: the stop rule held (or ``exact``); ``False`` when ``max_sketch`` ended the growth first.
        residual: ``max_i ||(I - QQ^T) H omega_i|| / ||omega_i||`` for the last fresh Gaussian block, against
            the basis before that block joined it (0 for the first block, which has no basis to miss); at most
            ``||(I - QQ^T) H||`` and, with probability ``1 - 10^-b``, at least
            ``||(I - QQ^T) H|| / (10 sqrt(2 n / pi))`` (HMT Sec. 4.3, with ``||omega_i|| ~ sqrt(n)``).
        checks: how many Rayleigh-Ritz solves were done.
        ritz: ``|theta|`` descending, float64 ``(k,)``.
    """

    rank: int
    threshold: float
    sigma_max: float
    gap: float | None
    sketch_size: int
    matvecs: int
    n: int
    exact: bool
    converged: bool
    residual: float
    checks: int
    ritz: torch.Tensor


def _orthonormal_block(rows: torch.Tensor, block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Orthonormal ``(n, b)`` block spanning ``(I - QQ^T) block`` (completed arbitrarily where that is numerically
    rank deficient) and orthogonal to ``Q``, given as its rows ``rows = Q^T`` ``(k, n)``; also returns the
    residual ``(I - QQ^T) block`` ``(n, b)`` and ``|R_jj|`` ``(b,)`` of its QR: the part of column ``j`` new
    beyond ``Q`` and the block's earlier columns.

    Block classical Gram-Schmidt twice ("twice is enough"), then Householder QR. When the residual is
    rounding noise (the range is already captured) or rank deficient, the Householder columns need not be
    orthogonal to ``Q``: such blocks (``min |R_jj| < 1e-6 max |R_jj|`` in the QR) are projected and
    re-orthonormalised until they are (any orthonormal completion serves Rayleigh-Ritz).
    """
    resid = block
    for _ in range(2):
        resid = resid - rows.mT @ (rows @ resid)
    q, r = torch.linalg.qr(resid)
    diag = r.diagonal().abs()
    if rows.shape[0] == 0 or float(diag.min()) >= 1e-6 * float(diag.max()):
        return q, resid, diag
    for _ in range(3):
        for _ in range(2):
            q = q - rows.mT @ (rows @ q)
        q = torch.linalg.qr(q).Q
        if float((rows @ q).abs().max()) <= 1e-13:
            break
    return q, resid, diag


class _Growing:
    """Rows of ``Q^T`` ``(k, n)`` and the projected matrix ``T`` ``(k, k)`` in buffers that grow by half their
    size when full (no copy of ``Q`` per block), up to ``limit`` rows."""

    def __init__(self, n: int, limit: int, start: int, device: torch.device | str) -> None:
        self.n, self.limit, self.k = n, limit, 0
        cap = min(limit, start)
        self.rows = torch.empty(cap, n, dtype=torch.float64, device=device)
        self.proj = torch.empty(cap, cap, dtype=torch.float64, device=device)

    def _reserve(self, size: int) -> None:
        cap = self.rows.shape[0]
        if size <= cap:
            return
        new = min(self.limit, max(size, cap + cap // 2))
        rows = self.rows.new_empty(new, self.n)
        rows[: self.k] = self.rows[: self.k]
        proj = self.proj.new_empty(new, new)
        proj[: self.k, : self.k] = self.proj[: self.k, : self.k]
        self.rows, self.proj = rows, proj

    def basis_rows(self) -> torch.Tensor:
        return self.rows[: self.k]

    def append(self, q_new: torch.Tensor, z_new: torch.Tensor) -> None:
        """Add the block ``Q_b`` ``(n, b)`` with ``Z_b = H Q_b``: ``T[:, new] = Q^T Z_b``, ``T[new, :]`` its
        transpose."""
        k, b = self.k, q_new.shape[1]
        self._reserve(k + b)
        self.rows[k : k + b] = q_new.mT
        cross = self.rows[: k + b] @ z_new  # (k + b, b)
        corner = cross[k:]
        self.proj[:k, k : k + b] = cross[:k]
        self.proj[k : k + b, :k] = cross[:k].mT
        self.proj[k : k + b, k : k + b] = 0.5 * (corner + corner.mT)
        self.k = k + b

    def ritz_values(self) -> torch.Tensor:
        return torch.linalg.eigvalsh(self.proj[: self.k, : self.k])


def sketch_rank(
    apply: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    rule: RankRule | None = None,
    *,
    scale: float | None = None,
    oversample: int = 10,
    block: int = 32,
    max_sketch: int | None = None,
    growth: float = 1.5,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> SketchRank:
    """Numerical rank of the symmetric operator ``apply`` (``(n, b) -> (n, b)``, float64) from a sketch.

    See the module docstring for the algorithm, the stop rule and why it agrees with the dense rank.

    Args:
        apply: ``V -> H V`` for ``V`` of shape ``(n, b)``, float64; ``H`` must be symmetric.
        n: size of ``H``.
        rule: rank rule (default ``numpy`` with the float64 epsilon, as ``hessian_rank``).
        scale: decide the threshold with ``max(sigma_1, scale)`` (for ``H_f``: ``sigma_1(H_L)``).
        oversample: stop once the sketch exceeds the counted rank by this many vectors.
        block: Gaussian vectors drawn per step.
        max_sketch: stop growing at this many vectors (default ``n``); the result then says
            ``converged=False`` unless the stop rule held.
        growth: a Rayleigh-Ritz check at least every time ``k`` grows by this factor.
        seed: seed of the Gaussian blocks.
        device: where the vectors live.

    Returns:
        :class:`SketchRank`.
    """
    if n < 1:
        raise ValueError(f"the operator needs n >= 1; got {n}")
    if block < 1 or oversample < 0 or growth <= 1.0:
        raise ValueError(f"need block >= 1, oversample >= 0 and growth > 1; got {block}, {oversample}, {growth}")
    rule = rule or NumpyRule()
    limit = n if max_sketch is None else max(1, min(n, max_sketch))
    gen = torch.Generator(device=device).manual_seed(seed)
    f64 = torch.float64
    sketch = _Growing(n, limit, start=max(8 * block, 512), device=device)
    matvecs = checks = next_check = 0
    tentative: int | None = None  # rank at a check where the spare-direction rule first held
    sigma_est = 0.0  # running lower bound on sigma_1: max ||H q|| over unit basis vectors
    while True:
        k = sketch.k
        b = min(block, limit - k)
        omega = torch.randn(n, b, dtype=f64, device=device, generator=gen)
        images = apply(omega)
        q_new, resid, new_part = _orthonormal_block(sketch.basis_rows(), images)
        norms = omega.norm(dim=0)
        residual = float((resid.norm(dim=0) / norms).max()) if k else 0.0
        z_new = apply(q_new)
        matvecs += 2 * b
        sigma_est = max(sigma_est, float(z_new.norm(dim=0).max()))
        sketch.append(q_new, z_new)
        k = sketch.k
        estimate = rank_threshold(max(sigma_est, scale or 0.0), (n, n), rule, f64)
        quiet = int((new_part <= estimate * norms).sum())  # columns that brought nothing above the threshold
        if not (k >= limit or k >= next_check or quiet >= max(1, min(oversample, b))):
            continue
        checks += 1
        ritz = sketch.ritz_values().abs().sort(descending=True).values
        res = rank_from_singular_values(ritz, (n, n), rule, f64, scale=scale)
        exact = k == n
        spare = k - res.rank >= oversample
        # a tentative stop must survive one more fresh block: on an indefinite operator, Ritz values of a
        # partly captured range can sit near zero although every eigenvalue is above the threshold
        converged = exact or (spare and tentative == res.rank)
        tentative = res.rank if spare else None
        if converged or k >= limit:
            return SketchRank(
                rank=res.rank,
                threshold=res.threshold,
                sigma_max=res.sigma_max,
                gap=res.gap,
                sketch_size=k,
                matvecs=matvecs,
                n=n,
                exact=exact,
                converged=converged,
                residual=residual,
                checks=checks,
                ritz=ritz.cpu(),
            )
        next_check = k if tentative is not None else max(k + block, math.ceil(growth * k))
