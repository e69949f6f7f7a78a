"""Exact Hessians (suite.metrics.hessian.exact) against dense references, and the linear-FCN rank formulas
of Singh et al. (2021) against measured float64 ranks and the released code's stored results."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from suite.linalg.rank import NumpyRule, numerical_rank
from suite.metrics.hessian.exact import exact_hessians
from suite.theory.hessian import linear_fcn_ranks

pytestmark = pytest.mark.usefixtures("one_thread_module")


def _linear_net(widths: list[int], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])]).double()


def _data(widths: list[int], n: int, loss: str, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, widths[0], dtype=torch.float64, generator=gen)
    if loss == "mse":
        return x, torch.randn(n, widths[-1], dtype=torch.float64, generator=gen)
    return x, torch.randint(0, widths[-1], (n,), generator=gen)


def test_loss_hessian_matches_autograd_functional_hessian():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(7, 3, dtype=torch.float64), torch.randint(0, 2, (7,))
    parts = exact_hessians(net, x, y, "cross_entropy")
    shapes = [p.shape for p in net.parameters()]

    def loss_of(*params):
        h = torch.tanh(x @ params[0].T + params[1])
        return nn.functional.cross_entropy(h @ params[2].T + params[3], y)

    blocks = torch.autograd.functional.hessian(loss_of, tuple(p.detach() for p in net.parameters()))
    sizes = [int(torch.Size(s).numel()) for s in shapes]
    dense = torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(4)], 1) for i in range(4)], 0)
    assert parts.n_params == sum(sizes) == 26
    torch.testing.assert_close(parts.loss, dense, rtol=1e-10, atol=1e-12)


def test_outer_product_hessian_is_the_mean_of_jt_g_j():
    """H_o = (1/n) sum_i J_i^T G_i J_i with J_i from per-sample backward passes (a loop, not torch.func)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randint(0, 3, (4,))
    parts = exact_hessians(net, x, y, "cross_entropy")
    ref = torch.zeros_like(parts.outer)
    for i in range(4):
        out = net(x[i : i + 1])[0]
        rows = []
        for k in range(3):
            grads = torch.autograd.grad(out[k], list(net.parameters()), retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        jac = torch.stack(rows)
        prob = torch.softmax(out.detach(), 0)
        ref += jac.T @ (torch.diag(prob) - torch.outer(prob, prob)) @ jac / 4
    torch.testing.assert_close(parts.outer, ref, rtol=1e-10, atol=1e-12)


def test_functional_hessian_vanishes_at_zero_residual():
    """MSE with targets equal to the outputs: the residual is 0, so H_f = 0 and H_L = H_o (eq. 4)."""
    widths = [5, 4, 3]
    net = _linear_net(widths)
    x, _ = _data(widths, 8, "mse")
    parts = exact_hessians(net, x, net(x).detach(), "mse")
    # every entry is rounding noise: (a relative rank rule on H_f alone would count that noise, so the
    # scale must come from H_L; noted for the hessian_rank metric)
    assert float(parts.functional.abs().max()) < 1e-13 * float(parts.loss.abs().max())
    torch.testing.assert_close(parts.loss, parts.outer, rtol=1e-12, atol=1e-13)


def test_model_is_left_in_its_dtype():
    net = nn.Sequential(nn.Linear(3, 2, bias=False))
    exact_hessians(net, torch.randn(4, 3), torch.randn(4, 2), "mse")
    assert net[0].weight.dtype == torch.float32


@pytest.mark.parametrize(
    ("widths", "n", "loss"),
    [
        ([6, 4, 3, 2], 10, "mse"),
        ([8, 5, 5, 3], 20, "mse"),
        ([8, 2, 5, 4], 20, "mse"),  # bottleneck: q = 2
        ([10, 6, 6, 6, 4], 5, "mse"),  # r = 5 < d: rank-deficient data
        ([12, 3, 7, 5], 30, "mse"),
        ([6, 4, 3, 3], 10, "cross_entropy"),
        ([8, 5, 5, 4], 20, "cross_entropy"),
        ([16, 8, 8, 10], 50, "cross_entropy"),
    ],
)
def test_linear_fcn_ranks_equal_singh_formulas(widths, n, loss):
    """Measured float64 ranks of H_o, H_f, H_L equal Singh et al. (2021) Thm 3, Thm 4, Cor. 1 exactly."""
    net = _linear_net(widths)
    x, y = _data(widths, n, loss)
    parts = exact_hessians(net, x, y, loss)
    pred = linear_fcn_ranks(int(torch.linalg.matrix_rank(x.T @ x)), widths, loss)
    measured = [numerical_rank(h, NumpyRule()).rank for h in (parts.outer, parts.functional, parts.loss)]
    assert measured == [pred.outer, pred.functional, pred.loss]
    assert pred.loss <= parts.n_params


def test_formulas_reproduce_the_released_stored_results():
    """Released results (MNIST 8x8, cross-entropy, d = 64, n = 100, r = 41, hidden [w, w], w = 4..36)."""
    widths = range(4, 37, 4)
    rank_f = [88, 208, 351, 495, 639, 783, 927, 1071, 1215]
    rank_o = [184, 336] + [369] * 7
    rank_l = [216, 464, 639, 783, 927, 1071, 1215, 1359, 1503]
    pred = [linear_fcn_ranks(41, [64, w, w, 10], "cross_entropy") for w in widths]
    assert [p.functional for p in pred] == rank_f
    assert [p.outer for p in pred] == rank_o
    assert [p.loss for p in pred] == rank_l


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_dense_and_matrix_free_hessians_stay_on_the_parameters_device(loss):
    """Every tensor made inside the Hessian code follows the parameters' device. The ``meta`` device stands in
    for CUDA on a CPU-only machine: a tensor created on the CPU (unit cotangents, the output Hessian, the
    preallocated rows) fails the product with "expected device meta but got cpu", as it would on a GPU."""
    from suite.metrics.hessian.hvp import hessian_operators

    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False)).to("meta")
    x = torch.empty(5, 4, device="meta")
    y = torch.empty(5, 2, device="meta") if loss == "mse" else torch.zeros(5, dtype=torch.int64, device="meta")
    parts = exact_hessians(model, x, y, loss)
    assert {parts.loss.device.type, parts.outer.device.type, parts.functional.device.type} == {"meta"}
    assert parts.n_params == 18
    ops = hessian_operators(model, x, y, loss)
    block = torch.empty(18, 3, dtype=torch.float64, device="meta")
    assert {ops.loss(block).device.type, ops.outer(block).device.type, ops.functional(block).device.type} == {"meta"}


def test_cross_entropy_form_equals_torch_cross_entropy_even_for_large_logits():
    """The per-sample loss uses ``logsumexp(F) - F_y`` (cheaper second derivative); it must equal
    ``torch.nn.functional.cross_entropy`` to rounding, including logits of size 1e3 where a naive
    ``log(sum(exp))`` overflows."""
    from suite.metrics.hessian.exact import _per_sample_loss

    gen = torch.Generator().manual_seed(0)
    for scale in (1.0, 1e3):
        logits = scale * torch.randn(20, 7, dtype=torch.float64, generator=gen)
        labels = torch.randint(0, 7, (20,), generator=gen)
        ours = _per_sample_loss(logits, labels, "cross_entropy")
        ref = nn.functional.cross_entropy(logits, labels, reduction="none")
        assert torch.isfinite(ours).all()
        assert torch.allclose(ours, ref, rtol=1e-13, atol=1e-13 * scale)
