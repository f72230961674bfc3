"""Base specs: `base: common.yaml` (or a list) deep-merged under the spec that names it.

    merged, lines = merge_under(base_raw, base_lines, spec_raw, spec_lines)

The spec's own keys win; mappings merge key by key; lists and scalars replace. Each dotted key
keeps the Location (file and line) of the file that set it, so an error in a key that only a base
sets names the base. Reading the files (and refusing cycles) is kexp.spec.loading's job; this
module holds what needs no file: the merge, the hand-off types and the `plugins:` paths.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kexp.errors import SpecError


@dataclass(frozen=True)
class Location:
    """Where a spec key was set: a file (as the user named it, or as a base's path from it) and a 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


Lines = dict[str, Location]  # dotted key -> where it was set


@dataclass(frozen=True)
class SpecFile:
    """A file a spec was read from, recorded in env.json's spec_files so a run names every file that shaped it."""

    path: str  # absolute
    sha256: str  # of the file's bytes
    role: Literal["spec", "base"]

    @classmethod
    def of(cls, path: Path, data: bytes, role: Literal["spec", "base"]) -> SpecFile:
        return cls(str(Path(os.path.abspath(path))), hashlib.sha256(data).hexdigest(), role)

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256, "role": self.role}


def base_names(value: Any, where: Location | str) -> list[str]:
    """The files a `base:` key names, one or a list; anything else is refused at the key's line."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise SpecError([f"{where}: base: expected a file name or a list of file names, e.g. base: common.yaml (got {value!r})"])
    return names


def folder_of(path: Path) -> Path:
    """The folder that a file's relative names start from: its own, or the working folder for a pipe or stdin."""
    path = Path(path)
    return path.parent if path.is_file() else Path(".")


def shown_path(name: str, folder: Path) -> str:
    """A base's name as errors show it: from the folder of the file naming it (configs/common.yaml)."""
    name = os.path.expanduser(name)
    return name if os.path.isabs(name) else os.path.normpath(os.path.join(folder, name))


def absolute_plugins(raw: dict, folder: Path) -> None:
    """Make each `plugins:` entry that is a file path absolute, from the folder of the file that set it:
    lists replace in a merge, so a base's relative paths must still work from the spec's folder."""
    from kexp.plugins import resolve_names

    if "plugins" in raw:
        raw["plugins"] = resolve_names(raw["plugins"], folder)


def merge_under(base: dict, base_lines: Lines, spec: dict, spec_lines: Lines, prefix: str = "") -> tuple[dict, Lines]:
    """`spec` deep-merged over `base`, and where each key of the result was set.

    A shorthand string under a mapping (`model: mlp` in the base, `model: {hidden_units: [8]}`
    in the spec) is read as {name: mlp}, as `--set model.hidden_units=[8]` reads it."""
    merged: dict = {}
    lines: Lines = {}
    for key in {**base, **spec}:
        dotted = f"{prefix}{key}"
        if key not in spec:
            merged[key] = base[key]
            lines.update(lines_under(base_lines, dotted))
            continue
        below, value = base.get(key), spec[key]
        if isinstance(value, dict) and isinstance(below, str):
            below = {"name": below}
            base_lines = {**base_lines, f"{dotted}.name": base_lines[dotted]} if dotted in base_lines else base_lines
        if isinstance(value, dict) and isinstance(below, dict):
            merged[key], inner = merge_under(below, base_lines, value, spec_lines, f"{dotted}.")
            lines.update(inner)
            if dotted in spec_lines:
                lines[dotted] = spec_lines[dotted]
        else:
            merged[key] = value
            lines.update(lines_under(spec_lines, dotted))
    return merged, lines


def lines_under(lines: Lines, dotted: str) -> Lines:
    """The entries of `lines` for a key and everything inside it."""
    inside = dotted + "."
    return {key: where for key, where in lines.items() if key == dotted or key.startswith(inside)}


def without(lines: Lines, dotted: str) -> Lines:
    """`lines` less a key and everything inside it."""
    inside = dotted + "."
    return {key: where for key, where in lines.items() if key != dotted and not key.startswith(inside)}
