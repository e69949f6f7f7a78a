"""SVR benchmark pairs (suite.bench.svr): small sizes run and agree, wrong references are caught.

Each pair runs at its small size and agrees with the NumPy reference, and the agreement checks catch a
deliberately wrong reference.
The small size is a vgg19 stand-in at 1/16 width (no timm model is built here: that takes seconds).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

from suite.bench import PAIRS, Pair, register_pair, run_pair
from suite.bench.svr import (
    SV_ATOL_FULL,
    SV_RTOL_FULL,
    OursSvr,
    _make,
    agree_full,
    agree_top,
    numpy_reference_svr,
    reference_weights,
    vgg_model,
)
from suite.metrics.svr.maps import svr_chain

CPU = torch.device("cpu")
PAIR_NAMES = ["svr_vgg19", "svr_vgg19_top128", "svr_vgg19_features"]


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def outputs() -> dict[str, tuple[Pair, OursSvr, object]]:
    """Per pair at the small size: the pair, ours and the reference (computed once)."""
    out = {}
    for name in PAIR_NAMES:
        pair = PAIRS.get(name).make(CPU, "small")
        out[name] = (pair, pair.ours(), pair.reference())
    return out


def test_pairs_are_registered_with_their_targets():
    assert set(PAIR_NAMES) <= set(PAIRS.names("svr_*"))
    assert PAIRS.get("svr_vgg19").target == 10.0
    assert PAIRS.get("svr_vgg19_features").target is None
    assert PAIRS.get("svr_vgg19_top128").target is None


def test_small_stand_in_has_vgg19_structure():
    model, k, desc = vgg_model("small")
    chain = svr_chain(model)
    names = [m.name for m in chain.maps]
    assert names[:16] == [f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)]
    assert names[16:] == ["pre_logits.fc1", "pre_logits.fc2", "head.fc"]
    assert [m.kernel for m in chain.maps] == [9] * 16 + [49, 1, 1]
    assert [tuple(m.weight.shape[:2]) for m in chain.maps[-3:]] == [(256, 32), (256, 256), (62, 256)]
    assert chain.skipped == []
    assert [n for n, _ in reference_weights(model)] == names
    assert k == 16 and "1/16" in desc


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_pair_runs_at_small_size_and_agrees(name):
    result = run_pair(name, CPU, "small", rounds=1)
    assert result.agreement == "agree"
    assert "stand-in" in result.size
    assert result.ours.median_s > 0 and result.reference.median_s > 0
    assert result.speedup == pytest.approx(result.reference.median_s / result.ours.median_s)


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_agreement_is_tight_at_small_size(outputs, name):
    pair, ours, ref = outputs[name]
    assert pair.agree(ours, ref) is None
    assert ours.values["significant_edges"] == ref.significant
    assert [tuple(d) for d in ours.values["internal_dims"]] == ref.internal_dims
    for a, b in zip(ours.result.adjacencies, ref.adjacencies, strict=True):
        np.testing.assert_allclose(a.numpy(), b, rtol=0, atol=1e-9)
    n_maps = 16 if name == "svr_vgg19_features" else 19
    assert len(ref.names) == n_maps and len(ref.significant) == n_maps - 1


def test_top_pair_keeps_the_top_k_and_svds_matches_the_full_svd(outputs):
    _, ours, ref = outputs["svr_vgg19_top128"]
    _, full, _ = outputs["svr_vgg19"]
    counts = [len(s) for s in ref.singular_values]
    assert counts == [min(16, len(s)) for s in full.values["singular_values"]]
    assert max(counts) == 16 and min(counts) == 4
    for top, whole in zip(ref.singular_values, full.values["singular_values"], strict=True):
        np.testing.assert_allclose(top, whole[: len(top)], rtol=1e-10)


def test_a_reference_with_off_by_one_internal_dims_is_caught(outputs):
    pair, ours, _ = outputs["svr_vgg19"]
    model, _, _ = vgg_model("small")
    wrong = numpy_reference_svr(reference_weights(model), dims_from=0)  # the released code's 0-based argmax
    assert "internal dimensions differ" in agree_full(ours, wrong)


def test_a_reference_with_chi2_1_thresholds_for_convs_is_caught(outputs):
    _, ours, ref = outputs["svr_vgg19_features"]
    model, _, _ = vgg_model("small")
    wrong = numpy_reference_svr(reference_weights(model, ["features.*"]), null_dof=lambda z: 1)
    assert "threshold" in agree_full(ours, wrong)
    assert wrong.significant != ref.significant  # the counts move too (threshold 10.27/c instead of 3.01/c)
    # with the thresholds check alone passed (copied), the counts still give it away
    assert "significant counts differ" in agree_full(ours, dataclasses.replace(wrong, thresholds=ref.thresholds))


def test_full_agreement_catches_tiny_errors(outputs):
    _, ours, ref = outputs["svr_vgg19"]
    sv = [s.copy() for s in ref.singular_values]
    sv[17][5] *= 1 + 10 * SV_RTOL_FULL
    assert "singular values differ" in agree_full(ours, dataclasses.replace(ref, singular_values=sv))
    counts = list(ref.significant)
    counts[16] += 1
    assert "significant counts differ" in agree_full(ours, dataclasses.replace(ref, significant=counts))
    # the norm-wise term: a small singular value may be off by 1e-8 of itself plus 1e-10 of sigma_1 (Gram driver)
    sv = [s.copy() for s in ref.singular_values]
    sv[17][-1] += 0.5 * SV_ATOL_FULL * sv[17][0]
    assert sv[17][-1] / ref.singular_values[17][-1] - 1 > SV_RTOL_FULL
    assert agree_full(ours, dataclasses.replace(ref, singular_values=sv)) is None
    thresholds = list(ref.thresholds)
    thresholds[3] *= 1 + 1e-9
    assert "threshold" in agree_full(ours, dataclasses.replace(ref, thresholds=thresholds))


def test_top_agreement_tolerances(outputs):
    _, ours, ref = outputs["svr_vgg19_top128"]
    counts = list(ref.significant)
    counts[16] += 1  # within the stated tolerance (max(2, 1%))
    assert agree_top(ours, dataclasses.replace(ref, significant=counts)) is None
    counts[16] += 10
    assert "significant counts" in agree_top(ours, dataclasses.replace(ref, significant=counts))
    adjs = [a.copy() for a in ref.adjacencies]
    adjs[16][1, 2] += 1e-5
    assert "top-32 adjacency differs" in agree_top(ours, dataclasses.replace(ref, adjacencies=adjs))
    dims = list(ref.internal_dims)
    dims[2] = (dims[2][0] + 1, dims[2][1])
    assert "internal dimensions differ" in agree_top(ours, dataclasses.replace(ref, internal_dims=dims))


def test_run_pair_refuses_a_wrong_svr_reference():
    @register_pair(
        target=10.0, description="test pair: SVR vs a 0-based internal dims reference", name="_test_svr_wrong_dims"
    )
    def _wrong(device, size):
        return _make(size, None, top=False, reference=functools.partial(numpy_reference_svr, dims_from=0))

    with pytest.raises(AssertionError, match="disagree: internal dimensions differ"):
        run_pair("_test_svr_wrong_dims", CPU, "small", rounds=1)


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        PAIRS.get("svr_vgg19").make(CPU, "huge")
