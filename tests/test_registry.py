"""The generic name -> entry registry: natural order, duplicates, unknown names with suggestions, filters."""

from __future__ import annotations

import pytest

from suite.errors import RanksuiteError, RegistryError
from suite.registry import Registry, natural_key, suggest, unknown_name_message


def entry_fn():
    """A function used as the origin of a registration."""


@pytest.fixture
def nets() -> Registry[str]:
    reg: Registry[str] = Registry("net")
    for name in ["mlp10", "resnet18", "mlp2", "MLP3", "planted", "mlp1", "resnet101", "resnet50"]:
        reg.add(name, f"<{name}>")
    return reg


def test_names_sort_naturally(nets):
    assert nets.names() == ["mlp1", "mlp2", "MLP3", "mlp10", "planted", "resnet18", "resnet50", "resnet101"]
    assert [name for name, _ in nets.items()] == nets.names()
    assert dict(nets.items())["mlp10"] == "<mlp10>"


def test_natural_key():
    assert sorted(["a10b2", "a2b10", "a2b9", "a10b1"], key=natural_key) == ["a2b9", "a2b10", "a10b1", "a10b2"]
    assert natural_key("Conv2d") == ["conv", 2, "d"]


def test_get_and_contains(nets):
    assert nets.get("resnet50") == "<resnet50>"
    assert "planted" in nets and "plant" not in nets
    assert len(nets) == 8


def test_duplicate_registration_raises_value_error(nets):
    reg: Registry[str] = Registry("metric")
    reg.add("spectrum", "first", origin=entry_fn)
    with pytest.raises(ValueError, match=r"metric 'spectrum' is already registered \(.*test_registry\.py:\d+\)"):
        reg.add("spectrum", "second")
    assert reg.get("spectrum") == "first"
    assert len(reg) == 1
    with pytest.raises(ValueError, match="net 'mlp2' is already registered"):
        nets.add("mlp2", "again")


def test_origin_is_file_and_line_of_the_registered_function():
    reg: Registry[str] = Registry("thing")
    reg.add("x", "entry", origin=entry_fn)
    reg.add("y", "entry")
    assert reg.origin("x") == f"{__file__}:{entry_fn.__code__.co_firstlineno}"
    assert reg.origin("y") == "?"
    with pytest.raises(RegistryError):
        reg.origin("z")


def test_unknown_name_lists_valid_names_and_close_match(nets):
    with pytest.raises(RegistryError) as info:
        nets.get("resnet19")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, RanksuiteError)
    assert str(err) == (
        "unknown net 'resnet19' (did you mean 'resnet18' or 'resnet101' or 'resnet50'?). "
        "Valid: mlp1, mlp2, MLP3, mlp10, planted, resnet18, resnet50, resnet101"
    )


def test_unknown_name_without_close_match(nets):
    with pytest.raises(RegistryError) as info:
        nets.get("transformer")
    assert str(info.value) == "unknown net 'transformer'. Valid: mlp1, mlp2, MLP3, mlp10, planted, resnet18, resnet50, resnet101"


def test_unknown_name_in_empty_registry():
    with pytest.raises(RegistryError) as info:
        Registry("theory").get("x")
    assert str(info.value) == "unknown theory 'x'. Valid: none registered"


def test_suggest_and_message_helpers():
    assert suggest("plnated", ["mlp", "planted", "planet"]) == ["planted", "planet"]
    assert suggest("zzz", ["mlp", "planted"]) == []
    assert unknown_name_message("metric kind", "spectrm", ["spectrum"]) == (
        "unknown metric kind 'spectrm' (did you mean 'spectrum'?). Valid: spectrum"
    )


def test_fnmatch_filter(nets):
    assert nets.names("mlp*") == ["mlp1", "mlp2", "mlp10"]  # case sensitive: MLP3 is not matched
    assert nets.names("resnet?0*") == ["resnet50", "resnet101"]
    assert nets.names("resnet[15]*") == ["resnet18", "resnet50", "resnet101"]
    assert nets.names("*e*") == ["planted", "resnet18", "resnet50", "resnet101"]
    assert nets.names("planted") == ["planted"]
    assert nets.names("") == nets.names(None) == nets.names()


def test_real_registries_are_populated():
    from suite.compare import CHECKS
    from suite.metrics import METRICS
    from suite.models import BUILTIN_NETS, MODEL_SOURCES
    from suite.theory import THEORIES

    assert {"mlp", "planted"} <= set(BUILTIN_NETS.names())
    assert "timm" in MODEL_SOURCES
    assert "weight_spectrum" in METRICS
    assert {"baseline", "theory", "monotone"} <= set(CHECKS.names())
    assert "planted_product_rank" in THEORIES
    file, line = MODEL_SOURCES.origin("timm").rsplit(":", 1)
    assert file.endswith("suite/models/timm_source.py") and int(line) > 1
