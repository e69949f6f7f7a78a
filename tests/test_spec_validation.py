"""Invalid specs: every problem is reported at the exact file:line:col of the node it concerns.

Each test edits ``VALID`` (line numbers on the left of the comment below) and asserts the line, the
column (checked as "the text at line:col starts with <token>") and a message fragment.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.data import DATASETS
from suite.errors import ErrorLocation, SpecError
from suite.metrics import METRICS
from suite.models import BUILTIN_NETS, MODEL_SOURCES
from suite.spec import load_spec

#  1 name: val
#  2 reference: ...
#  3 tier: smoke
#  4 defaults: ...
#  5 models:
#  6   - {id: mlp, ...}
#  7   - id: planted
#  8     source: builtin
#  9     name: planted
# 10     widths: [12, 12, 10]
# 11     ranks: [3, 20]
# 12 datasets:
# 13   - {id: noise, kind: gaussian, shape: [8], n: 16}
# 14 metrics:
# 15   - id: spectrum
# 16     kind: weight_spectrum
# 17     checks:
# 18       - {kind: baseline, key: ranks}
# 19   - id: planted_rank
# 20     kind: weight_spectrum
# 21     checks:
# 22       - kind: theory
# 23         key: ranks
# 24         theory: planted_product_rank
# 25 cases:
# 26   matrix:
# 27     model: [mlp, planted]
# 28     metric: [spectrum]
# 29   explicit:
# 30     - {model: planted, metric: planted_rank}
VALID = """\
name: val
reference: "validation tests"
tier: smoke
defaults: {device: cpu, seed: 0}
models:
  - {id: mlp, source: builtin, name: mlp, widths: [8, 6, 4]}
  - id: planted
    source: builtin
    name: planted
    widths: [12, 12, 10]
    ranks: [3, 20]
datasets:
  - {id: noise, kind: gaussian, shape: [8], n: 16}
metrics:
  - id: spectrum
    kind: weight_spectrum
    checks:
      - {kind: baseline, key: ranks}
  - id: planted_rank
    kind: weight_spectrum
    checks:
      - kind: theory
        key: ranks
        theory: planted_product_rank
cases:
  matrix:
    model: [mlp, planted]
    metric: [spectrum]
  explicit:
    - {model: planted, metric: planted_rank}
"""


def edit(old: str, new: str, text: str = VALID) -> str:
    """``text`` with the single occurrence of ``old`` replaced by ``new``."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def errors(write_spec, text: str, name: str = "spec.yaml") -> tuple[Path, list[ErrorLocation]]:
    path = write_spec(text, name)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return path, info.value.locations


def only_error(write_spec, text: str) -> tuple[str, ErrorLocation]:
    path, locs = errors(write_spec, text)
    assert len(locs) == 1, "\n".join(map(str, locs))
    assert locs[0].file == str(path)
    return path.read_text(), locs[0]


def assert_at(loc: ErrorLocation, text: str, line: int, token: str) -> None:
    """``loc`` is on ``line`` and its column is where ``token`` starts on that line."""
    assert loc.line == line, str(loc)
    source_line = text.splitlines()[line - 1]
    assert source_line[loc.col - 1 :].startswith(token), f"{loc}: column {loc.col} of {source_line!r} is not {token!r}"


def valid_names(message: str) -> set[str]:
    """The names after ``Valid: `` in an unknown-name message."""
    assert "Valid: " in message, message
    return set(message.split("Valid: ", 1)[1].split(", "))


def test_valid_template_loads(write_spec):
    loaded = load_spec(write_spec(VALID))
    assert [m.id for m in loaded.spec.models] == ["mlp", "planted"]


def test_unknown_key_points_at_the_key_with_suggestion(write_spec):
    text, loc = only_error(write_spec, edit("widths: [8, 6, 4]}", "widths: [8, 6, 4], actvation: relu}"))
    assert_at(loc, text, 6, "actvation: relu")
    assert loc.col == 62
    assert "models.0.actvation: unknown key 'actvation'" in loc.message
    assert "(did you mean 'activation'?)" in loc.message


