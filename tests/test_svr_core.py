"""SVR (Meller & Berkouk) core: maps, spectral neurons, adjacency, internal dimensions, significance.

Every quantity is checked against an independent dense float64 reference written here with numpy and
explicit loops from the paper's formulas (``../shared/REFERENCE.md`` section 2), never by calling the
code under test:

* FC adjacency ``a[n, m] = <V_{i+1}[:, n], U_i[:, m]>^2`` (Sec. 2.2);
* conv adjacency ``a[n, m] = sum_z (sum_k u_{k,m} v_{k,z,n})^2`` (Sec. 4.2), co-SVR (Sec. 4.4);
* internal dimensions ``argmax_{i,j} B[i,j] - i j / n`` counted from 1 (Sec. 3.2, eq. 1);
* node intensity ``max_i (sum_{k<=i} a[k,j] - i/n)`` clipped and normalised (Sec. 3.2, footnote 9);
* thresholds ``chi2.ppf(1 - p, Z) / (n Z)`` with ``p = 1 - Phi(sigma)`` (released code).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from scipy import special, stats
from torch import nn

from suite.metrics.svr.maps import svr_chain
from suite.metrics.svr.representation import SvrParams, compute_svr, svr_values
from suite.metrics.svr.significance import sigma_to_tail, threshold
from suite.metrics.svr.spectral import adjacency, decompose, internal_dimensions, node_intensity, svd_factors



pytestmark = pytest.mark.usefixtures("one_thread_module")


# ------------------------------------------------------------------------------------------ references


def np_svd(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``U (R, M), s (M,), V (C, M)`` of a float64 matrix by numpy (thin)."""
    u, s, vt = np.linalg.svd(np.asarray(mat, dtype=np.float64), full_matrices=False)
    return u, s, vt.T


def np_weight(module: nn.Module) -> np.ndarray:
    return module.weight.detach().to(torch.float64).numpy().copy()


def flatten_svr_loops(w: np.ndarray) -> tuple[np.ndarray, int]:
    """``(o, i, K...)`` -> ``F[o, k Z + z] = w[o, k, z]`` (SVR flattening, kernel positions row-major)."""
    o, c = w.shape[:2]
    ks = w.shape[2:]
    z_count = int(np.prod(ks)) if ks else 1
    f = np.zeros((o, c * z_count))
    for a in range(o):
        for k in range(c):
            for z, pos in enumerate(np.ndindex(*ks) if ks else [()]):
                f[a, k * z_count + z] = w[(a, k, *pos)]
    return f, z_count


def flatten_co_svr_loops(w: np.ndarray) -> tuple[np.ndarray, int]:
    """``(o, i, K...)`` -> ``G[a Z + z, k] = w[a, k, z]`` (co-SVR flattening, ``(o K^2) x i``)."""
    o, c = w.shape[:2]
    ks = w.shape[2:]
    z_count = int(np.prod(ks))
    g = np.zeros((o * z_count, c))
    for a in range(o):
        for k in range(c):
            for z, pos in enumerate(np.ndindex(*ks)):
                g[a * z_count + z, k] = w[(a, k, *pos)]
    return g, z_count


def adjacency_loops(u_prev: np.ndarray, zu: int, v_next: np.ndarray, zv: int, c: int) -> np.ndarray:
    """``a[n, m] = sum_{zu, zv} (sum_k U[k Zu + zu, m] V[k Zv + zv, n])^2`` with explicit loops."""
    m_prev, n_next = u_prev.shape[1], v_next.shape[1]
    a = np.zeros((n_next, m_prev))
    for n in range(n_next):
        for m in range(m_prev):
            total = 0.0
            for p in range(zu):
                for q in range(zv):
                    dot = 0.0
                    for k in range(c):
                        dot += u_prev[k * zu + p, m] * v_next[k * zv + q, n]
                    total += dot * dot
            a[n, m] = total
    return a


def internal_dims_loops(a: np.ndarray, n: int) -> tuple[int, int, float]:
    """Brute force over (i, j) in 1..M: ``B[i, j] = sum_{k<=i, l<=j} a[k, l]``; first maximum (row-major)."""
    best, arg = -math.inf, (0, 0)
    for i in range(1, a.shape[0] + 1):
        for j in range(1, a.shape[1] + 1):
            b = 0.0
            for k in range(i):
                for l_ in range(j):
                    b += a[k, l_]
            dev = b - i * j / n
            if dev > best:
                best, arg = dev, (i, j)
    return arg[0], arg[1], best


def released_internal_dims(a: np.ndarray, n: int) -> tuple[int, int]:
    """The released code: 0-based argmax of ``n cumsum(cumsum(a, 0), 1) - i j`` (i, j counted from 1)."""
    i = np.arange(1, a.shape[0] + 1)[:, None]
    j = np.arange(1, a.shape[1] + 1)[None, :]
    score = n * np.cumsum(np.cumsum(a, 0), 1) - i * j
    r, c = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(r), int(c)


def node_intensity_loops(a: np.ndarray, n: int) -> np.ndarray:
    raw = np.zeros(a.shape[1])
    for j in range(a.shape[1]):
        best, running = 0.0, 0.0  # i = 0 (empty sum) gives 0: the clip at 0
        for i in range(1, a.shape[0] + 1):
            running += a[i - 1, j]
            best = max(best, running - i / n)
        raw[j] = best
    top = raw.max()
    return raw / top if top > 0 else raw


