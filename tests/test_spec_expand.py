"""Expansion of specs into cases (order, ids, hashes) and ``include:`` merging."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from conftest import BASE_CASE_IDS, BASE_SPEC
from suite.errors import SpecError
from suite.metrics import METRICS
from suite.metrics.weight_spectrum import WeightSpectrumParams
from suite.spec import expand_cases, load_spec
from suite.spec.expand import select_cases

HEAD = """\
name: exp
reference: "expansion tests"
tier: smoke
defaults: {device: cpu, seed: 0}
models:
  - {id: a, source: builtin, name: mlp, widths: [8, 6, 4]}
  - {id: b, source: builtin, name: planted, widths: [12, 12, 10], ranks: [3, 20]}
datasets:
  - {id: d1, kind: gaussian, shape: [8], n: 4}
  - {id: d2, kind: gaussian, shape: [8], n: 5}
metrics:
  - {id: s1, kind: weight_spectrum}
  - {id: s2, kind: weight_spectrum, params: {tolerance: {rule: numpy}}}
"""


def cases_of(write_spec, text: str, name: str = "spec.yaml"):
    return expand_cases(load_spec(write_spec(text, name)).spec)


def ids(cases) -> list[str]:
    return [c.id for c in cases]


def hashes(write_spec, text: str, name: str = "spec.yaml") -> dict[str, str]:
    return {c.id: c.hash for c in cases_of(write_spec, text, name)}


def token_at(path, line: int, col: int) -> str:
    """The text of ``path`` from 1-based ``line:col`` to the end of that line."""
    return path.read_text().splitlines()[line - 1][col - 1 :]


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


@pytest.fixture
def data_metric(monkeypatch):
    """Make ``weight_spectrum`` count as a metric that reads data (for expansion only; restored after)."""
    original = METRICS.get("weight_spectrum")
    monkeypatch.setitem(METRICS._entries, "weight_spectrum", dataclasses.replace(original, needs_data=True))


# ------------------------------------------------------------------------------------------------- order, ids


def test_base_spec_fixture_expands_to_its_documented_cases(base_spec_path):
    cases = expand_cases(load_spec(base_spec_path).spec)
    assert ids(cases) == BASE_CASE_IDS
    assert [c.dataset for c in cases] == [None, None, None]
    assert [c.model.widths for c in cases] == [[8, 6, 4], [12, 12, 10], [12, 12, 10]]
    assert "source: timm" not in BASE_SPEC  # keep the shared fixture cheap


def test_product_order_model_then_dataset_then_metric(write_spec, data_metric):
    # validated as a data-free metric, expanded as one that reads data: the full 2 x 2 x 2 product
    spec = load_spec(write_spec(HEAD + "cases:\n  matrix: {model: [a, b], dataset: [d1, d2], metric: [s1, s2]}\n")).spec
    cases = expand_cases(spec)
    assert ids(cases) == [
        "a/d1/s1", "a/d1/s2", "a/d2/s1", "a/d2/s2",
        "b/d1/s1", "b/d1/s2", "b/d2/s1", "b/d2/s2",
    ]
    assert [c.dataset.id for c in cases] == ["d1", "d1", "d2", "d2"] * 2
    assert cases[0].hash != cases[2].hash  # the dataset is part of the hash
    assert cases[0].hash != cases[1].hash  # so are the metric params


def test_metric_that_needs_data_rejects_none(write_spec, data_metric):
    path = write_spec(HEAD + "cases:\n  matrix: {model: [a], metric: [s1]}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (loc,) = info.value.locations
    assert (loc.line, loc.col) == (15, 11)
    assert loc.message == "cases.matrix.0.dataset: metric 's1' (weight_spectrum) needs a dataset; the matrix lists 'none'"


def test_data_free_metric_collapses_dataset_axis_to_none(write_spec):
    cases = cases_of(write_spec, HEAD + "cases:\n  matrix: {model: [a, b], dataset: [d1, none, d2], metric: [s1, s2]}\n")
    assert ids(cases) == ["a/none/s1", "a/none/s2", "b/none/s1", "b/none/s2"]
    assert all(c.dataset is None for c in cases)


def test_default_dataset_axis_is_none(write_spec):
    cases = cases_of(write_spec, HEAD + "cases:\n  matrix: {model: [b], metric: [s2, s1]}\n")
    assert ids(cases) == ["b/none/s2", "b/none/s1"]


def test_matrix_as_list_of_grids_equals_concatenation(write_spec):
    one = cases_of(write_spec, HEAD + "cases:\n  matrix: {model: [a, b], metric: [s1]}\n", "one.yaml")
    many = cases_of(
        write_spec,
        HEAD + "cases:\n  matrix:\n    - {model: [b], metric: [s2]}\n    - {model: [a, b], metric: [s1]}\n"
        "    - {model: [b], metric: [s2, s1]}\n",
        "many.yaml",
    )
    assert ids(one) == ["a/none/s1", "b/none/s1"]
    assert ids(many) == ["b/none/s2", "a/none/s1", "b/none/s1"]  # repeats across grids appear once
    by_id = {c.id: c for c in many}
    assert [c.hash for c in one] == [by_id["a/none/s1"].hash, by_id["b/none/s1"].hash]


def test_include_and_exclude_filters(write_spec):
    grid = "cases:\n  matrix: {model: [a, b], metric: [s1, s2]}\n"
    assert ids(cases_of(write_spec, HEAD + grid + "  include: [{model: b}]\n", "i.yaml")) == ["b/none/s1", "b/none/s2"]
    assert ids(cases_of(write_spec, HEAD + grid + "  include: [{metric: '*2'}, {model: a, metric: s1}]\n", "j.yaml")) == [
        "a/none/s1", "a/none/s2", "b/none/s2",
    ]
    assert ids(cases_of(write_spec, HEAD + grid + "  exclude: [{model: '[ab]', metric: s1}]\n", "e.yaml")) == [
        "a/none/s2", "b/none/s2",
    ]
    both = grid + "  include: [{metric: s2}]\n  exclude: [{model: a}]\n"
    assert ids(cases_of(write_spec, HEAD + both, "ie.yaml")) == ["b/none/s2"]
    # fnmatch is case sensitive and whole-string
    assert ids(cases_of(write_spec, HEAD + grid + "  include: [{model: A}, {metric: s}]\n  explicit: [{model: a, metric: s1}]\n",
                        "k.yaml")) == ["a/none/s1"]


def test_explicit_cases_are_appended_and_not_filtered(write_spec):
    text = HEAD + (
        "cases:\n"
        "  matrix: {model: [a, b], metric: [s1]}\n"
        "  exclude: [{model: b}]\n"
        "  explicit:\n"
        "    - {model: b, metric: s2}\n"
        "    - {model: a, metric: s1}\n"  # already a matrix case: kept once, in matrix position
        "    - {model: b, dataset: d1, metric: s1}\n"  # data-free metric: the dataset collapses to none
    )
    cases = cases_of(write_spec, text)
    assert ids(cases) == ["a/none/s1", "b/none/s2", "b/none/s1"]


def test_explicit_only_spec(write_spec):
    cases = cases_of(write_spec, HEAD + "cases:\n  explicit: [{model: b, metric: s1}, {model: a, metric: s2}]\n")
    assert ids(cases) == ["b/none/s1", "a/none/s2"]


def test_duplicate_explicit_case_is_an_error(write_spec):
    text = HEAD + "cases:\n  explicit:\n    - {model: a, metric: s1}\n    - {model: b, metric: s1}\n    - {model: a, metric: s1}\n"
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(text))
    (loc,) = info.value.locations
    assert (loc.line, loc.col) == (18, 7)
    assert loc.message == "cases.explicit.2: duplicate case a/none/s1 (also explicit[0])"


def test_no_cases_is_an_error(write_spec):
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(HEAD + "cases: {include: [{model: a}]}\n"))
    (loc,) = info.value.locations
    assert (loc.line, loc.col) == (14, 8)
    assert loc.message == "cases: no cases: give a matrix or explicit cases"


def test_select_cases_by_fnmatch(base_spec_path):
    cases = expand_cases(load_spec(base_spec_path).spec)
    assert ids(select_cases(cases, ["planted/*"])) == ["planted/none/spectrum", "planted/none/planted_rank"]
    assert ids(select_cases(cases, ["*/spectrum", "*/planted_rank"])) == BASE_CASE_IDS
    assert ids(select_cases(cases, [])) == BASE_CASE_IDS
    assert select_cases(cases, ["nothing*"]) == []


def test_case_seed_and_dtype(write_spec):
    text = edit(HEAD, "ranks: [3, 20]}", "ranks: [3, 20], seed: 11}")
    text = edit(text, "defaults: {device: cpu, seed: 0}", "defaults: {device: cpu, seed: 5, dtype: float64}")
    cases = cases_of(write_spec, text + "cases:\n  matrix: {model: [a, b], metric: [s1]}\n")
    assert [(c.id, c.seed, c.dtype) for c in cases] == [("a/none/s1", 5, "float64"), ("b/none/s1", 11, "float64")]


# ------------------------------------------------------------------------------------------------- hashes

GRID = "cases:\n  matrix: {model: [a, b], metric: [s1, s2]}\n"


def test_case_hash_follows_the_documented_formula(write_spec):
    (case,) = cases_of(write_spec, HEAD + "cases:\n  explicit: [{model: a, metric: s1}]\n")
    payload = {
        "model": {"source": "builtin", "name": "mlp", "widths": [8, 6, 4], "activation": "relu", "bias": True,
                  "init": "default"},
        "dataset": None,
        "metric": {"kind": "weight_spectrum", "params": WeightSpectrumParams().model_dump(mode="json")},
        "metric_version": METRICS.get("weight_spectrum").version,
        "seed": 0,
        "dtype": "float32",
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert case.hash == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert len(case.hash) == 16 and int(case.hash, 16) >= 0


def test_case_hash_is_stable_across_loads(write_spec):
    first = hashes(write_spec, HEAD + GRID, "one.yaml")
    second = hashes(write_spec, HEAD + GRID, "two.yaml")
    reformatted = edit(HEAD, "  - {id: a, source: builtin, name: mlp, widths: [8, 6, 4]}\n",
                       "  - id: a\n    widths: [8, 6, 4]   # same entry, block style, other key order\n"
                       "    name: mlp\n    source: builtin\n    activation: relu\n")
    third = hashes(write_spec, reformatted + GRID, "three.yaml")
    assert list(first) == ["a/none/s1", "a/none/s2", "b/none/s1", "b/none/s2"]
    assert first == second == third
    assert len(set(first.values())) == 4  # model and metric params both enter the hash


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        ("widths: [8, 6, 4]", "widths: [8, 5, 4]", {"a/none/s1", "a/none/s2"}),
        ("widths: [8, 6, 4]", "widths: [8, 6, 4], init: kaiming", {"a/none/s1", "a/none/s2"}),
        ("ranks: [3, 20]", "ranks: [4, 20]", {"b/none/s1", "b/none/s2"}),
        ("ranks: [3, 20]}", "ranks: [3, 20], seed: 1}", {"b/none/s1", "b/none/s2"}),
        ("{rule: numpy}", "{rule: numpy, dtype: float64}", {"a/none/s2", "b/none/s2"}),
        ("{id: s1, kind: weight_spectrum}", "{id: s1, kind: weight_spectrum, params: {layers: ['0']}}",
         {"a/none/s1", "b/none/s1"}),
        ("seed: 0}", "seed: 1}", {"a/none/s1", "a/none/s2", "b/none/s1", "b/none/s2"}),
        ("seed: 0}", "seed: 0, dtype: float64}", {"a/none/s1", "a/none/s2", "b/none/s1", "b/none/s2"}),
    ],
)
def test_case_hash_changes_with_what_determines_the_values(write_spec, old, new, changed):
    before = hashes(write_spec, HEAD + GRID, "before.yaml")
    after = hashes(write_spec, edit(HEAD, old, new) + GRID, "after.yaml")
    assert list(before) == list(after)
    assert {case_id for case_id in before if before[case_id] != after[case_id]} == changed


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("{id: s1, kind: weight_spectrum}", "{id: s1, kind: weight_spectrum, checks: [{kind: baseline, key: ranks}]}"),
        ("{id: s1, kind: weight_spectrum}",
         "{id: s1, kind: weight_spectrum, checks: [{kind: monotone, key: ranks, slack: 2.0}]}"),
        ("{id: s1, kind: weight_spectrum}", "{id: s1, kind: weight_spectrum, description: other words}"),
        ("name: mlp, widths", "name: mlp, description: a small net, widths"),
        ('reference: "expansion tests"', 'reference: "another paper"'),
        ("name: exp\n", "name: exp2\n"),
        ("tier: smoke", "tier: ci"),
        ("device: cpu", "device: auto"),
        ("widths: [8, 6, 4]}", "widths: [8, 6, 4], seed: 0}"),  # explicit seed equal to the default
        ("ranks: [3, 20]}", "ranks: [3, 20], seed: 0}"),
        ("{rule: numpy}", "{rule: numpy, dtype: null}"),  # explicit default
    ],
)
def test_case_hash_ignores_checks_descriptions_and_names(write_spec, old, new):
    before = hashes(write_spec, HEAD + GRID, "before.yaml")
    after = hashes(write_spec, edit(HEAD, old, new) + GRID, "after.yaml")
    assert after == before


def test_case_hash_ignores_ids(write_spec):
    before = hashes(write_spec, HEAD + GRID, "before.yaml")
    renamed = HEAD.replace("{id: a,", "{id: net,").replace("{id: s2,", "{id: numpy_rank,")
    after = hashes(write_spec, renamed + "cases:\n  matrix: {model: [net, b], metric: [s1, numpy_rank]}\n", "after.yaml")
    assert list(after) == ["net/none/s1", "net/none/numpy_rank", "b/none/s1", "b/none/numpy_rank"]
    assert list(after.values()) == list(before.values())


def test_same_configuration_under_two_ids_has_one_hash(base_spec_path):
    by_id = {c.id: c.hash for c in expand_cases(load_spec(base_spec_path).spec)}
    # planted_rank only spells out the default rank rule and adds a theory check
    assert by_id["planted/none/spectrum"] == by_id["planted/none/planted_rank"]
    assert by_id["mlp/none/spectrum"] != by_id["planted/none/spectrum"]


def test_case_hash_changes_with_metric_version(write_spec, monkeypatch):
    before = hashes(write_spec, HEAD + GRID, "before.yaml")
    original = METRICS.get("weight_spectrum")
    monkeypatch.setitem(METRICS._entries, "weight_spectrum", dataclasses.replace(original, version=original.version + 1))
    after = hashes(write_spec, HEAD + GRID, "after.yaml")
    assert all(before[k] != after[k] for k in before)


# ------------------------------------------------------------------------------------------------- includes

COMMON = """\
name: common
reference: "shared models and metrics"
tier: ci
defaults: {device: cpu, seed: 3, dtype: float64}
models:
  - {id: mlp, source: builtin, name: mlp, widths: [8, 6, 4], activation: tanh}
  - {id: planted, source: builtin, name: planted, widths: [12, 12, 10], ranks: [3, 20]}