def test_unknown_key_in_block_mapping(write_spec):
    text, loc = only_error(write_spec, edit("    ranks: [3, 20]\n", "    ranks: [3, 20]\n    rnaks: [1]\n"))
    assert_at(loc, text, 12, "rnaks")
    assert loc.col == 5
    assert "unknown key 'rnaks' (did you mean 'ranks'?)" in loc.message


def test_wrong_type_points_at_the_value(write_spec):
    text, loc = only_error(write_spec, edit("n: 16}", "n: ten}"))
    assert_at(loc, text, 13, "ten}")
    assert loc.col == 48
    assert loc.message.startswith("datasets.0.n: ")
    assert "valid integer" in loc.message and "(got 'ten')" in loc.message


def test_unknown_metric_kind_lists_valid_names(write_spec):
    text, loc = only_error(write_spec, edit("    kind: weight_spectrum\n    checks:\n      - {kind: baseline",
                                           "    kind: weight_spectrm\n    checks:\n      - {kind: baseline"))
    assert_at(loc, text, 16, "weight_spectrm")
    assert loc.col == 11
    assert "metrics.0.kind: unknown metric kind 'weight_spectrm' (did you mean 'weight_spectrum'?)" in loc.message
    assert valid_names(loc.message) == set(METRICS.names())


def test_unknown_model_source(write_spec):
    text, loc = only_error(write_spec, edit("    source: builtin\n", "    source: torchvision\n"))
    assert_at(loc, text, 8, "torchvision")
    assert loc.col == 13
    assert "models.1.source: unknown model source 'torchvision'" in loc.message
    assert valid_names(loc.message) == set(MODEL_SOURCES.names()) | {"builtin"} == {"timm", "builtin"}


def test_unknown_builtin_net(write_spec):
    text, loc = only_error(write_spec, edit("name: mlp,", "name: mlpp,"))
    assert_at(loc, text, 6, "mlpp,")
    assert "models.0.name: unknown builtin net 'mlpp' (did you mean 'mlp'?)" in loc.message
    assert valid_names(loc.message) == set(BUILTIN_NETS.names())


def test_unknown_timm_model(write_spec):  # imports timm (about a second)
    text, loc = only_error(
        write_spec, edit("{id: mlp, source: builtin, name: mlp, widths: [8, 6, 4]}", "{id: mlp, source: timm, name: resnt18}")
    )
    assert_at(loc, text, 6, "resnt18}")
    assert "models.0.name: unknown timm model 'resnt18'" in loc.message
    assert "'resnet18'" in loc.message  # among the suggestions
    assert "ranksuite ls models 'timm:*'" in loc.message


def test_unknown_dataset_kind(write_spec):
    text, loc = only_error(write_spec, edit("kind: gaussian", "kind: gausian"))
    assert_at(loc, text, 13, "gausian")
    assert loc.col == 23
    assert "datasets.0.kind: unknown dataset kind 'gausian' (did you mean 'gaussian'?)" in loc.message
    assert valid_names(loc.message) == set(DATASETS.names())


def test_unknown_model_id_in_matrix_points_at_the_list_item(write_spec):
    text, loc = only_error(write_spec, edit("model: [mlp, planted]", "model: [mlp, vit, planted]"))
    assert_at(loc, text, 27, "vit,")
    assert loc.col == 18
    assert "cases.matrix.0.model.1: unknown model id 'vit'; defined: mlp, planted" in loc.message


def test_unknown_ids_in_block_list_and_explicit_case(write_spec):
    text = edit("    model: [mlp, planted]\n", "    model:\n      - mlp\n      - mpl\n")
    text = edit("{model: planted, metric: planted_rank}", "{model: planted, metric: planted_rnak}", text)
    path, locs = errors(write_spec, text)
    assert [(loc.line, loc.col) for loc in locs] == [(29, 9), (32, 32)]
    assert "cases.matrix.0.model.1: unknown model id 'mpl'" in locs[0].message
    assert "cases.explicit.0.metric: unknown metric id 'planted_rnak'; defined: spectrum, planted_rank" in locs[1].message
    assert_at(locs[0], text, 29, "mpl")
    assert_at(locs[1], text, 32, "planted_rnak")