def random_orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def set_weight(module: nn.Module, w: np.ndarray) -> None:
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.asarray(w, dtype=np.float64)).to(module.weight.dtype))


def mlp(*widths: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers += [nn.Linear(widths[i], widths[i + 1]), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double()


def adj_np(model: nn.Module, **kw) -> list[np.ndarray]:
    return [a.numpy() for a in compute_svr(model, **kw).adjacencies]


# ------------------------------------------------------------------------------------------ FC adjacency


def test_fc_adjacency_matches_numpy_rectangular_16_64_32():
    model = mlp(16, 64, 32)
    (a,) = adj_np(model)
    u1 = np_svd(np_weight(model[0]))[0]
    v2 = np_svd(np_weight(model[2]))[2]
    ref = (v2.T @ u1) ** 2
    assert a.shape == (32, 16) == ref.shape
    np.testing.assert_allclose(a, ref, atol=1e-12, rtol=0)
    assert a.min() >= 0.0 and a.max() <= 1.0 + 1e-12
    # a column is |V2^T u_m|^2 (u_m projected on a 32-dim subspace of R^64), a row |U1^T v_n|^2: sums <= 1
    assert np.all(a.sum(axis=0) <= 1 + 1e-12) and np.all(a.sum(axis=1) <= 1 + 1e-12)
    np.testing.assert_allclose(a.sum(axis=1), np.linalg.norm(u1.T @ v2, axis=0) ** 2, atol=1e-12)


def test_fc_adjacency_three_maps_random():
    model = mlp(10, 12, 9, 7, seed=1)
    adjs = adj_np(model)
    assert [a.shape for a in adjs] == [(9, 10), (7, 9)]
    ws = [np_weight(model[i]) for i in (0, 2, 4)]
    for i, a in enumerate(adjs):
        u = np_svd(ws[i])[0]
        v = np_svd(ws[i + 1])[2]
        ref = adjacency_loops(u, 1, v, 1, ws[i].shape[0])
        np.testing.assert_allclose(a, ref, atol=1e-12, rtol=0)
        assert a.min() >= 0.0 and a.max() <= 1.0 + 1e-12


def test_square_full_rank_adjacency_is_doubly_stochastic():
    model = mlp(20, 20, 20, seed=2)
    (a,) = adj_np(model)
    np.testing.assert_allclose(a.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_adjacency_chunking_does_not_change_the_result():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 6, 3)).double()
    res = compute_svr(model)
    full = res.adjacencies[0]
    tiny = adjacency(res.neurons[0], res.neurons[1], chunk_bytes=1)
    np.testing.assert_allclose(tiny.numpy(), full.numpy(), atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match="do not share a space"):
        adjacency(res.neurons[1], res.neurons[0])


# ---------------------------------------------------------------------------------------- conv adjacency


def test_conv2d_adjacency_matches_loops():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3)).double()
    res = compute_svr(model)
    f1, _ = flatten_svr_loops(np_weight(model[0]))  # 3 x 18
    f2, z2 = flatten_svr_loops(np_weight(model[2]))  # 4 x 27
    u1, s1, _ = np_svd(f1)
    _, s2, v2 = np_svd(f2)
    ref = adjacency_loops(u1, 1, v2, z2, 3)
    assert z2 == 9 and res.dof(0) == 9
    assert res.adjacencies[0].shape == (4, 3)
    np.testing.assert_allclose(res.adjacencies[0].numpy(), ref, atol=1e-12, rtol=0)
    np.testing.assert_allclose(res.neurons[0].s.numpy(), s1, rtol=1e-12)
    np.testing.assert_allclose(res.neurons[1].s.numpy(), s2, rtol=1e-12)
    assert res.neurons[1].v.shape == (3, 9, 4)  # V unflattened to filters c x Z
    assert np.all(ref <= 1 + 1e-12)


def test_conv1d_adjacency_matches_loops():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv1d(3, 5, 3), nn.ReLU(), nn.Conv1d(5, 4, 5)).double()
    res = compute_svr(model)
    f1, _ = flatten_svr_loops(np_weight(model[0]))
    f2, z2 = flatten_svr_loops(np_weight(model[2]))
    ref = adjacency_loops(np_svd(f1)[0], 1, np_svd(f2)[2], z2, 5)
    assert res.dof(0) == 5
    np.testing.assert_allclose(res.adjacencies[0].numpy(), ref, atol=1e-12, rtol=0)


