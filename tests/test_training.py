"""Trained networks: the ``train:`` block, the deterministic trainer, the weight cache and the runner path."""

from __future__ import annotations

import hashlib
import json
import math
import time

import pytest
import torch

from conftest import BASE_SPEC, dedent_spec
from suite.cli import main
from suite.data import Dataset, load_dataset
from suite.errors import SpecError
from suite.models import BuildContext, build_model
from suite.spec import expand_cases, load_spec, load_spec_text
from suite.spec.expand import _canonical
from suite.training import (
    TrainConfig,
    TrainingError,
    cache_paths,
    cache_root,
    evaluate,
    train_model,
    train_or_load,
    training_definition,
    training_key,
)

#  1 name: trained
#  2 reference: ...
#  3 tier: smoke
#  4 defaults: ...
#  5 models:
#  6   - id: mlp
#  7     source: builtin
#  8     name: mlp
#  9     widths: [64, 32, 10]
# 10     train: {dataset: digits_train, epochs: 10, lr: 0.01}
# 11 datasets:
# 12   - {id: digits_train, kind: digits, split: train}
# 13   - {id: digits_val, kind: digits, split: validation}
SPEC = """\
name: trained
reference: "ranksuite test: a trained MLP on digits"
tier: smoke
defaults: {device: cpu, seed: 0, dtype: float32}
models:
  - id: mlp
    source: builtin
    name: mlp
    widths: [64, 32, 10]
    train: {dataset: digits_train, epochs: 10, lr: 0.01}
datasets:
  - {id: digits_train, kind: digits, split: train}
  - {id: digits_val, kind: digits, split: validation}
metrics:
  - {id: spectrum, kind: weight_spectrum}
cases:
  matrix: {model: [mlp], metric: [spectrum]}
"""
TRAIN = "train: {dataset: digits_train, epochs: 10, lr: 0.01}"


pytestmark = pytest.mark.usefixtures("one_thread_module")


def case_of(text: str = SPEC):
    """The single case of a spec text (validated, references checked)."""
    (case,) = expand_cases(load_spec_text(text).spec)
    return case


def key_of(case) -> str:
    return training_key(training_definition(case.model, case.train_dataset, seed=case.seed, dtype=case.dtype))


def build(case):
    return build_model(case.model, BuildContext(seed=case.seed, dtype=case.dtype))


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------- the spec


def test_train_block_is_parsed_and_resolved():
    case = case_of()
    assert case.model.train == TrainConfig(dataset="digits_train", epochs=10, lr=0.01)
    assert case.model.train.optimizer == "adam" and case.model.train.dtype == "float64"
    assert case.train_dataset.id == "digits_train" and case.train_dataset.split == "train"