def test_include_of_missing_file_points_at_the_include_entry(write_spec):
    write_spec(VALID, "base.yaml")
    path, locs = errors(
        write_spec,
        """
        name: top
        include:
          - base.yaml
          - nothere.yaml
        """,
        "top.yaml",
    )
    assert len(locs) == 1
    assert (locs[0].file, locs[0].line, locs[0].col) == (str(path), 4, 5)
    assert locs[0].message == f"included file not found: {path.parent / 'nothere.yaml'}"


def test_include_cycle_names_the_cycle(write_spec):
    write_spec("name: b\nreference: x\ninclude: [a.yaml]\n", "b.yaml")
    a, locs = errors(write_spec, "include: [b.yaml]\nname: a\n", "a.yaml")
    assert len(locs) == 1
    loc = locs[0]
    assert (loc.file, loc.line, loc.col) == (str(a.parent / "b.yaml"), 3, 11)  # the include that closes the cycle
    assert loc.message == "include cycle: a.yaml -> b.yaml -> a.yaml"


def test_self_include_is_a_cycle(write_spec):
    a, locs = errors(write_spec, "name: a\ninclude:\n  - a.yaml\n", "a.yaml")
    assert [(loc.file, loc.line, loc.col, loc.message) for loc in locs] == [
        (str(a), 3, 5, "include cycle: a.yaml -> a.yaml")
    ]


def test_empty_matrix_list(write_spec):
    text, loc = only_error(write_spec, edit("model: [mlp, planted]", "model: []"))
    assert_at(loc, text, 27, "[]")
    assert loc.col == 12
    assert "cases.matrix.model: List should have at least 1 item" in loc.message


def test_duplicate_model_id(write_spec):
    text, loc = only_error(
        write_spec,
        edit("  - id: planted\n    source: builtin\n    name: planted\n    widths: [12, 12, 10]\n    ranks: [3, 20]\n",
             "  - {id: mlp, source: builtin, name: planted, widths: [12, 12, 10], ranks: [3, 20]}\n"
             "  - {id: planted, source: builtin, name: planted, widths: [12, 12, 10], ranks: [3, 20]}\n"),
    )
    assert_at(loc, text, 7, "mlp, source: builtin, name: planted")
    assert loc.col == 10
    assert loc.message == "models.1.id: duplicate model id 'mlp' (first is models[0])"


def test_duplicate_yaml_key(write_spec):
    text, loc = only_error(write_spec, edit("tier: smoke\n", "tier: smoke\ndefaults: {seed: 1}\n"))
    assert_at(loc, text, 5, "defaults: {device")
    assert loc.col == 1
    assert loc.message == "duplicate key 'defaults' (first at line 4)"


def test_duplicate_key_inside_an_entry(write_spec):
    text, loc = only_error(write_spec, edit("    ranks: [3, 20]\n", "    ranks: [3, 20]\n    widths: [1, 2]\n"))
    assert_at(loc, text, 12, "widths: [1, 2]")
    assert loc.message == "duplicate key 'widths' (first at line 10)"


def test_negative_tolerance(write_spec):
    text, loc = only_error(write_spec, edit("{kind: baseline, key: ranks}", "{kind: baseline, key: ranks, tolerance: {kind: abs, atol: -1}}"))
    assert_at(loc, text, 18, "-1}")
    assert loc.message.startswith("metrics.0.checks.0.tolerance.atol: ")
    assert "greater than or equal to 0 (got -1)" in loc.message


def test_unknown_tolerance_kind(write_spec):
    text, loc = only_error(write_spec, edit("{kind: baseline, key: ranks}", "{kind: baseline, key: ranks, tolerance: {kind: fuzzy}}"))
    assert_at(loc, text, 18, "fuzzy}")
    assert "metrics.0.checks.0.tolerance.kind: unknown tolerance kind 'fuzzy'" in loc.message
    assert valid_names(loc.message) == {"exact", "abs", "rel"}