metrics:
  - id: spectrum
    kind: weight_spectrum
    checks: [{kind: baseline, key: ranks}]
cases:
  matrix: {model: [mlp, planted], metric: [spectrum]}
"""


def test_include_deep_merges_defaults_and_merges_models_by_id(write_spec):
    write_spec(COMMON, "common.yaml")
    top = write_spec(
        """
        include: [common.yaml]
        name: top
        defaults: {seed: 7}
        models:
          - {id: mlp, widths: [8, 5, 4]}
          - {id: extra, source: builtin, name: mlp, widths: [4, 4]}
        metrics:
          - {id: spectrum, checks: [{kind: baseline, key: stable_ranks}]}
        cases:
          matrix: {model: [extra, mlp], metric: [spectrum]}
        """,
        "top.yaml",
    )
    loaded = load_spec(top)
    spec = loaded.spec
    assert loaded.files == (top, top.parent / "common.yaml")
    assert (spec.name, spec.reference, spec.tier) == ("top", "shared models and metrics", "ci")
    assert spec.defaults.model_dump() == {"device": "cpu", "seed": 7, "dtype": "float64"}  # key by key
    assert [m.id for m in spec.models] == ["mlp", "planted", "extra"]  # merged in place, new ids appended
    mlp = spec.models[0]
    assert (mlp.widths, mlp.activation, mlp.name) == ([8, 5, 4], "tanh", "mlp")  # overridden field, kept fields
    assert [c.key for c in spec.metrics[0].checks] == ["stable_ranks"]  # other lists are replaced, not merged
    assert ids(expand_cases(spec)) == ["extra/none/spectrum", "mlp/none/spectrum"]  # cases replaced too
    assert {c.seed for c in expand_cases(spec)} == {7}


def test_later_includes_override_earlier_ones(write_spec):
    write_spec(COMMON, "common.yaml")
    write_spec("defaults: {seed: 9}\nmodels:\n  - {id: planted, ranks: [1, 2]}\n", "override.yaml")
    top = write_spec("include: [common.yaml, override.yaml]\nname: top\n", "top.yaml")
    spec = load_spec(top).spec
    assert spec.defaults.seed == 9
    assert spec.models[1].ranks == [1, 2] and spec.models[1].widths == [12, 12, 10]
    assert [c.id for c in expand_cases(spec)] == ["mlp/none/spectrum", "planted/none/spectrum"]


def test_include_in_subfolder_is_relative_to_the_including_file(write_spec):
    write_spec(COMMON, "shared/common.yaml")
    write_spec("include: [common.yaml]\nname: mid\n", "shared/mid.yaml")
    top = write_spec("include: [shared/mid.yaml]\nname: top\n", "top.yaml")
    loaded = load_spec(top)
    assert loaded.files == (top, top.parent / "shared/mid.yaml", top.parent / "shared/common.yaml")
    assert loaded.spec.name == "top"


def test_included_model_override_changes_only_its_hashes(write_spec):
    write_spec(COMMON, "common.yaml")
    plain = hashes(write_spec, "include: [common.yaml]\nname: top\n", "plain.yaml")
    direct = hashes(write_spec, COMMON, "direct.yaml")
    over = hashes(write_spec, "include: [common.yaml]\nname: top\nmodels:\n  - {id: mlp, widths: [8, 5, 4]}\n", "over.yaml")
    assert plain == direct
    assert over["planted/none/spectrum"] == plain["planted/none/spectrum"]
    assert over["mlp/none/spectrum"] != plain["mlp/none/spectrum"]


def test_error_in_included_file_points_at_that_file(write_spec):
    bad = write_spec(
        """
        name: bad
        reference: "x"
        tier: smoke
        models:
          - {id: mlp, source: builtin, name: mlp, widths: [8, 6, 4], actvation: relu}
        metrics:
          - {id: spectrum, kind: weight_spectrum}
        """,
        "parts/bad.yaml",
    )
    top = write_spec("include: [parts/bad.yaml]\nname: top\ncases:\n  matrix: {model: [mlp], metric: [spectrum]}\n", "top.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(top)
    (loc,) = info.value.locations
    assert (loc.file, loc.line, loc.col) == (str(bad), 5, 62)
    assert "unknown key 'actvation' (did you mean 'activation'?)" in loc.message


def test_errors_in_merged_entries_point_at_the_file_of_the_value(write_spec):
    common = write_spec(COMMON.replace("ranks: [3, 20]}", "ranks: [3, -20]}"), "common.yaml")
    top = write_spec(
        """
        include: [common.yaml]
        name: top
        models:
          - id: mlp
            widths: [8, 5, 4]
            init: kaimin
        cases:
          explicit: [{model: mlp, metric: spectrum}, {model: mlpp, metric: spectrum}]
        """,
        "top.yaml",
    )
    with pytest.raises(SpecError) as info:
        load_spec(top)
    locs = info.value.locations
    assert [(loc.file, loc.line, loc.col) for loc in locs] == [(str(common), 7, 5), (str(top), 6, 11)]
    assert token_at(common, 7, 5).startswith("{id: planted")
    assert token_at(top, 6, 11) == "kaimin"
    assert "models.1: widths must be >= 1 and ranks >= 0" in locs[0].message
    assert locs[1].message.startswith("models.0.init: ")
    assert "'kaimin'" in locs[1].message

    # with the values fixed, the bad reference in the including file is reported there
    write_spec(COMMON, "common.yaml")
    write_spec(top.read_text().replace("kaimin", "kaiming"), "top.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(top)
    (loc,) = info.value.locations
    assert (loc.file, loc.line, loc.col) == (str(top), 8, 54)
    assert token_at(top, 8, 54).startswith("mlpp, metric")
    assert loc.message == "cases.explicit.1.model: unknown model id 'mlpp'; defined: mlp, planted"


def test_positions_of_merged_spec(write_spec):
    common = write_spec(COMMON, "common.yaml")
    top = write_spec("include: [common.yaml]\nname: top\nmodels:\n  - {id: mlp, widths: [8, 5, 4]}\n", "top.yaml")
    loaded = load_spec(top)
    assert loaded.where(("models", 0, "widths")) == f"{top}:4:23"
    assert loaded.where(("models", 0, "activation")) == f"{common}:6:74"
    assert token_at(common, 6, 74) == "tanh}"
    assert loaded.where(("models", 1, "ranks")) == f"{common}:7:80"
    assert token_at(common, 7, 80) == "[3, 20]}"
    assert token_at(top, 4, 23) == "[8, 5, 4]}"
    assert loaded.where(("models", 0, "seed")) == f"{top}:4:5"  # absent: nearest ancestor
    assert loaded.where(("name",)) == f"{top}:2:7"

