"""Load a spec from YAML: safe parsing with positions, ``include:`` merging, validation with file:line:col.

Parsing keeps, for every node, the file, line and column it came from, so that each pydantic error is
reported at the YAML node it concerns (the key itself for an unknown key, the value otherwise).

``include: [a.yaml, b.yaml]`` (paths relative to the including file) merges the included specs first, in
order, then the including file over them: mappings merge key by key, the lists ``models``, ``datasets``
and ``metrics`` merge entry by entry on ``id`` (an entry with a new id is appended), any other value is
replaced. Include cycles and missing files are errors at the include line. YAML is only ever read with
``yaml.SafeLoader``: a spec cannot run code.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from suite.errors import ErrorLocation, SpecError
from suite.registry import unknown_name_message

__all__ = ["LoadedSpec", "Located", "load_spec", "load_spec_text"]

_MERGE_BY_ID = ("models", "datasets", "metrics")


@dataclass(frozen=True)
class Pos:
    file: str
    line: int  # 1-based
    col: int  # 1-based


@dataclass
class Located:
    """A YAML value with the position it was read at; mappings keep the position of each key too."""

    value: Any  # dict[str, tuple[Pos, Located]] | list[Located] | scalar
    pos: Pos


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec with where it came from.

    Attributes:
        spec: the validated pydantic ``Spec``.
        path: the file it was loaded from.
        files: every file read (the spec and its includes), in load order.
        positions: dotted data path -> ``Pos`` for every value (used to place later errors).
    """

    spec: Any
    path: Path
    files: tuple[Path, ...]
    positions: dict[tuple, Pos] = field(repr=False, default_factory=dict)

    def where(self, path: tuple) -> str:
        """``file:line:col`` of the node at ``path`` (or of its nearest ancestor)."""
        while path and path not in self.positions:
            path = path[:-1]
        pos = self.positions.get(path) or Pos(str(self.path), 1, 1)
        return f"{pos.file}:{pos.line}:{pos.col}"


def _pos(file: str, mark: yaml.Mark) -> Pos:
    return Pos(file, mark.line + 1, mark.column + 1)


def _parse(text: str, file: str) -> Located:
    """Parse YAML text into ``Located`` nodes with ``yaml.SafeLoader`` (duplicate keys are errors)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError([ErrorLocation(file, 1, 1, "the spec file is empty")])
        return _convert(loader, node, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise SpecError([ErrorLocation(file, line, col, f"invalid YAML: {problem}")]) from None
    finally:
        loader.dispose()


def _convert(loader: yaml.SafeLoader, node: yaml.Node, file: str) -> Located:
    pos = _pos(file, node.start_mark)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[str, tuple[Pos, Located]] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key_pos = _pos(file, key_node.start_mark)
            if not isinstance(key, str):
                raise SpecError([ErrorLocation(file, key_pos.line, key_pos.col, f"keys must be strings; got {key!r}")])
            if key in out:
                first = out[key][0]
                raise SpecError(
                    [ErrorLocation(file, key_pos.line, key_pos.col, f"duplicate key {key!r} (first at line {first.line})")]
                )
            out[key] = (key_pos, _convert(loader, value_node, file))
        return Located(out, pos)
    if isinstance(node, yaml.SequenceNode):
        return Located([_convert(loader, item, file) for item in node.value], pos)
    return Located(loader.construct_object(node, deep=True), pos)


def _plain(node: Located) -> Any:
    if isinstance(node.value, dict):
        return {k: _plain(v) for k, (_, v) in node.value.items()}
    if isinstance(node.value, list):
        return [_plain(v) for v in node.value]
    return node.value


def _positions(node: Located, path: tuple = (), out: dict | None = None) -> dict[tuple, Pos]:
    """Map every data path to a position; ``path + ('<key>',)`` holds the key's own position."""
    out = {} if out is None else out
    out[path] = node.pos
    if isinstance(node.value, dict):
        for key, (key_pos, child) in node.value.items():
            out[path + (key, "<key>")] = key_pos
            _positions(child, path + (key,), out)
    elif isinstance(node.value, list):
        for i, child in enumerate(node.value):
            _positions(child, path + (i,), out)
    return out


def _entry_id(node: Located) -> Any:
    if isinstance(node.value, dict) and "id" in node.value:
        return node.value["id"][1].value
    return None


def _merge(base: Located, over: Located, key: str | None = None) -> Located:
    if isinstance(base.value, dict) and isinstance(over.value, dict):
        merged = dict(base.value)
        for k, (kpos, child) in over.value.items():
            merged[k] = (kpos, _merge(merged[k][1], child, k)) if k in merged else (kpos, child)
        return Located(merged, over.pos)
    if key in _MERGE_BY_ID and isinstance(base.value, list) and isinstance(over.value, list):
        items = list(base.value)
        index = {_entry_id(item): i for i, item in enumerate(items) if _entry_id(item) is not None}
        for item in over.value:
            ident = _entry_id(item)
            if ident is not None and ident in index:
                items[index[ident]] = _merge(items[index[ident]], item)
            else:
                items.append(item)
        return Located(items, over.pos)
    return over