def test_unknown_rank_rule(write_spec):
    text, loc = only_error(write_spec, edit("    kind: weight_spectrum\n    checks:\n      - kind: theory",
                                           "    kind: weight_spectrum\n    params: {tolerance: {rule: fang}}\n"
                                           "    checks:\n      - kind: theory"))
    assert_at(loc, text, 21, "fang}")
    assert "metrics.1.params.tolerance.rule: unknown rank rule 'fang' (did you mean 'feng'?)" in loc.message
    assert valid_names(loc.message) == {"feng", "numpy", "explicit"}


def test_error_inside_a_theory_check_points_at_its_own_line(write_spec):
    # the check's kind ('theory') is also one of its keys: the error must not land on `theory:`
    text = edit("        theory: planted_product_rank\n",
                "        theory: planted_product_rank\n        tolerance: {kind: abs, atol: -2}\n        relaton: equal\n")
    path, locs = errors(write_spec, text)
    assert [(loc.line, loc.col) for loc in locs] == [(25, 38), (26, 9)]
    assert_at(locs[0], text, 25, "-2}")
    assert locs[0].message.startswith("metrics.1.checks.0.tolerance.atol: ")
    assert_at(locs[1], text, 26, "relaton")
    assert "metrics.1.checks.0.relaton: unknown key 'relaton' (did you mean 'relation'?)" in locs[1].message


def test_bad_yaml_syntax(write_spec):
    text, loc = only_error(write_spec, edit("tier: smoke\n", "tier: smoke: ci\n"))
    assert (loc.line, loc.col) == (3, 12)
    assert loc.message == "invalid YAML: mapping values are not allowed here"


def test_unclosed_flow_mapping_reported_where_the_parser_stops(write_spec):
    text, loc = only_error(write_spec, edit("widths: [8, 6, 4]}", "widths: [8, 6, 4]"))
    assert_at(loc, text, 7, "- id: planted")
    assert "invalid YAML: while parsing a flow mapping" in loc.message


def test_missing_required_top_level_key(write_spec):
    text, loc = only_error(write_spec, edit('reference: "validation tests"\n', ""))
    assert (loc.line, loc.col) == (1, 1)
    assert loc.message == "spec: missing required key 'reference'"


def test_missing_required_entry_key_points_at_the_entry(write_spec):
    text, loc = only_error(write_spec, edit("    widths: [12, 12, 10]\n", ""))
    assert_at(loc, text, 7, "id: planted")
    assert loc.col == 5
    assert loc.message == "models.1: missing required key 'widths'"


def test_missing_discriminator(write_spec):
    text, loc = only_error(write_spec, edit("kind: gaussian, ", ""))
    assert_at(loc, text, 13, "{id: noise")
    assert loc.message == "datasets.0: missing required key 'kind'"


def test_theory_check_with_unknown_theory(write_spec):
    text, loc = only_error(write_spec, edit("theory: planted_product_rank", "theory: planted_rank_product"))
    assert_at(loc, text, 24, "planted_rank_product")  # the theory: value itself
    assert "metrics.1.checks.0.theory: unknown theory 'planted_rank_product' (did you mean 'planted_product_rank'?)" in loc.message
    assert "Valid: " in loc.message and "planted_product_rank" in valid_names(loc.message)


def test_theory_check_with_both_theory_and_expected_key(write_spec):
    text, loc = only_error(write_spec, edit("        key: ranks\n", "        key: ranks\n        expected_key: full_ranks\n"))
    assert_at(loc, text, 22, "kind: theory")
    assert loc.message == (
        "metrics.1.checks.0: a theory check needs exactly one of theory: <name> or expected_key: <key>"
    )


def test_theory_check_with_neither_theory_nor_expected_key(write_spec):
    text, loc = only_error(write_spec, edit("        theory: planted_product_rank\n", ""))
    assert_at(loc, text, 22, "kind: theory")
    assert "exactly one of theory: <name> or expected_key: <key>" in loc.message


def test_reserved_dataset_id_none(write_spec):
    text, loc = only_error(write_spec, edit("{id: noise,", "{id: none,"))
    assert_at(loc, text, 13, "none,")
    assert loc.message == "datasets.0.id: dataset id 'none' is reserved for data-free cases"


