"""Train/validation splits (suite.data.splits) of digits and MNIST-1D, and the MNIST-1D dataset itself."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from suite.data import DATASETS, load_dataset
from suite.data.digits import DIGITS_N
from suite.data.mnist1d import generate_mnist1d
from suite.data.splits import split_indices, split_sizes
from suite.errors import SpecError
from suite.spec import load_spec

HEAD = """\
name: d
reference: r
tier: smoke
models: [{id: m, source: builtin, name: mlp, widths: [4, 3]}]
metrics: [{id: s, kind: weight_spectrum}]
cases: {matrix: {model: [m], metric: [s]}}
"""


def entries(write_spec, *datasets: str) -> list:
    """Validated dataset entries of a spec declaring ``datasets`` (each the inside of a flow mapping)."""
    lines = "".join(f"  - {{id: d{i}, {d}}}\n" for i, d in enumerate(datasets))
    return list(load_spec(write_spec(HEAD + "datasets:\n" + lines)).spec.datasets)


# ---------------------------------------------------------------------------------------- the split helper


@pytest.mark.parametrize(("n", "fraction"), [(1797, 0.2), (5000, 0.2), (10, 0.5), (7, 0.01), (7, 0.99)])
def test_parts_are_disjoint_sorted_and_cover_everything(n, fraction):
    train = split_indices(n, "train", fraction, 3)
    val = split_indices(n, "validation", fraction, 3)
    n_train, n_val = split_sizes(n, fraction)
    assert (len(train), len(val)) == (n_train, n_val)
    assert n_train >= 1 and n_val >= 1
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(n))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    assert torch.equal(split_indices(n, "all", fraction, 3), torch.arange(n))


def test_split_sizes_round_the_fraction():
    assert split_sizes(1797, 0.2) == (1438, 359)  # 359.4 rounds to 359
    assert split_sizes(5000, 0.2) == (4000, 1000)
    with pytest.raises(ValueError, match="cannot split 1 sample"):
        split_sizes(1, 0.5)


def test_same_split_seed_same_split_other_seed_other_split():
    a = split_indices(1797, "validation", 0.2, 0)
    assert torch.equal(a, split_indices(1797, "validation", 0.2, 0))
    assert not torch.equal(a, split_indices(1797, "validation", 0.2, 1))


# ---------------------------------------------------------------------------------------- digits


def test_digits_train_and_validation_partition_the_images(write_spec):
    full, train, val = entries(
        write_spec, "kind: digits", "kind: digits, split: train", "kind: digits, split: validation"
    )
    x, y = load_dataset(full, 0).inputs, load_dataset(full, 0).targets
    t, v = load_dataset(train, 0), load_dataset(val, 0)
    assert (t.inputs.shape, v.inputs.shape) == ((1438, 64), (359, 64))
    idx_t, idx_v = split_indices(DIGITS_N, "train", 0.2, 0), split_indices(DIGITS_N, "validation", 0.2, 0)
    assert torch.equal(t.inputs, x[idx_t]) and torch.equal(t.targets, y[idx_t])
    assert torch.equal(v.inputs, x[idx_v]) and torch.equal(v.targets, y[idx_v])
    assert t.info["split"] == "train" and t.info["n_split"] == 1438 and t.info["split_seed"] == 0
    assert v.info == {**v.info, "split": "validation", "n_total": 1797, "n_split": 359, "n": 359}
    assert bool((torch.bincount(v.targets, minlength=10) > 0).all())  # every class in validation


def test_digits_split_ignores_the_case_seed_and_subsets_after_splitting(write_spec):
    val, val_sub, val_other = entries(
        write_spec,
        "kind: digits, split: validation",
        "kind: digits, split: validation, n: 50",
        "kind: digits, split: validation, split_seed: 1",
    )
    assert torch.equal(load_dataset(val, 0).inputs, load_dataset(val, 7).inputs)  # fixed split
    assert not torch.equal(load_dataset(val, 0).inputs, load_dataset(val_other, 0).inputs)
    whole = load_dataset(val, 0).inputs
    sub = load_dataset(val_sub, 3).inputs
    assert sub.shape == (50, 64)
    assert all(any(torch.equal(row, w) for w in whole) for row in sub)  # the subset is drawn from the part


def test_digits_standard_scale_uses_the_train_statistics(write_spec):
    raw_t, raw_v, std_t, std_v = entries(
        write_spec,
        "kind: digits, split: train, scale: raw",
        "kind: digits, split: validation, scale: raw",
        "kind: digits, split: train, scale: standard",
        "kind: digits, split: validation, scale: standard",
    )
    rt, rv = load_dataset(raw_t, 0).inputs.double(), load_dataset(raw_v, 0).inputs.double()
    mean, std = rt.mean(0), rt.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    st, sv = load_dataset(std_t, 0).inputs, load_dataset(std_v, 0).inputs
    assert torch.allclose(st.double(), (rt - mean) / std, atol=1e-5)
    assert torch.allclose(sv.double(), (rv - mean) / std, atol=1e-5)  # the same transform, not its own statistics
    assert st.mean(0).abs().max() < 1e-5
    assert sv.mean(0).abs().max() > 1e-3  # validation is not re-centred
    # pixels constant in the train part are only centred: validation pixels there are not blown up by 1/1e-6
    assert float(sv.abs().max()) < 100.0


def test_digits_default_split_is_everything_as_before(write_spec):
    (full,) = entries(write_spec, "kind: digits, scale: standard")
    from sklearn.datasets import load_digits

    x = torch.as_tensor(load_digits().data, dtype=torch.float32)
    old = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)  # the behaviour before splits existed
    assert torch.equal(load_dataset(full, 0).inputs, old)


def test_digits_subset_larger_than_the_part_is_a_spec_error(write_spec):
    with pytest.raises(SpecError, match=r"n = 400 exceeds the 359 images of the validation part") as info:
        entries(write_spec, "kind: digits, split: validation, n: 400")
    assert info.value.locations[0].line == 8  # the dataset's line


# ---------------------------------------------------------------------------------------- MNIST-1D


def test_mnist1d_is_registered():
    assert "mnist1d" in DATASETS.names()


def test_mnist1d_default_split_shapes_and_partition(write_spec):
    full, train, val, chan = entries(
        write_spec,
        "kind: mnist1d",
        "kind: mnist1d, split: train",
        "kind: mnist1d, split: validation",
        "kind: mnist1d, split: validation, layout: channels",
    )
    f, t, v, c = (load_dataset(e, 0) for e in (full, train, val, chan))
    assert f.inputs.shape == (5000, 40) and t.inputs.shape == (4000, 40) and v.inputs.shape == (1000, 40)
    assert c.inputs.shape == (1000, 1, 40) and torch.equal(c.inputs[:, 0], v.inputs)
    assert f.inputs.dtype == torch.float32 and f.targets.dtype == torch.int64
    assert torch.bincount(f.targets).tolist() == [500] * 10
    idx_t, idx_v = split_indices(5000, "train", 0.2, 0), split_indices(5000, "validation", 0.2, 0)
    assert torch.equal(t.inputs, f.inputs[idx_t]) and torch.equal(v.targets, f.targets[idx_v])
    assert abs(float(f.inputs.mean())) < 1e-4 and abs(float(f.inputs.std()) - 1.0) < 1e-3  # make_dataset standardises
    assert t.info["generator_seed"] == 42 and v.info["n_split"] == 1000


def test_mnist1d_matches_the_package_and_keeps_the_global_rng():
    from mnist1d.data import get_dataset_args, make_dataset

    random.seed(11)
    np.random.seed(11)
    expected = (random.random(), np.random.rand())
    random.seed(11)
    np.random.seed(11)
    generate_mnist1d.cache_clear()
    x, y = generate_mnist1d(100, 5)
    assert (random.random(), np.random.rand()) == expected  # make_dataset reseeded both; the states were restored
    args = get_dataset_args()
    args.num_samples, args.seed = 100, 5
    ref = make_dataset(args)
    assert np.array_equal(x, np.concatenate([ref["x"], ref["x_test"]]))
    assert np.array_equal(y, np.concatenate([ref["y"], ref["y_test"]]))
    assert x.shape == (100, 40) and not x.flags.writeable  # the in-process cache cannot be mutated


def test_mnist1d_samples_must_fill_whole_classes(write_spec):
    with pytest.raises(SpecError, match="n_samples must be a multiple of 10"):
        entries(write_spec, "kind: mnist1d, n_samples: 105")
