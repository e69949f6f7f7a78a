"""The Hessian benchmark pair computes the same H_L on both sides, and its agreement check catches a wrong one."""

from __future__ import annotations

import pytest
import torch

from suite.bench import PAIRS

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_hessian_pair_sides_agree_and_a_wrong_reference_is_caught():
    pair = PAIRS.get("hessian_exact_vs_autograd").make(torch.device("cpu"), "small")
    ours, reference = pair.ours(), pair.reference()
    assert ours.shape == reference.shape == (312, 312)
    assert pair.agree(ours, reference) is None
    wrong = reference.clone()
    wrong[0, 1] += 1e-6 * float(reference.abs().max())
    assert "H_L differs" in pair.agree(ours, wrong)


def test_unknown_size_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: small, default"):
        PAIRS.get("hessian_exact_vs_autograd").make(torch.device("cpu"), "huge")