def test_unknown_key_in_single_mapping_matrix_suggests(write_spec):
    path, locs = errors(write_spec, edit("    metric: [spectrum]\n", "    metrc: [spectrum]\n"))
    text = path.read_text()
    assert [(loc.line, loc.col) for loc in locs] == [(27, 5), (28, 5)]
    assert locs[0].message == "cases.matrix: missing required key 'metric'"
    assert_at(locs[1], text, 28, "metrc")
    assert "cases.matrix.metrc: unknown key 'metrc' (did you mean 'metric'?)" in locs[1].message
    assert "Valid keys: model, dataset, metric" in locs[1].message


def test_several_errors_are_all_reported_in_file_order(write_spec):
    text = edit("name: mlp,", "name: mlpp,")
    text = edit("n: 16}", "n: ten, sahpe: [1]}", text)
    text = edit("tier: smoke", "tier: nightly", text)
    text = edit("{kind: baseline, key: ranks}", "{kind: baseline, key: ranks, tolerance: {kind: rel, rtol: -0.5}}", text)
    path, locs = errors(write_spec, text)
    assert all(loc.file == str(path) for loc in locs)
    assert [(loc.line, loc.col) for loc in locs] == [(3, 7), (6, 38), (13, 48), (13, 53), (18, 67)]
    assert_at(locs[0], text, 3, "nightly")
    assert_at(locs[1], text, 6, "mlpp")
    assert_at(locs[2], text, 13, "ten")
    assert_at(locs[3], text, 13, "sahpe")
    assert_at(locs[4], text, 18, "-0.5")
    assert "tier" in locs[0].message and "'nightly'" in locs[0].message
    assert "unknown builtin net 'mlpp'" in locs[1].message
    assert "valid integer" in locs[2].message
    assert "unknown key 'sahpe' (did you mean 'shape'?)" in locs[3].message
    assert "tolerance.rtol" in locs[4].message
    assert str(SpecError(locs)).splitlines()[0] == f"{path}:3:7: {locs[0].message}"


def test_several_reference_errors_are_all_reported(write_spec):
    text = edit("model: [mlp, planted]", "model: [mlp, vit, deit]")
    text = edit("{model: planted, metric: planted_rank}", "{model: planted, dataset: imagenet, metric: planted_rank}", text)
    path, locs = errors(write_spec, text)
    assert [(loc.line, loc.col) for loc in locs] == [(27, 18), (27, 23), (30, 33)]
    assert [loc.message.split(":")[0] for loc in locs] == [
        "cases.matrix.0.model.1", "cases.matrix.0.model.2", "cases.explicit.0.dataset"
    ]
    assert "unknown dataset id 'imagenet'; defined: noise or 'none'" in locs[2].message


def test_empty_file_and_non_mapping(write_spec):
    _, locs = errors(write_spec, "# nothing here\n")
    assert [(loc.line, loc.col, loc.message) for loc in locs] == [(1, 1, "the spec file is empty")]
    _, locs = errors(write_spec, "# a list\n- a\n- b\n", "list.yaml")
    assert [(loc.line, loc.col, loc.message) for loc in locs] == [(2, 1, "a spec must be a YAML mapping")]


def test_missing_top_level_file():
    with pytest.raises(SpecError) as info:
        load_spec("/nonexistent/spec.yaml")
    assert "cannot read spec" in info.value.locations[0].message


def test_yaml_is_loaded_safely(write_spec, tmp_path):
    text, loc = only_error(write_spec, edit("tier: smoke\n", "tier: !!python/name:os.system\n"))
    assert (loc.line, loc.col) == (3, 7)
    assert loc.message.startswith("invalid YAML: could not determine a constructor")
    marker = tmp_path / "executed"
    path, locs = errors(write_spec, edit("name: val\n", f"name: !!python/object/apply:os.system ['touch {marker}']\n"))
    assert not marker.exists()
    assert [(loc.line, loc.col) for loc in locs] == [(1, 7)]
