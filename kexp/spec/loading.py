"""Reading a spec: YAML with line numbers (hardened), its bases merged in, `--set` overrides, then validation.

    raw, lines, files = read_yaml(path)     # the merged mapping, where each dotted key was set, the files read
    apply_override(raw, *parse_override("train.epochs=2"))
    spec = validate_spec(raw, path, lines)  # kexp.spec.validation: every problem as file:line: key: message

load_spec does the three in order. Overrides edit the raw mapping before validation, so they
are validated exactly like the file. `base:` files are read here and merged by kexp.spec.bases.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from kexp.errors import SpecError
from kexp.spec.bases import Lines, Location, SpecFile, absolute_plugins, base_names, folder_of, merge_under, shown_path, without
from kexp.spec.schema import ExperimentSpec
from kexp.spec.validation import validate_spec

# --- YAML with line numbers, and nothing that can hang or bloat ---------------------------

# A spec is written by hand (the tutorials' are under 1 KB). PyYAML's pure-Python parser
# takes about 14 s per MB here, so larger files are refused before parsing.
MAX_SPEC_BYTES = 64 * 1024


class _SpecLoader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys, and anchors and aliases.

    Aliases let a 2 KB file expand to gigabytes (nine levels of nine aliases); a spec
    gains nothing from them that writing the value out or `--set` does not give.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            kind = "alias" if isinstance(event, yaml.AliasEvent) else "anchor"
            sigil = "*" if kind == "alias" else "&"
            raise yaml.composer.ComposerError(
                None, None, f"YAML {kind} '{sigil}{anchor}' is not allowed in a spec; write the value out", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(None, None, "a key must be a plain name, not a list or mapping", key_node.start_mark)
            if key_node.value == "<<" and key_node.style is None:
                raise yaml.constructor.ConstructorError(None, None, "YAML merge keys (<<) are not allowed in a spec; write the keys out", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's core schema instead of PyYAML's YAML 1.1: in 1.1 `032` is 26 (octal), `1:00` is 60
# (base 60), `yes`/`on`/`no` are booleans and `1e-3` is a string, each a silent surprise in a
# spec. Here only true/false are booleans, integers are decimal (0o/0x when written so), and
# `1e-3` is a float; anything else stays a string, which strict validation then names.
_SpecLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in [
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
    ("null", r"^(?:~|null|Null|NULL|)$", "~nN"),
]:
    _SpecLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first) + ([""] if _tag == "null" else []))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)  # "032" is 32, as in YAML 1.2, not octal


_SpecLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _key_lines(node: yaml.Node | None, file: str, prefix: str = "") -> Lines:
    """Map each dotted key of a composed YAML document to its file and 1-based line."""
    lines: Lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}{key_node.value}"
            lines[path] = Location(file, key_node.start_mark.line + 1)
            lines.update(_key_lines(value_node, file, path + "."))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{prefix}{i}"] = Location(file, item.start_mark.line + 1)
            lines.update(_key_lines(item, file, f"{prefix}{i}."))
    return lines


def _yaml_problem(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """(0-based line or None, one-line description) of a PyYAML error."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start and start.line != getattr(mark, "line", None):
        problem += f" ({context} started on line {start.line + 1})"
    return (mark.line if mark else None), " ".join(problem.split())


def parse_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """(value, composed node) of one YAML document, through the hardened loader."""
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def read_spec_text(path: Path) -> str:
    """The spec's text (read_spec_bytes, decoded)."""
    return decode_spec(read_spec_bytes(path), path)


def read_spec_bytes(path: Path) -> bytes:
    """The spec's bytes, reading at most MAX_SPEC_BYTES + 1 whatever the file is: a device
    (/dev/zero) or a pipe reports size 0, so the size on disk cannot be trusted to bound the read."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise SpecError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if len(data) > MAX_SPEC_BYTES:
        size = Path(path).stat().st_size if Path(path).is_file() else 0  # a regular file says its size; a device or pipe cannot
        amount = f"{size:,} bytes" if size > MAX_SPEC_BYTES else f"more than {MAX_SPEC_BYTES // 1024} KiB"
        raise SpecError([f"{path}: {amount} is too large for a spec (limit {MAX_SPEC_BYTES // 1024} KiB); is this the right file?"])
    return data


def decode_spec(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None


class SpecSource(NamedTuple):
    """read_yaml's result, read once and passed on: the merged mapping, where each key was set, the files read."""

    raw: dict
    lines: Lines
    files: tuple[SpecFile, ...]


def read_yaml(path: Path) -> SpecSource:
    """Parse a spec file, merge its bases under it, and say where every dotted key was set.

    The file is read once: a caller that needs the spec twice (validate checks for `sweep:`,
    then validates) passes this result on, since a pipe (`<(cat spec.yaml)`) is empty the second time.
    """
    data = read_spec_bytes(path)
    raw, lines = parse_document(data, Path(path), str(path))
    if raw is None:
        raise SpecError([f"{path}: the spec is empty; it needs at least name, data and model (see configs/ for examples)"])
    if not isinstance(raw, dict):
        raise SpecError([f"{path}: the spec must be a YAML mapping, got {type(raw).__name__}"])
    files = [SpecFile.of(path, data, "spec")]
    raw, lines = merge_bases(raw, lines, Path(path), [(str(path), Path(path).resolve())], files)
    return SpecSource(raw, lines, tuple(files))


