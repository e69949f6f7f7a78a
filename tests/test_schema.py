"""The JSON schema of specs (for YAML editor plugins) and the committed copy of it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import BASE_SPEC
from suite.cli import main
from suite.data import DATASETS
from suite.models import BUILTIN_NETS
from suite.spec import spec_json_schema

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
COMMITTED = ROOT / "suite" / "spec" / "spec.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = spec_json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def messages(error: jsonschema.ValidationError) -> list[str]:
    """The message of ``error`` and of every error nested in its ``context`` (oneOf/anyOf branches)."""
    out = [error.message]
    for sub in error.context or []:
        out.extend(messages(sub))
    return out


def all_messages(validator: jsonschema.Draft7Validator, instance: dict) -> list[str]:
    return [m for err in validator.iter_errors(instance) for m in messages(err)]


def test_schema_is_a_valid_draft7_schema():
    schema = spec_json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["title"] == "ranksuite spec"
    assert schema["additionalProperties"] is False
    assert {"name", "reference", "tier", "models", "metrics", "cases"} <= set(schema["required"])


def test_there_are_specs_to_check():
    assert ROOT / "specs" / "smoke.yaml" in SPECS


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_committed_spec_validates(validator, path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_base_spec_and_list_of_grids_validate(validator):
    data = yaml.safe_load(BASE_SPEC)
    assert list(validator.iter_errors(data)) == []
    grid = data["cases"]["matrix"]
    data["cases"]["matrix"] = [grid, {"model": ["planted"], "metric": ["planted_rank"]}]
    assert list(validator.iter_errors(data)) == []
    data["cases"]["matrix"] = "mlp"
    assert list(validator.iter_errors(data)) != []


def test_schema_rejects_unknown_key(validator):
    data = yaml.safe_load(BASE_SPEC)
    data["models"][0]["actvation"] = "relu"
    found = all_messages(validator, data)
    assert "Additional properties are not allowed ('actvation' was unexpected)" in found
    data["models"][0]["activation"] = data["models"][0].pop("actvation")
    assert all_messages(validator, data) == []

    data["tiers"] = "smoke"
    assert "Additional properties are not allowed ('tiers' was unexpected)" in all_messages(validator, data)


def test_schema_rejects_unknown_metric_kind(validator):
    data = yaml.safe_load(BASE_SPEC)
    data["metrics"][1]["kind"] = "weight_spectrm"
    errors = list(validator.iter_errors(data))
    assert errors
    assert all(list(e.absolute_path)[:2] == ["metrics", 1] for e in errors)  # the entry (or its kind)
    assert any("'weight_spectrum'" in m for m in all_messages(validator, data))  # names the valid kind(s)
    data["metrics"][1]["kind"] = "weight_spectrum"
    assert list(validator.iter_errors(data)) == []


def test_schema_enumerates_registered_kinds():
    defs = spec_json_schema()["$defs"]

    def consts(field: str) -> set[str]:
        return {d["properties"][field]["const"] for d in defs.values()
                if isinstance(d.get("properties", {}).get(field), dict) and "const" in d["properties"][field]}

    assert consts("name") >= set(BUILTIN_NETS.names())
    assert set(DATASETS.names()) <= consts("kind")


def test_committed_schema_is_up_to_date():
    expected = json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"
    actual = COMMITTED.read_text(encoding="utf-8")
    assert actual == expected, (
        f"{COMMITTED.relative_to(ROOT)} is out of date with the spec models; "
        "regenerate it with `ranksuite schema -o suite/spec/spec.schema.json`"
    )


def test_schema_command_prints_the_same_text(capsys):
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    assert out == json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"
