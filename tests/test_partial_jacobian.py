"""partial_jacobian_rank and layer selection.

Forward-mode columns against dense float64 references, planted ranks, contexts, chunking and out-of-memory
retry, Table 1 layer counts, timm models end to end.
"""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from suite.data.registry import Dataset
from suite.metrics import METRICS
from suite.metrics.rank_diminishing.partial_jacobian import (
    PartialJacobianParams,
    _patch_embedding,
    forward_jacobians,
    partial_jacobian_rank,
    patch_slices,
)
from suite.metrics.registry import MetricContext
from suite.models.layers import LayerSelectionError, capture_outputs, select_layers

CTX = MetricContext(device=torch.device("cpu"), seed=0)


def tiny_conv(dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 2, 3, stride=2),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(2 * 3 * 3, 5),
    ).to(dtype).eval()


def dense_reference(model, image, rows, cols, channels, context, names):
    """d(layer)/d(patch) by reverse mode (torch.autograd.functional.jacobian), float64, as (out, K)."""
    embed, primal = _patch_embedding(image, rows, cols, channels, context)
    refs = []
    for name in names:
        def f(p, name=name):
            with capture_outputs(model, [name]) as store:
                model(embed(p))
            return store[name].reshape(-1)

        refs.append(torch.autograd.functional.jacobian(f, primal).reshape(-1, primal.numel()))
    return refs, embed, primal


@pytest.mark.parametrize("context", ["image", "zero_padded"])
def test_forward_columns_equal_dense_reference_conv(context):
    model = tiny_conv()
    image = torch.randn(3, 7, 7, dtype=torch.float64)
    rows, cols = patch_slices((7, 7), (3, 2), [2, 3])
    names = ["0", "1", "3", "5"]
    refs, embed, primal = dense_reference(model, image, rows, cols, [0, 2], context, names)
    fj = forward_jacobians(model, embed, primal, names, chunk_size=4)
    assert [tuple(j.shape) for j in fj.jacobians] == [(4 * 49, 12), (4 * 49, 12), (18, 12), (5, 12)]
    for j, ref in zip(fj.jacobians, refs):
        torch.testing.assert_close(j, ref, rtol=1e-10, atol=1e-12)


def test_forward_columns_equal_jacrev_mlp():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 9), nn.GELU(), nn.Linear(9, 4), nn.Tanh()).double().eval()
    x = torch.randn(6, dtype=torch.float64)
    fj = forward_jacobians(model, lambda p: p[None], x, ["0", "1", "3"], chunk_size=2)
    ref_full = torch.func.jacrev(lambda p: model(p[None])[0])(x)
    ref_first = torch.func.jacrev(lambda p: model[0](p[None])[0])(x)
    torch.testing.assert_close(fj.jacobians[2], ref_full, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fj.jacobians[0], ref_first, rtol=1e-10, atol=1e-12)


def test_float32_forward_matches_float64_reference():
    model = tiny_conv(torch.float64)
    image = torch.randn(3, 7, 7, dtype=torch.float64)
    rows, cols = patch_slices((7, 7), (3, 3), "center")
    refs, _, _ = dense_reference(model, image, rows, cols, [0, 1, 2], "image", ["5"])
    embed32, primal32 = _patch_embedding(image.float(), rows, cols, [0, 1, 2], "image")
    fj = forward_jacobians(tiny_conv(torch.float32), embed32, primal32, ["5"])
    torch.testing.assert_close(fj.jacobians[0].double(), refs[0], rtol=1e-4, atol=1e-5)


def planted_linear(c, h, w, out, r, dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(2)
    lin = nn.Linear(c * h * w, out, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out, r, dtype=torch.float64) @ torch.randn(r, c * h * w, dtype=torch.float64))
    return nn.Sequential(nn.Flatten(), lin).to(dtype).eval()