def _read(path: Path, stack: tuple[Path, ...], files: list[Path], origin: Pos | None) -> Located:
    resolved = path.resolve()
    if resolved in stack:
        cycle = " -> ".join(p.name for p in (*stack, resolved))
        assert origin is not None  # the top-level file cannot be on its own stack
        raise SpecError([ErrorLocation(origin.file, origin.line, origin.col, f"include cycle: {cycle}")])
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        if origin is None:
            raise SpecError([ErrorLocation(str(path), 0, 0, f"cannot read spec: {exc.strerror}")]) from None
        raise SpecError(
            [ErrorLocation(origin.file, origin.line, origin.col, f"included file not found: {path}")]
        ) from None
    files.append(path)
    root = _parse(text, str(path))
    if not isinstance(root.value, dict):
        raise SpecError([ErrorLocation(str(path), root.pos.line, root.pos.col, "a spec must be a YAML mapping")])
    if "include" not in root.value:
        return root
    _, inc_node = root.value["include"]
    items = inc_node.value if isinstance(inc_node.value, list) else [inc_node]
    merged: Located | None = None
    for item in items:
        if not isinstance(item.value, str):
            raise SpecError([ErrorLocation(item.pos.file, item.pos.line, item.pos.col, "include entries must be file paths")])
        child = _read(path.parent / item.value, (*stack, resolved), files, item.pos)
        child.value.pop("include", None)
        merged = child if merged is None else _merge(merged, child)
    own = Located({k: v for k, v in root.value.items() if k != "include"}, root.pos)
    return own if merged is None else _merge(merged, own)


def load_spec(path: str | Path) -> LoadedSpec:
    """Load, merge and validate the spec at ``path``.

    Raises:
        SpecError: with every problem found, each as ``file:line:col: message``.
    """
    path = Path(path)
    files: list[Path] = []
    root = _read(path, (), files, None)
    data = _plain(root)
    positions = _positions(root)
    spec = _validate(data, positions, str(path))
    loaded = LoadedSpec(spec, path, tuple(files), positions)
    from suite.spec.expand import reference_errors

    problems = reference_errors(spec)
    if problems:
        located = []
        for spec_path, msg in problems:
            data_path = _data_path(data, spec_path)
            where = ".".join(str(p) for p in spec_path)
            located.append(_locate(positions, data_path, f"{where}: {msg}", str(path), at_key=False))
        raise SpecError(located)
    return loaded