def test_unknown_train_dataset_is_a_spec_error_at_its_line(write_spec):
    path = write_spec(SPEC.replace("dataset: digits_train, epochs", "dataset: digitz, epochs"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (loc,) = info.value.locations
    assert (loc.file, loc.line) == (str(path), 10)
    assert path.read_text().splitlines()[9][loc.col - 1 :].startswith("digitz")
    expected = "models.0.train.dataset: unknown dataset id 'digitz' to train on; defined: digits_train, digits_val"
    assert expected in loc.message


def test_misspelt_train_key_suggests_the_field(write_spec):
    path = write_spec(SPEC.replace("epochs: 10", "epoch: 10"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    messages = [loc.message for loc in info.value.locations]
    assert any("unknown key 'epoch'" in m and "did you mean 'epochs'?" in m for m in messages), messages


def test_momentum_needs_sgd():
    with pytest.raises(SpecError, match="momentum applies to optimizer sgd only"):
        case_of(SPEC.replace("lr: 0.01}", "lr: 0.01, momentum: 0.9}"))
    assert case_of(SPEC.replace("lr: 0.01}", "lr: 0.01, optimizer: sgd, momentum: 0.9}")).model.train.momentum == 0.9


def test_untrained_models_hash_exactly_as_before_train_existed():
    """Stored baselines are keyed by case hashes: an absent train: block must not enter the model dump."""
    from suite.metrics import METRICS

    for case in expand_cases(load_spec_text(BASE_SPEC).spec):
        assert case.model.train is None and case.train_dataset is None
        payload = {  # the payload of case_hash before train: existed
            "model": {k: v for k, v in _canonical(case.model, {"id", "description", "seed"}).items() if k != "train"},
            "dataset": _canonical(case.dataset, {"id", "description"}),
            "metric": {"kind": case.metric.kind, "params": case.metric.params.model_dump(mode="json")},
            "metric_version": METRICS.get(case.metric.kind).version,
            "seed": case.seed,
            "dtype": case.dtype,
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        assert case.hash == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_training_key_and_case_hash_follow_what_defines_the_weights():
    base = case_of()
    changed = {
        "lr": SPEC.replace("lr: 0.01", "lr: 0.02"),
        "epochs": SPEC.replace("epochs: 10", "epochs: 11"),
        "dataset": SPEC.replace("dataset: digits_train, epochs", "dataset: digits_val, epochs"),
        "dataset params": SPEC.replace("kind: digits, split: train}", "kind: digits, split: train, split_seed: 1}"),
        "build seed": SPEC.replace("seed: 0, dtype", "seed: 1, dtype"),
        "architecture": SPEC.replace("[64, 32, 10]", "[64, 16, 10]"),
    }
    for what, text in changed.items():
        case = case_of(text)
        assert key_of(case) != key_of(base), what
        assert case.hash != base.hash, what
    same = {  # ids and descriptions do not define weights
        "dataset id": SPEC.replace("digits_train", "dtrain"),
        "descriptions": SPEC.replace("    train:", "    description: hello\n    train:").replace(
            "split: train}", "split: train, description: d}"
        ),
    }
    for what, text in same.items():
        case = case_of(text)
        assert key_of(case) == key_of(base), what
        assert case.hash == base.hash, what
    untrained = case_of(SPEC.replace(f"    {TRAIN}\n", ""))
    assert untrained.hash != base.hash and untrained.train_dataset is None


# ---------------------------------------------------------------------------------------- the trainer


def test_same_config_gives_bitwise_identical_weights_and_leaves_the_global_rng():
    case = case_of(SPEC.replace("epochs: 10", "epochs: 2"))
    data = load_dataset(case.train_dataset, case.seed)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    first, second, reseeded = build(case), build(case), build(case)
    untrained = state(first)
    torch.set_rng_state(rng)
    rec1 = train_model(first, data, case.model.train)
    assert torch.equal(torch.get_rng_state(), rng)  # shuffling and dropout draw from their own streams
    rec2 = train_model(second, data, case.model.train)
    for name, tensor in state(first).items():
        assert torch.equal(tensor, state(second)[name]), name
        assert not torch.equal(tensor, untrained[name]), name
    assert rec1.epoch_loss == rec2.epoch_loss and rec1.final_train_accuracy == rec2.final_train_accuracy
    train_model(reseeded, data, case.model.train.model_copy(update={"seed": 1}))  # another shuffling order
    assert not torch.equal(state(reseeded)["0.weight"], state(first)["0.weight"])


def test_mlp_on_digits_train_split_generalises_to_validation():
    """[64, 32, 10] ReLU MLP, Adam lr 0.01, batch 64, 10 epochs on the 1438 train digits.

    Measured: 97.6 % train and 95.5 % validation accuracy (359 digits), about 0.1 s of training.
    """
    case = case_of()
    train = load_dataset(case.train_dataset, case.seed)
    val = load_dataset(load_spec_text(SPEC).spec.datasets[1], case.seed)
    assert val.info["split"] == "validation"
    model = build(case)
    t0 = time.perf_counter()
    record = train_model(model, train, case.model.train)
    elapsed = time.perf_counter() - t0
    loss, accuracy = evaluate(model, val)
    print(f"digits MLP: {elapsed:.2f}s, train accuracy {record.final_train_accuracy:.3f}, validation {accuracy:.3f}")
    assert accuracy > 0.90
    assert record.final_train_accuracy > 0.95 and record.final_train_accuracy >= accuracy
    assert record.steps == 10 * math.ceil(1438 / 64) and record.n_train == 1438
    assert len(record.epoch_loss) == 10 and record.epoch_loss[-1] < record.epoch_loss[0] / 4
    assert loss < 0.5
    params = list(model.parameters())
    assert all(p.dtype == torch.float32 and p.grad is None for p in params)  # back in the build dtype, no grads
    assert not model.training


def test_training_errors_are_explained():
    case = case_of(SPEC.replace("epochs: 10", "epochs: 1"))
    config = case.model.train
    with pytest.raises(TrainingError, match="needs a dataset with targets"):
        train_model(build(case), Dataset(torch.randn(8, 64)), config)
    with pytest.raises(TrainingError, match=r"logits of shape \(batch, >= 10 classes\); the model outputs \(64, 3\)"):
        train_model(torch.nn.Linear(64, 3), load_dataset(case.train_dataset, 0), config)
    with pytest.raises(TrainingError, match=r"cannot take the training inputs of shape \(64,\)"):
        train_model(torch.nn.Linear(40, 10), load_dataset(case.train_dataset, 0), config)
    diverging = config.model_copy(update={"lr": 1e300, "optimizer": "sgd"})
    with pytest.raises(TrainingError, match="training loss became"):
        train_model(build(case), load_dataset(case.train_dataset, 0), diverging)


# ---------------------------------------------------------------------------------------- the cache


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RANKSUITE_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("RANKSUITE_CACHE")
    assert cache_root() == __import__("pathlib").Path.home() / ".cache" / "ranksuite"


def test_train_or_load_trains_once_then_hits_the_cache(tmp_path):
    case = case_of(SPEC.replace("epochs: 10", "epochs: 2"))
    loads = []

    def load_data():
        loads.append(1)
        return load_dataset(case.train_dataset, case.seed)

    def run():
        return train_or_load(
            case.model, lambda: build(case), case.train_dataset, load_data,
            seed=case.seed, dtype=case.dtype, cache_dir=tmp_path,
        )

    model1, record1, hit1 = run()
    weights, record_path = cache_paths(key_of(case), tmp_path)
    assert not hit1 and weights.is_file() and record_path.is_file()
    assert not list(weights.parent.glob(".*.tmp"))  # no temporary files left behind
    stamps = (weights.stat().st_mtime_ns, record_path.stat().st_mtime_ns)
    model2, record2, hit2 = run()
    assert hit2 and loads == [1]  # the dataset was not even loaded the second time
    assert (weights.stat().st_mtime_ns, record_path.stat().st_mtime_ns) == stamps  # nothing rewritten
    assert record2 == record1
    for name, tensor in state(model1).items():
        assert torch.equal(tensor, state(model2)[name]), name
    assert not model2.training and next(model2.parameters()).dtype == torch.float32
    stored = json.loads(record_path.read_text())
    assert stored["key"] == key_of(case) and stored["definition"]["train"]["lr"] == 0.01
    assert stored["definition"]["dataset"] == {**stored["definition"]["dataset"], "kind": "digits", "split": "train"}
    assert "dataset" not in stored["definition"]["train"]  # the id is replaced by the dataset's content


# ---------------------------------------------------------------------------------------- the runner


def _run(path, tmp_path, run_id: str, *extra: str) -> list[dict]:
    dirs = ["--runs-dir", str(tmp_path / "runs"), "--baselines-dir", str(tmp_path / "bl")]
    dirs += ["--reports-dir", str(tmp_path / "rep")]
    code = main(["run", str(path), *dirs, "--no-progress", "--run-id", run_id, *extra])
    assert code in (0, 4), code  # 4: no baseline yet
    lines = (tmp_path / "runs" / run_id / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_ranksuite_run_trains_records_and_reuses_the_weights(write_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("RANKSUITE_CACHE", str(tmp_path / "cache"))
    path = write_spec(SPEC.replace("epochs: 10", "epochs: 3"))
    (first,) = _run(path, tmp_path, "r1")
    assert first["status"] == "ok", first.get("error")
    training = first["training"]
    assert training["cache_hit"] is False and training["dataset"] == "digits_train"
    assert training["cache_path"].startswith(str(tmp_path / "cache" / "trained"))
    assert training["epochs"] == 3 and training["final_train_accuracy"] > 0.9
    assert first["build_s"] >= training["time_s"]  # training is part of building
    (second,) = _run(path, tmp_path, "r2", "--cache", "never")  # recompute the case: the weights come from the cache
    assert second["training"]["cache_hit"] is True
    assert second["training"]["cache_path"] == training["cache_path"]
    assert second["values"] == first["values"]
    assert first["values"]["stable_ranks"] != _untrained_values(tmp_path, write_spec)["stable_ranks"]


def _untrained_values(tmp_path, write_spec) -> dict:
    path = write_spec(SPEC.replace(f"    {TRAIN}\n", "").replace("name: trained", "name: untrained"), "untrained.yaml")
    (rec,) = _run(path, tmp_path, "u1")
    assert "training" not in rec
    return rec["values"]


TIMM_SPEC = """
name: timm_trained
reference: "ranksuite test: a timm convnet trained on digits images"
tier: smoke
defaults: {device: cpu, seed: 0, dtype: float32}
models:
  - id: net
    source: timm
    name: test_resnet
    input_size: [1, 8, 8]
    kwargs: {in_chans: 1, num_classes: 10}
    train: {dataset: images, epochs: 1, lr: 0.01}
datasets:
  - {id: images, kind: digits, split: train, layout: image, n: 256}
metrics:
  - {id: spectrum, kind: weight_spectrum}
cases:
  matrix: {model: [net], metric: [spectrum]}
"""


def test_timm_model_trains_through_the_runner(write_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("RANKSUITE_CACHE", str(tmp_path / "cache"))
    path = write_spec(dedent_spec(TIMM_SPEC))
    (rec,) = _run(path, tmp_path, "t1")
    assert rec["status"] == "ok", rec.get("error")
    training = rec["training"]
    assert training["cache_hit"] is False and training["steps"] == 4 and training["n_train"] == 256
    from safetensors.torch import load_file

    trained = load_file(training["cache_path"])
    case = expand_cases(load_spec(path).spec)[0]
    untrained = build(case).state_dict()
    assert trained.keys() == untrained.keys()
    changed = [k for k in trained if trained[k].is_floating_point() and not torch.equal(trained[k], untrained[k])]
    assert "fc.weight" in changed and len(changed) > len(trained) // 2  # weights and BatchNorm statistics moved
    assert trained["fc.weight"].dtype == torch.float32