@pytest.mark.parametrize(("r", "expected"), [(5, 5), (20, 12), (0, 0)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_planted_rank_is_exact(r, expected, dtype):
    """Partial Jacobian of x -> W x is W's patch columns: rank min(r, K) with K = 2 * 2 * 3 = 12."""
    model = planted_linear(3, 6, 6, 30, r)
    data = Dataset(torch.randn(2, 3, 6, 6))
    values = partial_jacobian_rank(
        model, data, PartialJacobianParams(patch=[2, 2], layers=["1"], n_inputs=2, dtype=dtype), CTX
    )
    assert values["K"] == 12
    assert values["ranks"] == [[expected], [expected]]
    assert values["full_ranks"] == [12]


def test_contexts_differ_only_in_evaluation_point():
    image = torch.randn(3, 8, 8, dtype=torch.float64)
    rows, cols = patch_slices((8, 8), (4, 4), "center")
    assert (rows.start, cols.start) == (2, 2)
    emb_i, p_i = _patch_embedding(image, rows, cols, [0, 1, 2], "image")
    emb_z, p_z = _patch_embedding(image, rows, cols, [0, 1, 2], "zero_padded")
    torch.testing.assert_close(p_i, p_z)  # same primal: the patch values
    torch.testing.assert_close(emb_i(p_i)[0], image)  # image context evaluates at the image
    zero_outside = torch.zeros_like(image)
    zero_outside[:, 2:6, 2:6] = image[:, 2:6, 2:6]
    torch.testing.assert_close(emb_z(p_z)[0], zero_outside)  # released code: zero outside the patch
    q = torch.randn_like(p_i)  # both are the same affine map of p up to a constant offset
    torch.testing.assert_close(emb_i(q) - emb_z(q), emb_i(p_i) - emb_z(p_i))
    # a linear network has the same Jacobian at any point; a nonlinear one does not
    lin = planted_linear(3, 8, 8, 10, 40)
    nonlin = tiny_conv()
    for model, same in ((lin, True), (nonlin, False)):
        j_i = forward_jacobians(model, emb_i, p_i, [list(dict(model.named_children()))[-1]]).jacobians[0]
        j_z = forward_jacobians(model, emb_z, p_z, [list(dict(model.named_children()))[-1]]).jacobians[0]
        assert torch.allclose(j_i, j_z) is same


def test_chunked_equals_unchunked_and_budget_picks_chunk():
    model = tiny_conv()
    data = Dataset(torch.randn(1, 3, 7, 7, dtype=torch.float64))
    base = {"patch": [3, 3], "layers": ["0", "1", "3", "5"], "n_inputs": 1, "dtype": "float64"}
    full = partial_jacobian_rank(model, data, PartialJacobianParams(**base, chunk_size=27), CTX)
    one = partial_jacobian_rank(model, data, PartialJacobianParams(**base, chunk_size=1), CTX)
    five = partial_jacobian_rank(model, data, PartialJacobianParams(**base, chunk_size=5), CTX)
    tiny = partial_jacobian_rank(model, data, PartialJacobianParams(**base, memory_budget_mb=1e-4), CTX)
    assert full["ranks"] == one["ranks"] == five["ranks"] == tiny["ranks"]
    assert (full["n_chunks"], one["n_chunks"], five["n_chunks"]) == (1, 27, 6)
    assert tiny["chunk_size"] == 1
    for a, b in zip(full["singular_values"], one["singular_values"]):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-12, atol=1e-14)


class _OOMOnce(nn.Module):
    """Raises an out-of-memory error the first time it runs inside the transformed (chunked) pass."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 2:  # call 1: the plain forward that sizes the outputs; call 2: the first chunk
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return x


def test_out_of_memory_halves_the_chunk():
    model = nn.Sequential(nn.Linear(5, 7), _OOMOnce(), nn.Tanh()).double().eval()
    x = torch.randn(5, dtype=torch.float64)
    fj = forward_jacobians(model, lambda p: p[None], x, ["2"], chunk_size=4)
    assert (fj.oom_retries, fj.chunk_size, fj.n_chunks) == (1, 2, 3)
    torch.testing.assert_close(fj.jacobians[0], torch.func.jacrev(lambda p: model(p[None])[0])(x))


def test_params_are_strict_and_metric_registered():
    mdef = METRICS.get("partial_jacobian_rank")
    assert mdef.needs_data and mdef.params is PartialJacobianParams
    with pytest.raises(ValidationError):
        PartialJacobianParams(patchsize=[4, 4])
    with pytest.raises(ValidationError):
        PartialJacobianParams(context="padded")
    with pytest.raises(ValidationError):
        PartialJacobianParams(position=[1])
    p = PartialJacobianParams()
    assert (p.patch, p.position, p.context, p.n_inputs, p.tolerance.rule) == ([16, 16], "center", "image", 10, "feng")
    assert patch_slices((224, 224), (16, 16), "center") == (slice(104, 120), slice(104, 120))


def test_select_layers_table1_counts_and_errors():
    import timm

    r18 = timm.create_model("resnet18")
    points = select_layers(r18)
    assert len(points) == 11
    assert points[0] == ("stem", "maxpool") and points[-2:] == [("pool", "global_pool"), ("logits", "fc")]
    assert len(select_layers(timm.create_model("resnet50"))) == 19
    assert select_layers(r18, ["layer1.0", "fc:input"]) == [("layer1.0", "layer1.0"), ("fc:input", "fc:input")]
    with pytest.raises(LayerSelectionError, match="layer1.0"):
        select_layers(r18, ["layer1.00"])
    with pytest.raises(LayerSelectionError, match="auto"):
        select_layers(nn.Module())
    seq = nn.Sequential(nn.Linear(3, 3), nn.Identity(), nn.Linear(3, 3), nn.ReLU(), nn.Dropout())
    assert [m for _, m in select_layers(seq)] == ["0", "2", "3"]


def test_resnet18_end_to_end_small_input():
    """timm resnet18 (random init, ReLU(inplace=True), BN in eval) at 3x32x32 with a 4x4 patch (K = 48).

    Observed: every point has rank 48 up to layer3.1; layer4.0 onwards has rank 0 because timm zero-inits
    the last BN of each block (zero_init_last=True) so the residual branches vanish and the stride-2 1x1
    shortcuts of layer4 see only the top-left layer3 pixel, outside the central patch's footprint.
    With zero_init_last=False all 11 points have rank 48.
    """
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18")
    model.train()  # the metric must switch batch-norm to eval itself (and restore the flag)
    data = Dataset(torch.randn(2, 3, 32, 32))
    values = partial_jacobian_rank(model, data, PartialJacobianParams(patch=[4, 4], n_inputs=2), CTX)
    assert model.training
    assert values["K"] == 48 and len(values["mean_ranks"]) == 11
    mean = values["mean_ranks"]
    assert all(a >= b for a, b in zip(mean, mean[1:])), mean
    assert values["ranks_first"] == [48] * 7 + [0] * 4
    assert values["patch_rows"] == [14, 18]


def test_vit_tiny_end_to_end_forward_mode():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32).eval()
    data = Dataset(torch.randn(1, 3, 32, 32))
    values = partial_jacobian_rank(model, data, PartialJacobianParams(patch=[4, 4], n_inputs=1), CTX)
    assert len(values["layers"]) == 14 and values["layers"][-2:] == ["pool", "logits"]
    assert values["out_dims"][-2:] == [192, 1000]
    mean = values["mean_ranks"]
    assert all(a >= b for a, b in zip(mean, mean[1:])), mean
    assert values["ranks_first"] == [48] * 14


def test_report_hooks_render(tmp_path):
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from suite.runner.execute import jsonable

    model = planted_linear(3, 6, 6, 30, 5)
    values = partial_jacobian_rank(model, Dataset(torch.randn(2, 3, 6, 6)),
                                   PartialJacobianParams(patch=[2, 2], layers=["1"], n_inputs=2), CTX)
    values = json.loads(json.dumps(jsonable(values)))  # what the report reads back
    mdef = METRICS.get("partial_jacobian_rank")
    summary = mdef.summarize(values)
    assert summary["points"] == 1 and summary["rises"] == "none"
    headers, rows = mdef.details(values)
    assert len(rows) == 1 and rows[0][4] == 5
    figs = mdef.plot(values)
    assert [t for t, _ in figs] == ["partial rank vs depth", "normalised singular values per layer"]
    for _, fig in figs:
        fig.savefig(tmp_path / "f.png")
        plt.close(fig)


@pytest.mark.parametrize(
    ("name", "kwargs", "count"),
    [
        ("vit_tiny_patch16_224", {"img_size": 32}, 14),
        ("swin_tiny_patch4_window7_224", {"img_size": 32}, 14),
        ("gmixer_24_224", {"img_size": 32}, 26),
        ("resmlp_24_224", {"img_size": 32}, 26),
    ],
)
def test_auto_layers_of_transformers_and_mixers(name, kwargs, count):
    """Every block + pooled feature + logits; the pooled point equals timm's ``pre_logits`` output."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    points = select_layers(model)
    assert len(points) == count and [lab for lab, _ in points[-2:]] == ["pool", "logits"]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), capture_outputs(model, [m for _, m in points[-2:]]) as store:
        logits = model(x)
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(store[points[-2][1]].reshape(1, -1), pre.reshape(1, -1))
    torch.testing.assert_close(store[points[-1][1]].reshape(1, -1), logits)


def test_memory_mapped_jacobians_equal_in_memory_ones(tmp_path):
    """``storage_dir`` keeps the Jacobians in memory-mapped files; the values must not change."""
    from suite.metrics.rank_diminishing.partial_jacobian import _patch_embedding, forward_jacobians, patch_slices

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten()).eval()
    image = torch.randn(3, 8, 8)
    rows, cols = patch_slices((8, 8), [3, 3], "center")
    embed, primal = _patch_embedding(image, rows, cols, [0, 1, 2], "image")
    ram = forward_jacobians(net, embed, primal, ["0", "2"], chunk_size=5).jacobians
    disk = forward_jacobians(net, embed, primal, ["0", "2"], chunk_size=5, storage_dir=str(tmp_path)).jacobians
    assert [tuple(j.shape) for j in disk] == [(256, 27), (256, 27)]
    for a, b in zip(ram, disk):
        assert torch.equal(a, b)
    assert list(tmp_path.iterdir()) == []  # the files are unlinked once mapped