def _conv_then_fc(seed: int = 6) -> nn.Sequential:
    """Conv2d(2, 3, 3) on 6x6 inputs (4x4 feature maps), Flatten, Linear(3 * 16, 5)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 5)).double()


def test_flatten_is_channel_major():
    x = torch.arange(3 * 4 * 4).reshape(1, 3, 4, 4)
    flat = nn.Flatten()(x)[0]
    for k in range(3):
        for h in range(4):
            for w in range(4):
                assert flat[k * 16 + h * 4 + w] == x[0, k, h, w]


def test_fc_after_conv_uses_the_feature_map_as_kernel():
    model = _conv_then_fc()
    model(torch.zeros(1, 2, 6, 6, dtype=torch.float64))  # the architecture is consistent
    res = compute_svr(model)
    assert [m.kind for m in res.maps] == ["conv", "fc"]
    assert res.maps[1].weight.shape == (5, 3, 16)
    assert res.dof(0) == 16
    f1, _ = flatten_svr_loops(np_weight(model[0]))
    wl = np_weight(model[3])  # (5, 48): column k * 16 + z, channel-major
    ref = adjacency_loops(np_svd(f1)[0], 1, np_svd(wl)[2], 16, 3)
    np.testing.assert_allclose(res.adjacencies[0].numpy(), ref, atol=1e-12, rtol=0)


def test_co_svr_conv_pair_matches_loops():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3)).double()
    res = compute_svr(model, flatten="co_svr")
    g1, z1 = flatten_co_svr_loops(np_weight(model[0]))  # (3 * 9) x 2
    g2, _ = flatten_co_svr_loops(np_weight(model[2]))  # (4 * 9) x 3
    u1, s1, _ = np_svd(g1)
    _, s2, v2 = np_svd(g2)
    np.testing.assert_allclose(res.neurons[0].s.numpy(), s1, rtol=1e-12)
    np.testing.assert_allclose(res.neurons[1].s.numpy(), s2, rtol=1e-12)
    assert res.neurons[0].u.shape == (3, 9, 2)  # output representation: filter o x Z
    assert res.neurons[1].v.shape == (3, 1, 3)  # input representation: a vector
    ref = adjacency_loops(u1, z1, v2, 1, 3)
    assert res.dof(0) == 9
    np.testing.assert_allclose(res.adjacencies[0].numpy(), ref, atol=1e-12, rtol=0)


def test_co_svr_conv_then_fc_after_conv_sums_over_both_kernels():
    model = _conv_then_fc(seed=8)
    res = compute_svr(model, flatten="co_svr")
    g1, z1 = flatten_co_svr_loops(np_weight(model[0]))  # (3 * 9) x 2
    wl = np_weight(model[3])  # FC maps always use the SVR flattening
    ref = adjacency_loops(np_svd(g1)[0], z1, np_svd(wl)[2], 16, 3)
    assert res.dof(0) == 9 * 16
    np.testing.assert_allclose(res.adjacencies[0].numpy(), ref, atol=1e-12, rtol=0)
    pair = svr_values(res, SvrParams())["pairs"][0]
    assert pair["dof"] == 144 and pair["shared_dim"] == 3
    assert pair["threshold"] == pytest.approx(stats.chi2.ppf(1 - stats.norm.sf(3), 144) / (3 * 144), rel=1e-12)


# -------------------------------------------------------------------------------------------- invariance


def _scaled_copy(model: nn.Module, factors: dict[int, float]) -> nn.Module:
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        for idx, f in factors.items():
            other[idx].weight.mul_(f)
    return other


@pytest.mark.parametrize("factors", [{0: 7.5}, {2: 1e-3}, {4: 42.0}, {0: 0.3, 2: 11.0, 4: 2.0}])
def test_positive_scaling_leaves_every_adjacency_unchanged(factors):
    model = mlp(9, 11, 8, 6, seed=9)
    base = adj_np(model)
    for a, b in zip(base, adj_np(_scaled_copy(model, factors))):
        np.testing.assert_allclose(b, a, atol=1e-12, rtol=0)


def test_positive_scaling_conv_unchanged():
    torch.manual_seed(10)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3)).double()
    base = adj_np(model)
    np.testing.assert_allclose(adj_np(_scaled_copy(model, {0: 5.0, 2: 0.01}))[0], base[0], atol=1e-12, rtol=0)


def test_hidden_permutation_leaves_the_adjacency_unchanged():
    model = mlp(9, 11, 8, seed=11)
    base = adj_np(model)[0]
    perm = np.random.default_rng(0).permutation(11)
    p = np.eye(11)[perm]
    w1, w2 = np_weight(model[0]), np_weight(model[2])
    permuted = mlp(9, 11, 8, seed=11)
    set_weight(permuted[0], p @ w1)
    set_weight(permuted[2], w2 @ p.T)
    np.testing.assert_allclose(adj_np(permuted)[0], base, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------------ internal dimensions


@pytest.mark.parametrize("shape,n,seed", [((6, 5), 5, 0), ((7, 7), 9, 1), ((4, 8), 8, 2), ((9, 3), 4, 3)])
def test_internal_dimensions_brute_force(shape, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.random(shape) ** 3 / n  # skewed so the maximum is interior for some seeds
    a[0, 0] += rng.random()
    d_out, d_in, dev = internal_dimensions(torch.from_numpy(a), n)
    ref = internal_dims_loops(a, n)
    assert (d_out, d_in) == ref[:2]
    assert dev == pytest.approx(ref[2], abs=1e-12)
    assert 1 <= d_out <= shape[0] and 1 <= d_in <= shape[1]


def test_internal_dimensions_first_maximum_on_ties_and_corner():
    # all-null adjacency at exactly 1/n: every deviation is 0, the first (1, 1) is reported
    a = np.full((4, 4), 0.25)
    assert internal_dimensions(torch.from_numpy(a), 4) == (1, 1, pytest.approx(0.0, abs=1e-15))
    assert internal_dims_loops(a, 4)[:2] == (1, 1)
    # identity: B[i, j] = min(i, j); dev max at i = j = n/2
    eye = np.eye(10)
    assert internal_dimensions(torch.from_numpy(eye), 10)[:2] == internal_dims_loops(eye, 10)[:2] == (5, 5)


def _block_orthogonal(n: int, p: int, rng: np.random.Generator) -> np.ndarray:
    p_mat = np.zeros((n, n))
    p_mat[:p, :p] = random_orthogonal(p, rng)
    p_mat[p:, p:] = random_orthogonal(n - p, rng)
    return p_mat


@pytest.mark.parametrize("p", [10, 30, 70, 90])
def test_internal_dimensions_recover_planted_block(p):
    n = 100
    rng = np.random.default_rng(p)
    a = _block_orthogonal(n, p, rng) ** 2
    d_out, d_in, dev = internal_dimensions(torch.from_numpy(a), n)
    assert (d_out, d_in) == (p, p)
    assert dev == pytest.approx(p - p * p / n, abs=1e-10)
    # the released code reports the 0-based argmax: one less on both axes
    assert released_internal_dims(a, n) == (p - 1, p - 1)


@pytest.mark.parametrize("p", [10, 70])
def test_internal_dimensions_planted_end_to_end_and_low_noise(p):
    """Maps built so that V2^T U1 = P: the adjacency is |P|^2 and the internal dimensions are (p, p)."""
    n = 100
    rng = np.random.default_rng(100 + p)
    pm = _block_orthogonal(n, p, rng)
    u1, r1, r2 = (random_orthogonal(n, rng) for _ in range(3))
    s1 = np.linspace(3.0, 1.0, n)
    s2 = np.linspace(5.0, 2.0, n)
    v2 = u1 @ pm.T  # V2^T U1 = P U1^T U1 = P
    model = mlp(n, n, n)
    set_weight(model[0], u1 @ np.diag(s1) @ r1.T)
    set_weight(model[2], r2 @ np.diag(s2) @ v2.T)
    res = compute_svr(model, driver="svd")
    np.testing.assert_allclose(res.adjacencies[0].numpy(), pm**2, atol=1e-10)
    assert internal_dimensions(res.adjacencies[0], n)[:2] == (p, p)
    assert svr_values(res, SvrParams())["internal_dims"] == [[p, p]]
    # P(eps) = P expm(eps (A - A^T)) at low noise (App. B.1) still recovers p
    from scipy.linalg import expm

    g = rng.standard_normal((n, n))
    noisy = pm @ expm(0.005 * (g - g.T))
    assert internal_dimensions(torch.from_numpy(noisy**2), n)[:2] == (p, p)


# ---------------------------------------------------------------------------------------- node intensity


@pytest.mark.parametrize("shape,n,seed", [((6, 5), 5, 0), ((8, 8), 8, 1), ((5, 9), 9, 2)])
def test_node_intensity_matches_loops(shape, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.random(shape) ** 4 * 2 / n
    got = node_intensity(torch.from_numpy(a), n).numpy()
    ref = node_intensity_loops(a, n)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert got.shape == (shape[1],)
    assert got.min() >= 0.0 and got.max() == pytest.approx(1.0)


def test_node_intensity_null_and_planted():
    # coefficients below the null mean everywhere: no neuron deviates, all zeros (not NaN)
    a = np.full((5, 4), 0.1)
    np.testing.assert_array_equal(node_intensity(torch.from_numpy(a), 5).numpy(), np.zeros(4))
    np.testing.assert_array_equal(node_intensity_loops(a, 5), np.zeros(4))
    pm = _block_orthogonal(20, 5, np.random.default_rng(0)) ** 2
    got = node_intensity(torch.from_numpy(pm), 20).numpy()
    np.testing.assert_allclose(got, node_intensity_loops(pm, 20), atol=1e-12)


# ------------------------------------------------------------------------------------------- thresholds


def test_sigma_to_tail():
    assert sigma_to_tail(3) == pytest.approx(0.0013499, abs=5e-8)
    assert sigma_to_tail(3) == pytest.approx(0.5 * special.erfc(3 / math.sqrt(2)), rel=1e-12)
    assert sigma_to_tail(1) == pytest.approx(0.158655, abs=1e-6)


@pytest.mark.parametrize("z,expected", [(1, 10.27), (9, 3.01), (49, 1.72)])
@pytest.mark.parametrize("c", [1, 40, 512])
def test_threshold_three_sigma_released_values(z, expected, c):
    p = sigma_to_tail(3.0)
    thr = threshold(c, z, p)
    assert round(c * thr, 2) == expected
    assert thr == pytest.approx(stats.chi2.ppf(1 - p, z) / z * (1 / c), rel=1e-10)


def test_threshold_z1_closed_form_and_tail_p():
    # chi2(1) = N(0,1)^2: its 1 - p quantile is ndtri(1 - p/2)^2
    for p in (0.15, 0.01, 1e-4):
        assert threshold(1, 1, p) == pytest.approx(special.ndtri(1 - p / 2) ** 2, rel=1e-10)
        assert threshold(40, 9, p) == pytest.approx(stats.chi2.ppf(1 - p, 9) / (40 * 9), rel=1e-10)
    # the null coefficient (1/(c Z)) chi2(Z) exceeds the threshold with probability p
    assert stats.chi2.sf(threshold(10, 9, 0.15) * 10 * 9, 9) == pytest.approx(0.15, rel=1e-10)
    with pytest.raises(ValueError):
        threshold(10, 1, 0.0)
    with pytest.raises(ValueError):
        threshold(10, 1, 1.0)


# ---------------------------------------------------------------------------------------------- drivers


@pytest.fixture(scope="module")
def big_pair() -> nn.Sequential:
    """Well-conditioned 300 x 700 map then 400 x 300 (Gaussian, sigma_min / sigma_max ~ 0.2)."""
    model = nn.Sequential(nn.Linear(700, 300, bias=False), nn.ReLU(), nn.Linear(300, 400, bias=False)).double()
    rng = np.random.default_rng(12)
    set_weight(model[0], rng.standard_normal((300, 700)))
    set_weight(model[2], rng.standard_normal((400, 300)))
    return model


def test_drivers_agree_on_a_well_conditioned_pair(big_pair):
    u1, s1, _ = np_svd(np_weight(big_pair[0]))
    _, s2, v2 = np_svd(np_weight(big_pair[2]))
    ref_adj = (v2.T @ u1) ** 2
    for driver, method in (("svd", "svd"), ("gram", "gram"), ("auto", "gram")):  # auto: min side 300 >= 256
        res = compute_svr(big_pair, driver=driver)
        assert [n.method for n in res.neurons] == [method, method], driver
        np.testing.assert_allclose(res.neurons[0].s.numpy(), s1, rtol=1e-10, err_msg=driver)
        np.testing.assert_allclose(res.neurons[1].s.numpy(), s2, rtol=1e-10, err_msg=driver)
        np.testing.assert_allclose(res.adjacencies[0].numpy(), ref_adj, atol=1e-9, rtol=0, err_msg=driver)


@pytest.mark.parametrize("shape", [(30, 50), (50, 30)])
def test_gram_factors_reconstruct_and_are_orthonormal(shape):
    mat = torch.from_numpy(np.random.default_rng(13).standard_normal(shape))
    u, s, v, how = svd_factors(mat, "gram")
    assert how == "gram"
    m = min(shape)
    assert u.shape == (shape[0], m) and v.shape == (shape[1], m)
    u, s, v = u.numpy(), s.numpy(), v.numpy()
    np.testing.assert_allclose(u @ np.diag(s) @ v.T, mat.numpy(), atol=1e-11, rtol=0)
    np.testing.assert_allclose(u.T @ u, np.eye(m), atol=1e-11, rtol=0)
    np.testing.assert_allclose(v.T @ v, np.eye(m), atol=1e-11, rtol=0)
    np.testing.assert_allclose(s, np_svd(mat.numpy())[1], rtol=1e-12)
    assert np.all(s[:-1] >= s[1:])
    with pytest.raises(TypeError):
        svd_factors(mat.float(), "svd")


@pytest.mark.parametrize("driver", ["gram", "auto"])
def test_gram_falls_back_to_svd_on_rank_deficient_map(driver):
    rng = np.random.default_rng(14)
    low = rng.standard_normal((300, 5)) @ rng.standard_normal((5, 280))  # rank 5, min side 280 >= 256
    mat = torch.from_numpy(low)
    u, s, v, how = svd_factors(mat, driver)
    assert how == "svd"
    np.testing.assert_allclose(s.numpy(), np_svd(low)[1], rtol=1e-10, atol=1e-9)
    model = nn.Sequential(nn.Linear(280, 300, bias=False), nn.Linear(300, 20, bias=False)).double()
    set_weight(model[0], low)
    res = compute_svr(model, driver="gram")
    assert res.neurons[0].method == "svd"
    assert res.neurons[1].method == "gram"


def _planted_spectrum_pair(seed: int, n_in: int, h: int, n_out: int) -> nn.Sequential:
    rng = np.random.default_rng(seed)

    def planted(rows: int, cols: int, top: float) -> np.ndarray:
        m = min(rows, cols)
        u = random_orthogonal(rows, rng)[:, :m]
        v = random_orthogonal(cols, rng)[:, :m]
        return u @ np.diag(np.linspace(top, 1.0, m)) @ v.T  # gaps (top - 1) / (m - 1)

    model = nn.Sequential(nn.Linear(n_in, h, bias=False), nn.ReLU(), nn.Linear(h, n_out, bias=False)).double()
    set_weight(model[0], planted(h, n_in, 10.0))
    set_weight(model[2], planted(n_out, h, 8.0))
    return model


@pytest.mark.parametrize("driver", ["svd", "gram", "auto"])
@pytest.mark.parametrize("k", [1, 7, 20])
def test_max_neurons_is_the_top_block(driver, k):
    model = _planted_spectrum_pair(15, 40, 30, 35)
    full = compute_svr(model, driver="svd")
    top = compute_svr(model, driver=driver, max_neurons=k)
    assert [n.n_neurons for n in top.neurons] == [k, k]
    assert top.adjacencies[0].shape == (k, k)
    np.testing.assert_allclose(top.adjacencies[0].numpy(), full.adjacencies[0].numpy()[:k, :k], atol=1e-10, rtol=0)
    for i in range(2):
        np.testing.assert_allclose(top.neurons[i].s.numpy(), full.neurons[i].s.numpy()[:k], rtol=1e-10)
    if driver == "gram":
        assert all(n.method == "gram" for n in top.neurons)


def test_max_neurons_above_size_keeps_all():
    model = _planted_spectrum_pair(16, 12, 10, 8)
    res = compute_svr(model, max_neurons=100)
    assert [n.n_neurons for n in res.neurons] == [10, 8]


# ------------------------------------------------------------------------------------------------- chain


@pytest.fixture(scope="module")
def resnet18():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=10)


def test_resnet18_chain(resnet18):
    chain = svr_chain(resnet18)
    names = [m.name for m in chain.maps]
    skipped = dict(chain.skipped)
    assert sorted(skipped) == [f"layer{i}.0.downsample.0" for i in (2, 3, 4)]
    for reason in skipped.values():
        assert "do not match" in reason and "shortcut" in reason
    assert names[0] == "conv1"
    assert names[-1] == "fc"
    assert len(names) == 1 + 16 + 1
    assert not any("downsample" in n for n in names)
    fc = chain.maps[-1]
    assert fc.kind == "fc" and fc.weight.shape == (10, 512, 1) and fc.kernel == 1
    assert chain.maps[-2].name == "layer4.1.conv2"
    for prev, nxt in zip(chain.maps, chain.maps[1:]):
        assert nxt.in_channels == prev.out_dim
        assert nxt.weight.dtype == torch.float64
    conv = chain.maps[1]
    assert conv.name == "layer1.0.conv1" and conv.weight.shape == (64, 64, 9)
    assert conv.bn_folded is None


def test_resnet18_svr_values_and_fold(resnet18):
    sel = svr_chain(resnet18, layers=["layer4.*", "fc"])
    assert [m.name for m in sel.maps] == ["layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2", "fc"]
    assert [n for n, _ in sel.skipped] == ["layer4.0.downsample.0"]
    res = compute_svr(resnet18, layers=["layer4.1.*", "fc"])
    assert [m.name for m in res.maps] == ["layer4.1.conv1", "layer4.1.conv2", "fc"]
    assert res.dof(1) == 1  # fc after global pooling: Z = 1
    values = svr_values(res, SvrParams(heatmap_size=0))
    assert values["pairs"][-1]["dof"] == 1 and values["pairs"][-1]["shared_dim"] == 512
    assert values["pairs"][0]["dof"] == 9 and values["pairs"][0]["shape"] == [512, 512]
    folded = svr_chain(resnet18, layers=["layer4.1.*"], fold_batchnorm=True)
    assert [(m.name, m.bn_folded) for m in folded.maps] == [
        ("layer4.1.conv1", "layer4.1.bn1"),
        ("layer4.1.conv2", "layer4.1.bn2"),
    ]


def test_grouped_conv_is_skipped_and_the_chain_continues():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=4), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 4, 1)
    )
    chain = svr_chain(model)
    assert [m.name for m in chain.maps] == ["0", "4"]
    assert [n for n, _ in chain.skipped] == ["2", "3"]
    assert "groups=4" in dict(chain.skipped)["2"] and "grouped" in dict(chain.skipped)["3"]
    assert chain.maps[1].weight.shape == (4, 8, 1)


def _conv_bn_model() -> nn.Sequential:
    torch.manual_seed(17)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.BatchNorm2d(4, affine=False)
    )
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -1.5, 2.0, 3.0, 0.1, 1.0]))
        model[1].bias.copy_(torch.arange(6.0))
        model[1].running_mean.copy_(torch.linspace(-1, 1, 6))
        model[1].running_var.copy_(torch.tensor([0.25, 4.0, 1.0, 9.0, 0.01, 2.0]))
        model[1].eps = 1e-3
        model[4].running_var.copy_(torch.tensor([4.0, 1.0, 0.5, 16.0]))
    return model.eval()


def test_fold_batchnorm_scales_rows():
    model = _conv_bn_model()
    plain = svr_chain(model)
    folded = svr_chain(model, fold_batchnorm=True)
    w0 = np_weight(model[0]).reshape(6, 3, 9)
    w1 = np_weight(model[3]).reshape(4, 6, 9)
    bn = model[1]
    gamma = bn.weight.detach().double().numpy()
    var = bn.running_var.detach().double().numpy()
    scale0 = gamma / np.sqrt(var + bn.eps)
    scale1 = 1.0 / np.sqrt(model[4].running_var.double().numpy() + model[4].eps)
    np.testing.assert_allclose(plain.maps[0].weight.numpy(), w0, rtol=1e-15)
    assert plain.maps[0].bn_folded is None
    expected0 = np.einsum("o,oiz->oiz", scale0, w0)  # diag(gamma / sqrt(var + eps)) W
    np.testing.assert_allclose(folded.maps[0].weight.numpy(), expected0, rtol=1e-12)
    as_matrix = (np.diag(scale0) @ w0.reshape(6, 27)).reshape(6, 3, 9)
    np.testing.assert_allclose(folded.maps[0].weight.numpy(), as_matrix, rtol=1e-12)
    np.testing.assert_allclose(folded.maps[1].weight.numpy(), np.einsum("o,oiz->oiz", scale1, w1), rtol=1e-12)
    assert [m.bn_folded for m in folded.maps] == ["1", "4"]
    assert folded.maps[0].weight_shape == (6, 3, 3, 3)


def test_batchnorm_after_a_skipped_map_is_not_folded():
    torch.manual_seed(18)
    model = nn.Sequential(nn.Linear(5, 6), nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)).eval()
    with torch.no_grad():
        model[2].running_var.fill_(4.0)
    chain = svr_chain(model, fold_batchnorm=True)
    assert [m.name for m in chain.maps] == ["0", "3"]
    assert all(m.bn_folded is None for m in chain.maps)
    np.testing.assert_allclose(chain.maps[0].weight.numpy()[:, :, 0], np_weight(model[0]))


def test_linear_with_mismatched_in_features_is_skipped():
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(5, 4), nn.Linear(6, 3))
    chain = svr_chain(model)
    assert [m.name for m in chain.maps] == ["0", "3"]
    ((name, reason),) = chain.skipped
    assert name == "2" and "in_features 5" in reason and "6" in reason
    assert chain.maps[1].weight.shape == (3, 6, 1)


def test_linear_after_conv_needs_a_multiple_of_the_channels():
    chain = svr_chain(nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(10, 4)))
    assert [m.name for m in chain.maps] == ["0"]
    ((name, reason),) = chain.skipped
    assert name == "2" and "not a multiple" in reason and "3 output channels" in reason


def test_layers_patterns_select_maps():
    model = nn.Sequential(
        OrderedDict(fc1=nn.Linear(8, 6), act=nn.ReLU(), fc2=nn.Linear(6, 6), head=nn.Linear(6, 6), fc3=nn.Linear(6, 4))
    )
    assert [m.name for m in svr_chain(model).maps] == ["fc1", "fc2", "head", "fc3"]
    assert [m.name for m in svr_chain(model, layers=["fc*"]).maps] == ["fc1", "fc2", "fc3"]
    sel = svr_chain(model, layers=["fc1", "fc3"])
    assert [m.name for m in sel.maps] == ["fc1", "fc3"]
    assert sel.skipped == []  # unselected maps are not "skipped"
    assert [m.name for m in svr_chain(model, layers=["head", "fc3"]).maps] == ["head", "fc3"]
    assert svr_chain(model, layers=["nothing*"]).maps == []


# -------------------------------------------------------------------------------------------- svr values


def _recount(a: np.ndarray, c: int, z: int, p: float, top_fraction: float) -> dict:
    thr = stats.chi2.ppf(1 - p, z) / (z * c)
    mask = a > thr
    n, m = a.shape
    rows, cols = max(1, math.ceil(top_fraction * n)), max(1, math.ceil(top_fraction * m))
    total = int(mask.sum())
    in_top = 0
    for i in range(rows):
        for j in range(cols):
            in_top += bool(mask[i, j])
    return {
        "threshold": thr,
        "significant": total,
        "expected_null": p * n * m,
        "top_concentration": in_top / total if total else None,
        "top_null_share": rows * cols / (n * m),
    }


@pytest.mark.parametrize("params", [SvrParams(), SvrParams(tail_p=0.15), SvrParams(sigma=1.0, top_fraction=0.4)])
def test_svr_values_recount(params):
    model = mlp(20, 30, 25, 10, seed=19)
    values = svr_values(compute_svr(model), params)
    p = params.p
    ws = [np_weight(model[i]) for i in (0, 2, 4)]
    assert values["n_layers"] == 3 and values["tail_p"] == p
    assert len(values["pairs"]) == 2
    for i, pair in enumerate(values["pairs"]):
        u = np_svd(ws[i])[0]
        v = np_svd(ws[i + 1])[2]
        a = (v.T @ u) ** 2
        c = ws[i].shape[0]
        ref = _recount(a, c, 1, p, params.top_fraction)
        assert pair["shared_dim"] == c and pair["dof"] == 1
        assert pair["threshold"] == pytest.approx(ref["threshold"], rel=1e-10)
        assert pair["significant"] == ref["significant"] == values["significant_edges"][i]
        assert pair["expected_null"] == pytest.approx(ref["expected_null"], rel=1e-12)
        assert values["expected_null_edges"][i] == pytest.approx(p * a.shape[0] * a.shape[1], rel=1e-12)
        if ref["top_concentration"] is None:
            assert pair["top_concentration"] is None
        else:
            assert pair["top_concentration"] == pytest.approx(ref["top_concentration"], abs=1e-12)
            assert pair["top_lift"] == pytest.approx(ref["top_concentration"] / ref["top_null_share"], rel=1e-12)
        assert pair["internal_dims"] == list(internal_dims_loops(a, c)[:2])
        np.testing.assert_allclose(values["node_intensity"][i], node_intensity_loops(a, c), atol=1e-10)
        edges = values["edges"][i]
        assert len(edges) == ref["significant"]
        for n_, m_, coef in edges:
            assert coef == pytest.approx(a[n_ - 1, m_ - 1], abs=1e-8) and a[n_ - 1, m_ - 1] > ref["threshold"]
    assert values["total_significant"] == sum(values["significant_edges"])
    assert values["d_out"] == [pr["internal_dims"][0] for pr in values["pairs"]]
    assert [len(s) for s in values["singular_values"]] == [20, 25, 10]


def test_svr_values_significance_at_p_015_is_near_the_null_rate():
    model = mlp(60, 60, 60, seed=20)
    values = svr_values(compute_svr(model), SvrParams(tail_p=0.15))
    (pair,) = values["pairs"]
    assert pair["expected_null"] == pytest.approx(0.15 * 3600)
    # random maps follow the null: the count is near p M' M (binomial sd ~ 21; seeds 0-4 gave 523..561)
    assert abs(pair["significant"] - 540) < 100


def _aligned_net(seed: int, widths=(40, 30, 25, 20)) -> nn.Sequential:
    """Each map's top right singular vector equals the previous map's top left singular vector."""
    rng = np.random.default_rng(seed)
    model = mlp(*widths, seed=seed)
    prev_u0 = None
    for idx, (n_in, n_out) in zip((0, 2, 4), zip(widths, widths[1:])):
        m = min(n_in, n_out)
        v = random_orthogonal(n_in, rng)[:, :m]
        if prev_u0 is not None:  # V[:, 0] = U_prev[:, 0], the rest orthonormal to it
            basis = np.column_stack([prev_u0, rng.standard_normal((n_in, m - 1))])
            q, r = np.linalg.qr(basis)
            v = q * np.sign(np.diag(r))
        u = random_orthogonal(n_out, rng)[:, :m]
        s = np.linspace(4.0, 1.0, m)
        set_weight(model[idx], u @ np.diag(s) @ v.T)
        prev_u0 = u[:, 0]
    return model


def test_super_feature_edge_on_aligned_and_random_nets():
    # FC at 3 sigma: c * threshold = 10.27, so shared widths > 10.27 are needed for any edge to be significant
    aligned = svr_values(compute_svr(_aligned_net(21)), SvrParams())
    assert [pr["super_feature_edge"] for pr in aligned["pairs"]] == [True, True]
    assert aligned["super_feature_chain"] == 2
    for pr in aligned["pairs"]:
        assert pr["max_coefficient"] == pytest.approx(1.0)
    # W = diag(s), s descending: U = V = I (up to signs), the adjacency is the identity
    diag = mlp(6, 6, 6, seed=22)
    set_weight(diag[0], np.diag([6.0, 5, 4, 3, 2, 1]))
    set_weight(diag[2], np.diag([7.0, 5, 3, 2, 1.5, 1]))
    res = compute_svr(diag)
    np.testing.assert_allclose(res.adjacencies[0].numpy(), np.eye(6), atol=1e-12)
    assert svr_values(res, SvrParams())["pairs"][0]["super_feature_edge"] is False  # c = 6: 1 < 10.27 / 6
    assert svr_values(res, SvrParams(tail_p=0.15))["pairs"][0]["super_feature_edge"] is True
    rand = svr_values(compute_svr(mlp(40, 30, 25, 20, seed=23)), SvrParams())
    assert [pr["super_feature_edge"] for pr in rand["pairs"]] == [False, False]
    assert rand["super_feature_chain"] == 0


def test_svr_params_significance_level():
    from pydantic import ValidationError

    assert SvrParams().p == pytest.approx(0.0013499, abs=5e-8)
    assert SvrParams(tail_p=0.15).p == 0.15
    assert SvrParams(sigma=2.0).p == pytest.approx(stats.norm.sf(2.0))
    with pytest.raises(ValidationError, match="not both"):
        SvrParams(sigma=3.0, tail_p=0.15)
    with pytest.raises(ValidationError, match="not both"):
        SvrParams(sigma=2.0, tail_p=0.15)
    with pytest.raises(ValidationError, match="give sigma or tail_p"):
        SvrParams(sigma=None)
    with pytest.raises(ValidationError):
        SvrParams(tail_p=1.5)
    with pytest.raises(ValidationError):
        SvrParams(sigma=-1.0)


def test_decompose_shapes():
    torch.manual_seed(24)
    conv = nn.Conv2d(3, 5, 3).double()
    chain = svr_chain(nn.Sequential(conv))
    svr_n = decompose(chain.maps[0], "svr", "svd")
    co_n = decompose(chain.maps[0], "co_svr", "svd")
    assert svr_n.u.shape == (5, 1, 5) and svr_n.v.shape == (3, 9, 5)
    assert co_n.u.shape == (5, 9, 3) and co_n.v.shape == (3, 1, 3)
    fc_chain = svr_chain(nn.Sequential(nn.Linear(7, 4)))
    fc_co = decompose(fc_chain.maps[0], "co_svr", "svd")  # FC maps always use the SVR form
    assert fc_co.u.shape == (4, 1, 4) and fc_co.v.shape == (7, 1, 4)


def test_batchnorm_after_an_activation_is_not_folded():
    """Conv -> ReLU -> BatchNorm: the BatchNorm does not scale the conv's rows (ReLU sits between)."""
    from suite.metrics.svr.maps import svr_chain

    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.BatchNorm2d(6), nn.Conv2d(6, 4, 3)).eval()
    chain = svr_chain(net, fold_batchnorm=True)
    assert [m.bn_folded for m in chain.maps] == [None, None]
