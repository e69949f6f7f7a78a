"""Model sources (timm: random init, local checkpoints, offline pretrained) and datasets."""

from __future__ import annotations

import pytest
import torch

from suite.cli import main
from suite.data import load_dataset
from suite.errors import MissingResource
from suite.models import BuildContext, build_model
from suite.spec import expand_cases, load_spec

SPEC = """
name: models
reference: test
tier: {tier}
models:
  - {{id: net, source: timm, name: test_resnet, {extra}}}
metrics:
  - {{id: s, kind: weight_spectrum, checks: [{{kind: baseline, key: ranks}}]}}
cases: {{matrix: {{model: [net], metric: [s]}}}}
"""


def _case(tmp_path, extra: str = "", tier: str = "smoke"):
    path = tmp_path / "models.yaml"
    path.write_text(SPEC.format(extra=extra or "pretrained: false", tier=tier))
    return path, expand_cases(load_spec(path).spec)[0]


def test_timm_random_init_is_seeded(tmp_path):
    _, case = _case(tmp_path)
    a = build_model(case.model, BuildContext(seed=1))
    b = build_model(case.model, BuildContext(seed=1))
    c = build_model(case.model, BuildContext(seed=2))
    wa, wb, wc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)
    assert not a.training  # eval mode: BatchNorm uses running statistics


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_timm_local_checkpoint_is_loaded(tmp_path, suffix):
    import timm

    torch.manual_seed(123)
    source = timm.create_model("test_resnet")
    state = {k: v.clone() for k, v in source.state_dict().items()}
    ckpt = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": state}, ckpt)  # nested under state_dict, as training scripts save it
    else:
        from safetensors.torch import save_file

        save_file(state, str(ckpt))
    _, case = _case(tmp_path, f"weights: {ckpt}")
    model = build_model(case.model, BuildContext(seed=0))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    ckpt = tmp_path / "mlp.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), ckpt)
    _, case = _case(tmp_path, f"weights: {ckpt}")
    with pytest.raises(ValueError, match="does not fit test_resnet: missing"):
        build_model(case.model, BuildContext(seed=0))


def test_missing_checkpoint_is_a_missing_resource(tmp_path):
    _, case = _case(tmp_path, f"weights: {tmp_path / 'absent.pt'}")
    with pytest.raises(MissingResource, match="checkpoint not found"):
        build_model(case.model, BuildContext(seed=0))


def test_pretrained_offline_is_an_error_in_ci_and_a_skip_in_the_paper_tier(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-cache"))
    dirs = ["--runs-dir", str(tmp_path / "runs"), "--baselines-dir", str(tmp_path / "bl"), "--reports-dir", str(tmp_path / "rep")]
    path, _ = _case(tmp_path, "pretrained: true", tier="ci")
    assert main(["run", str(path), *dirs, "--no-progress"]) == 2  # crashed case: offline and not cached
    report = (tmp_path / "rep" / "models.md").read_text()
    assert "not in the local cache" in report
    path, _ = _case(tmp_path, "pretrained: true", tier="paper")
    assert main(["run", str(path), *dirs, "--no-progress", "--cache", "never"]) == 0  # skipped, not passed
    report = (tmp_path / "rep" / "models.md").read_text()
    assert "0 pass" in report and "1 skipped" in report
    assert "⏭ skipped" in report


@pytest.mark.parametrize(
    ("init", "check"),
    [
        ("kaiming", lambda w: abs(float(w.var()) - 2 / 200) < 0.1 * 2 / 200),
        ("normal", lambda w: abs(float(w.var()) - 1 / 200) < 0.1 * 1 / 200),
        ("orthogonal", lambda w: torch.allclose(w @ w.T, torch.eye(w.shape[0]), atol=1e-5)),
    ],
)
def test_builtin_mlp_inits(init, check, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: m\nreference: r\ntier: smoke\n"
        f"models: [{{id: m, source: builtin, name: mlp, widths: [200, 100, 3], init: {init}, activation: tanh}}]\n"
        "metrics: [{id: s, kind: weight_spectrum}]\ncases: {matrix: {model: [m], metric: [s]}}\n"
    )
    case = expand_cases(load_spec(path).spec)[0]
    model = build_model(case.model, BuildContext(seed=0))
    assert [type(m).__name__ for m in model] == ["Linear", "Tanh", "Linear"]
    assert float(model[0].bias.abs().sum()) == 0.0
    assert check(model[0].weight.detach())


def _dataset(tmp_path, entry: str):
    path = tmp_path / "d.yaml"
    path.write_text(
        "name: d\nreference: r\ntier: smoke\nmodels: [{id: m, source: builtin, name: mlp, widths: [4, 3]}]\n"
        f"datasets: [{{id: d, {entry}}}]\nmetrics: [{{id: s, kind: weight_spectrum}}]\n"
        "cases: {matrix: {model: [m], metric: [s]}}\n"
    )
    return load_spec(path).spec.datasets[0]


def test_digits_is_the_real_bundled_data(tmp_path):
    full = load_dataset(_dataset(tmp_path, "kind: digits"), seed=0)
    assert full.inputs.shape == (1797, 64) and full.targets.shape == (1797,)
    assert float(full.inputs.max()) == 1.0 and float(full.inputs.min()) == 0.0
    assert torch.bincount(full.targets).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    sub = load_dataset(_dataset(tmp_path, "kind: digits, n: 100, layout: image"), seed=3)
    again = load_dataset(_dataset(tmp_path, "kind: digits, n: 100, layout: image"), seed=3)
    assert sub.inputs.shape == (100, 1, 8, 8)
    assert torch.equal(sub.inputs, again.inputs)


def test_generated_datasets_are_seeded_and_shaped(tmp_path):
    g = _dataset(tmp_path, "kind: gaussian, shape: [3, 5], n: 7, std: 2.0")
    a, b, c = load_dataset(g, 0), load_dataset(g, 0), load_dataset(g, 1)
    assert a.inputs.shape == (7, 3, 5)
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, c.inputs)
    s = load_dataset(_dataset(tmp_path, "kind: synthetic_images, shape: [3, 16, 16], n: 12"), seed=0)
    assert s.inputs.shape == (12, 3, 16, 16) and s.targets.tolist() == [i % 10 for i in range(12)]
    channel_means = s.inputs.mean(dim=(0, 2, 3))
    assert torch.allclose(channel_means, torch.zeros(3), atol=1e-5)  # standardised per channel


def test_pretrained_weights_are_read_from_the_local_hub_cache(tmp_path, monkeypatch):
    """A file laid out as huggingface_hub caches it is found without any network access."""
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    state = {k: v.clone() for k, v in timm.create_model("test_resnet").state_dict().items()}
    repo = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / "abc123" / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _, case = _case(tmp_path, "pretrained: true")
    model = build_model(case.model, BuildContext(seed=0))
    assert all(torch.equal(t, state[n]) for n, t in model.state_dict().items())