def load_spec_text(text: str, name: str = "<string>") -> LoadedSpec:
    """Validate a spec given as YAML text (no includes); for tests and programmatic use."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / name
        file.write_text(text, encoding="utf-8")
        try:
            return load_spec(file)
        except SpecError as exc:
            raise SpecError(
                [ErrorLocation(name if loc.file == str(file) else loc.file, loc.line, loc.col, loc.message) for loc in exc.locations]
            ) from None


_TAG_KEYS = ("kind", "source", "name", "rule")  # discriminators whose values pydantic puts in error locations


def _data_path(data: Any, loc: tuple) -> tuple:
    """Map a pydantic error location onto a path in ``data``, skipping union tags and validator names.

    A union tag (``theory`` in ``metrics.0.checks.1.theory.tolerance``) can equal a real key of the
    entry (the ``theory:`` field of a theory check), so a part equal to the value of one of the entry's
    discriminator keys is taken as the tag, once per discriminator, before it is taken as a key.
    """
    path: list[Any] = []
    node = data
    used: set[str] = set()
    for part in loc:
        tag = None
        if isinstance(node, dict) and isinstance(part, str):
            tag = next((k for k in _TAG_KEYS if k not in used and node.get(k) == part), None)
        if tag is not None and (tag != "name" or node.get("source") == "builtin"):
            used.add(tag)
        elif isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
            used = set()
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(part)
            used = set()
    return tuple(path)


def _locate(positions: dict[tuple, Pos], path: tuple, message: str, default_file: str, at_key: bool) -> ErrorLocation:
    probe = path + ("<key>",) if at_key and path + ("<key>",) in positions else path
    while probe not in positions and probe:
        probe = probe[:-1]
    pos = positions.get(probe) or Pos(default_file, 1, 1)
    return ErrorLocation(pos.file, pos.line, pos.col, message)


_WHAT = {
    "models": "model source",
    "datasets": "dataset kind",
    "metrics": "metric kind",
    "checks": "check kind",
    "tolerance": "tolerance kind",
}


def _message(err: dict[str, Any], path: tuple, data: Any) -> str:
    where = ".".join(str(p) for p in path) or "spec"
    kind = err["type"]
    if kind in ("union_tag_invalid", "literal_error") and _is_tag(err, path):
        ctx = err.get("ctx", {})
        tag = ctx.get("tag", err.get("input"))
        valid = [t.strip().strip("'") for t in str(ctx.get("expected_tags") or ctx.get("expected", "")).replace(" or ", ",").split(",")]
        section = next((p for p in reversed(path) if isinstance(p, str) and p in _WHAT), None)
        what = _WHAT.get(section, "kind")
        if section == "checks" and path[:1] == ("series",):
            what = "series check kind"  # only the kinds that read the series' own values
        disc = str(ctx.get("discriminator", "")).strip("'")
        if err["loc"][-1] == "name" or disc == "name":
            what = "builtin net"
        elif err["loc"][-1] == "rule" or disc == "rule":
            what = "rank rule"
        return f"{where}: {unknown_name_message(what, str(tag), [v for v in valid if v])}"
    if kind == "union_tag_not_found":
        disc = str(err.get("ctx", {}).get("discriminator", "kind")).strip("'")
        return f"{where}: missing required key {disc!r}"
    if kind == "extra_forbidden":
        key = err["loc"][-1]
        return f"{where}: unknown key {key!r}" + _allowed_hint(str(key), err.get("_allowed") or [])
    if kind == "missing":
        return f"{where}: missing required key {err['loc'][-1]!r}"
    text = err["msg"]
    if text.startswith("Value error, "):
        text = text[len("Value error, ") :]
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) or kind.startswith("value_error") else f" (got {value!r})"
    return f"{where}: {text}{shown}"


def _is_tag(err: dict[str, Any], path: tuple) -> bool:
    """Whether the error concerns the discriminator of a models/datasets/metrics/checks entry."""
    if err["type"] == "union_tag_invalid":
        return True
    return err["loc"][-1] in ("kind", "source", "name") and any(p in _WHAT for p in path if isinstance(p, str))


def _allowed_hint(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    valid = f". Valid keys: {', '.join(allowed)}" if allowed else ""
    return (f" (did you mean {close[0]!r}?)" if close else "") + valid


def _validate(data: dict[str, Any], positions: dict[tuple, Pos], file: str) -> Any:
    from suite.spec.schema import spec_model

    model = spec_model()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            at_key = err["type"] == "extra_forbidden"
            path = _data_path(data, loc)
            if err["type"] == "union_tag_invalid":
                disc = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
                if path + (disc,) in positions:
                    path = path + (disc,)
            if err["type"] == "extra_forbidden":
                err = {**err, "_allowed": _allowed_keys(model, loc, data)}
            errors.append(_locate(positions, path, _message(err, path, data), file, at_key))
        unique = list(dict.fromkeys(errors))
        raise SpecError(sorted(unique, key=lambda e: (e.file, e.line, e.col))) from None


def _allowed_keys(model: Any, loc: tuple, data: Any) -> list[str]:
    """Field names valid at the parent of an unknown key, found by walking the schema along ``loc``."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    node: Any = schema
    node_data: Any = data

    def deref(s: Any) -> Any:
        while isinstance(s, dict) and "$ref" in s:
            s = defs[s["$ref"].split("/")[-1]]
        return s

    for part in _data_path(data, loc[:-1]):  # real keys and indices only; union tags resolve through the data
        node = deref(node)
        node_data = node_data[part]
        if isinstance(part, int):
            node = deref(node.get("items", {}))
        else:
            node = deref(node.get("properties", {}).get(part, {}))
            if isinstance(node_data, dict) and node.get("type") == "array":  # one mapping given for a list
                node = deref(node.get("items", {}))
        node = _pick_variant(node, node_data, deref)
    node = _pick_variant(deref(node), node_data, deref)
    return list(node.get("properties", {})) if isinstance(node, dict) else []


def _pick_variant(node: Any, node_data: Any, deref) -> Any:
    """Follow anyOf/oneOf to the variant whose discriminator constants match ``node_data``."""
    for _ in range(3):
        variants = node.get("oneOf") or node.get("anyOf") if isinstance(node, dict) else None
        if not variants:
            return node
        chosen = None
        for variant in (deref(v) for v in variants):
            props = variant.get("properties", {}) if isinstance(variant, dict) else {}
            consts = {k: p.get("const") for k, p in props.items() if isinstance(p, dict) and "const" in p}
            if isinstance(node_data, dict) and consts and all(node_data.get(k) == c for k, c in consts.items()):
                chosen = variant
                break
            if chosen is None and (variant.get("oneOf") or variant.get("anyOf")):
                candidate = _pick_variant(variant, node_data, deref)
                if candidate is not variant and "properties" in candidate:
                    chosen = candidate
                    break
        if chosen is None and isinstance(node_data, dict):  # an optional nested model (X | None): the one object variant
            objects = [v for v in (deref(v) for v in variants) if isinstance(v, dict) and "properties" in v]
            chosen = objects[0] if len(objects) == 1 else None
        if chosen is None:
            return node
        node = chosen
    return node