def parse_document(data: bytes, path: Path, shown: str) -> tuple[Any, Lines]:
    """One file's value and key locations; a YAML error names the file (as `shown`) and line."""
    text = decode_spec(data, path)
    try:
        raw, node = parse_yaml(text)
    except yaml.YAMLError as exc:
        line, problem = _yaml_problem(exc)
        where = f"{shown}:{line + 1}" if line is not None else shown
        raise SpecError([f"{where}: YAML error: {problem}"]) from None
    return raw, _key_lines(node, shown)


def merge_bases(raw: dict, lines: Lines, path: Path, chain: list[tuple[str, Path]], files: list[SpecFile]) -> tuple[dict, Lines]:
    """`raw` with the files its `base:` names merged under it (theirs first, later ones winning), recursively.

    `chain` is the files from the spec to this one (as shown, and resolved) to find and name a cycle;
    `files` collects every file read."""
    folder = folder_of(path)
    absolute_plugins(raw, folder)
    if "base" not in raw:
        return raw, lines
    where = lines.get("base", chain[-1][0])
    names = base_names(raw.pop("base"), where)
    lines = without(lines, "base")
    merged: dict = {}
    merged_lines: Lines = {}
    for name in names:
        base_path, shown = folder / Path(name).expanduser(), shown_path(name, folder)
        if base_path.resolve() in {resolved for _, resolved in chain}:
            names_chain = " -> ".join([*(file for file, _ in chain), shown])
            raise SpecError([f"{where}: base: a cycle of bases: {names_chain}"])
        base_raw, base_lines = read_base(base_path, shown, where, files)
        base_raw, base_lines = merge_bases(base_raw, base_lines, base_path, [*chain, (shown, base_path.resolve())], files)
        merged, merged_lines = merge_under(merged, merged_lines, base_raw, base_lines)
    return merge_under(merged, merged_lines, raw, lines)


def read_base(path: Path, shown: str, where: Location | str, files: list[SpecFile]) -> tuple[dict, Lines]:
    """One base file's mapping and key locations (recorded in `files`); a problem names the `base:` key that named it."""
    try:
        data = read_spec_bytes(path)
    except SpecError as exc:
        raise SpecError([f"{where}: base: {problem.replace(str(path), shown, 1)}" for problem in exc.problems]) from None
    raw, lines = parse_document(data, path, shown)
    if not isinstance(raw, dict):
        got = "nothing (the file is empty)" if raw is None else type(raw).__name__
        raise SpecError([f"{where}: base: {shown} must be a YAML mapping of spec keys, got {got}"])
    record = SpecFile.of(path, data, "base")
    if all(file.path != record.path for file in files):  # a base two files share is listed once
        files.append(record)
    return raw, lines


# --- overrides -----------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, Any]:
    """`train.epochs=2` -> ("train.epochs", 2); the value is parsed as YAML."""
    path, sep, value = text.partition("=")
    path = path.strip()
    if not sep or not path or any(not part for part in path.split(".")):
        raise SpecError([f"--set {text}: expected KEY.PATH=VALUE, e.g. train.epochs=2"])
    if not value.strip():
        return path, None
    try:
        return path, parse_yaml(value)[0]
    except yaml.YAMLError as exc:
        _, problem = _yaml_problem(exc)
        raise SpecError([f"--set {text}: value is not valid YAML: {problem}"]) from None


def apply_override(raw: dict, path: str, value: Any) -> dict:
    """Set `raw[a][b]... = value` for a dotted path, creating mappings on the way; an integer
    part indexes a list the spec already has (`model.hidden_units.0=64`, `-1` for the last)."""
    node: Any = raw
    parts = path.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            key: Any = list_index(node, part, f"--set {path}={value}", ".".join(parts[:depth]))
        else:
            key = part
            if not last and part not in node and depth + 1 < len(parts) and is_index(parts[depth + 1]):
                raise SpecError([f"--set {path}={value}: '{where}' is not in the spec (its default applies); set the whole list, e.g. --set {where}=[...]"])
        if last:
            node[key] = value
            return raw
        child = node[key] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(child, str) and not isinstance(node, list):  # shorthand `optimizer: adam` means `optimizer: {name: adam}`
            child = node[key] = {"name": child}
        if not isinstance(child, (dict, list)):
            raise SpecError([f"--set {path}={value}: '{where}' holds {type(child).__name__} {child!r}, not a mapping or list"])
        node = child
    return raw


def is_index(part: str) -> bool:
    return part.lstrip("-").isdigit()


def list_index(items: list, part: str, setting: str, where: str) -> int:
    if not is_index(part):
        raise SpecError([f"{setting}: '{where}' is a list; address an item by its index, e.g. {where}.0, or set the whole list, e.g. {where}=[...]"])
    index = int(part)
    if not -len(items) <= index < len(items):
        raise SpecError([f"{setting}: '{where}' has {len(items)} item(s) ({items!r}); index {index} is out of range"])
    return index


# --- the whole read ---------------------------------------------------------------------


def load_spec(path: Path, overrides: list[str] | tuple[str, ...] = (), source: SpecSource | None = None) -> ExperimentSpec:
    """Read a YAML spec (or take `source`, read_yaml's result for it), apply `--set` overrides, validate, and fill in defaults."""
    raw, lines, files = copy.deepcopy(source) if source is not None else read_yaml(path)
    if "sweep" in raw:
        where = lines.get("sweep", path)
        raise SpecError([f"{where}: sweep: this spec describes a sweep; run it with `kexp sweep {path}` (kexp train trains one run)"])
    applied: dict[str, str] = {}
    for text in overrides:
        key, value = parse_override(text)
        apply_override(raw, key, value)
        applied[key] = f"--set {text}"
    return validate_spec(raw, str(path), lines, applied).with_spec_files(files)

