"""Plugins: the user's own Python code, registering datasets and models with kexp's own decorators.

    plugins: [my_models.py, my_pkg.datasets]     # in a spec: files (relative to the spec) or modules

and an installed package may offer plugins through the entry-point group `kexp.plugins`
(each entry names a module to import, as pytest's `pytest11` does). A plugin is code the user
chose to run, like a script; nothing else in a spec runs code.

Runs stay self-describing: each plugin is described by a `PluginRecord` (its module, file,
version and SHA-256), which the run keeps in env.json beside a copy of each plugin file. A
command that reuses the run re-imports the plugin and refuses one whose source has changed
since the run (`check_recorded`), unless told to accept it, which is then a warning.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from kexp.errors import PluginError

ENTRY_POINT_GROUP = "kexp.plugins"
COPIES_FOLDER = "plugins"  # <run>/plugins/<file>.py: the run's copy of each plugin file


@dataclass(frozen=True)
class PluginRecord:
    """One imported plugin, as a run records it (env.json "plugins")."""

    name: str  # as the spec lists it (a file's absolute path, or a module name), or the entry point's name
    module: str  # the module imported
    file: str | None  # its source file, absolute (None for a namespace package)
    sha256: str | None  # of the file; of a package's .py files for a module plugin (see source_hash)
    version: str | None  # the installed distribution's version, for a module or entry-point plugin
    origin: str  # "spec" (listed in a spec's plugins) or "entry point"
    copy: str | None = None  # the run's copy of a plugin file, relative to the run directory

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> PluginRecord:
        return cls(**{key: document.get(key) for key in cls.__dataclass_fields__})

    @property
    def is_file(self) -> bool:
        return self.origin == "spec" and is_file_name(self.name)

    def describe(self) -> str:
        """How a listing names where an entry comes from."""
        if self.origin == "entry point":
            return f"entry point {self.name} ({self.module}{f' {self.version}' if self.version else ''})"
        return f"plugin {self.file if self.is_file else self.module}"


# Plugins imported by this process, by the name the spec lists (or the entry point's): importing is
# done once, and again only when the source has changed (a test, or --allow-changed-code).
_LOADED: dict[str, PluginRecord] = {}
_ENTRY_POINTS_LOADED = False


def is_file_name(name: str) -> bool:
    """A plugin entry that names a file (my_models.py, lib/models.py) rather than a module (my_pkg.models)."""
    return name.endswith(".py") or "/" in name or "\\" in name


def resolve_names(names: Any, folder: Path) -> Any:
    """The spec's plugin entries with each file made absolute against `folder` (the spec's); modules as written."""
    if not isinstance(names, list):
        return names  # not a list: the schema says so
    return [os.path.normpath(os.path.join(os.path.abspath(folder), os.path.expanduser(name))) if isinstance(name, str) and is_file_name(name) else name
            for name in names]


# --------------------------------------------------------------------------- importing


def import_plugins(names: list[str]) -> list[PluginRecord]:
    """Import each plugin a spec lists (once per process and source), as records; PluginError names a failure's file and line."""
    return [import_plugin(name) for name in names]


def import_plugin(name: str) -> PluginRecord:
    """Import one plugin (a file path or a module name) unless this source is imported already."""
    loaded = _LOADED.get(name)
    current = source_hash(name)
    if loaded is not None and (current is None or current == loaded.sha256):
        return loaded  # the same code (or its run's copy, the original being gone), imported already
    if loaded is not None:
        forget(loaded)
    if is_file_name(name):
        module = import_file(Path(name), name)
        record = file_record(name, module.__name__, Path(name))
    else:
        import_module(name)
        record = module_record(name, name, "spec")
    _LOADED[name] = record
    return record


def import_copy(recorded: PluginRecord, copy: Path) -> PluginRecord:
    """Import a run's copy of a plugin file whose original is gone, standing in for the original's name."""
    previous = _LOADED.get(recorded.name)
    if previous is not None:
        forget(previous)
    import_file(copy, recorded.name, module_name=recorded.module)
    _LOADED[recorded.name] = recorded
    return recorded


def import_file(path: Path, name: str, module_name: str | None = None) -> ModuleType:
    """Import a plugin file as the module named after its stem, its folder on sys.path (so it may import
    its neighbours) while it runs; PluginError (exit 2) naming the file and line of any failure."""
    if not path.is_file():
        raise PluginError(f"{path}: plugin file not found (plugins: {name})")
    module_name = module_name or path.stem
    held = sys.modules.get(module_name)
    if held is not None and getattr(held, "__file__", None) != str(path) and module_name not in {r.module for r in _LOADED.values()}:
        raise PluginError(f"{path}: plugin module name '{module_name}' is taken by {getattr(held, '__file__', None) or 'a built-in module'}; rename the file")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with folder_on_path(path.parent), quiet_native_stderr():
            spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[module_name]
        forget_module(module_name)
        if isinstance(exc, Exception):
            raise PluginError(f"{failure_location(exc, path.parent, path)}: plugin {path.name} failed to import: {describe(exc)}") from None
        raise
    return module


def import_module(name: str) -> ModuleType:
    """Import a module plugin; PluginError (exit 2) for one that is not there or fails to import."""
    try:
        with quiet_native_stderr():
            return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise PluginError(f"plugins: no module named '{name}' (a file needs its .py; a module must be importable: "
                              f"installed, or on PYTHONPATH)") from None
        raise PluginError(f"{failure_location(exc, package_folder(name))}: plugin {name} failed to import: {describe(exc)}") from None
    except Exception as exc:
        raise PluginError(f"{failure_location(exc, package_folder(name))}: plugin {name} failed to import: {describe(exc)}") from None


def quiet_native_stderr():
    """TensorFlow's start-up lines hidden while a plugin imports Keras, as `kexp train` hides them
    (unless TF_CPP_MIN_LOG_LEVEL=0); whatever else the plugin writes to stderr is shown."""
    from kexp.train.runtime import quiet_native_stderr as quiet

    return quiet()


@contextlib.contextmanager
def folder_on_path(folder: Path) -> Iterator[None]:
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def forget(record: PluginRecord) -> None:
    """Unregister what a plugin registered and drop its module, so that a changed source imports afresh."""
    forget_module(record.module)
    sys.modules.pop(record.module, None)
    _LOADED.pop(record.name, None)


def forget_module(module: str) -> None:
    for registry in registries():
        registry.forget_module(module)


def registries() -> tuple[Any, ...]:
    """The dataset and model registries, looked up when needed: kexp.registry imports this module to load entry points."""
    registry = sys.modules.get("kexp.registry")
    return (registry.DATASETS, registry.MODELS) if registry is not None else ()


def load_entry_points() -> list[PluginRecord]:
    """Import every installed `kexp.plugins` entry point (once per process)."""
    global _ENTRY_POINTS_LOADED
    if not _ENTRY_POINTS_LOADED:
        _ENTRY_POINTS_LOADED = True
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            import_module(point.value.split(":")[0])
            record = module_record(point.name, point.value.split(":")[0], "entry point", point.dist.version if point.dist else None)
            _LOADED[f"entry point {point.name}"] = record
    return [r for key, r in _LOADED.items() if key.startswith("entry point ")]


def loaded_plugins() -> list[PluginRecord]:
    return list(_LOADED.values())


def origin_of(registry: Any, name: str) -> str:
    """Where a registry entry comes from, as listings say it: built-in, or the plugin that registered it."""
    module = registry.module_of(name)
    if module.startswith("kexp."):
        return "built-in"
    plugin = plugin_of(module)
    return plugin.describe() if plugin is not None else f"module {module}"


def plugin_of(module: str) -> PluginRecord | None:
    """The plugin whose import registered entries from `module` (itself or one of its submodules)."""
    for record in _LOADED.values():
        if module == record.module or module.startswith(record.module + ".") or record.module.startswith(module + "."):
            return record
    return None


# --------------------------------------------------------------------------- describing sources


def file_record(name: str, module: str, path: Path) -> PluginRecord:
    return PluginRecord(name=name, module=module, file=str(path), sha256=file_hash(path), version=None, origin="spec")


def module_record(name: str, module: str, origin: str, version: str | None = None) -> PluginRecord:
    imported = sys.modules.get(module)
    file = getattr(imported, "__file__", None)
    return PluginRecord(name=name, module=module, file=file, sha256=module_hash(module), version=version or distribution_version(module),
                        origin=origin)


def distribution_version(module: str) -> str | None:
    """The version of the installed distribution that provides the module's top-level package, if any."""
    top = module.split(".")[0]
    for distribution in importlib.metadata.packages_distributions().get(top, []):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(distribution)
    return None


def source_hash(name: str) -> str | None:
    """The plugin's SHA-256 as it is on disk now, without importing it (None: not there)."""
    if is_file_name(name):
        return file_hash(Path(name)) if Path(name).is_file() else None
    return module_hash(name)


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def module_hash(module: str) -> str | None:
    """The SHA-256 of a module plugin's code: its top-level package's .py files (relative names and
    contents, in order), since a plugin module may import any of its package's modules."""
    folder = package_folder(module)
    if folder is None:
        return None
    files = sorted(folder.rglob("*.py")) if folder.is_dir() else [folder]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(folder.parent).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def package_folder(module: str) -> Path | None:
    """The folder of the module's top-level package (or the file of a top-level module), found without importing it."""
    top = module.split(".")[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    if found.submodule_search_locations:
        return Path(list(found.submodule_search_locations)[0])
    return Path(found.origin) if found.origin and found.origin not in ("built-in", "frozen") else None


# --------------------------------------------------------------------------- errors inside plugin code


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}" if str(exc) else type(exc).__name__


def failure_location(exc: BaseException, folder: Path | None, fallback: Path | None = None) -> str:
    """file:line of the innermost frame of the plugin's own code (under `folder`), else of the syntax error, else the fallback."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    where = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if folder is not None and Path(frame.filename).is_relative_to(folder) and "site-packages" not in frame.filename[len(str(folder)):]:
            where = f"{frame.filename}:{frame.lineno}"
    return where or str(fallback or folder or "plugin")


def call_plugin_code(what: str, fn: Any, *args: Any) -> Any:
    """fn(*args) for a registered entry from a plugin: what it raises becomes one line (exit 1) naming
    the plugin's file and line, as the user sees it (their code, not kexp's)."""
    return run_plugin_code(what, fn, lambda: fn(*args))


def run_plugin_code(what: str, fn: Any, run: Any) -> Any:
    """run() for code of the plugin that defines `fn` (its builder, or the model it built): an exception
    becomes one line (exit 1) at the innermost line of the plugin's folder, else at fn's definition."""
    from kexp.errors import KexpError

    try:
        return run()
    except KexpError:
        raise
    except Exception as exc:
        folder = Path(fn.__code__.co_filename).parent
        where = failure_location(exc, folder)
        if where == str(folder):  # no frame of the plugin's own (a Keras error in fit, say): its builder's line
            where = definition_line(fn)
        raise PluginError(f"{where}: {what} raised {describe(exc)}", exit_code=1) from None


def definition_line(fn: Any) -> str:
    """file:line of a function's `def` (a code object's first line is its first decorator's)."""
    code = fn.__code__
    try:
        with open(code.co_filename, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return f"{code.co_filename}:{code.co_firstlineno}"
    for number in range(code.co_firstlineno, len(lines) + 1):
        if lines[number - 1].lstrip().startswith(("def ", "async def ")):
            return f"{code.co_filename}:{number}"
    return f"{code.co_filename}:{code.co_firstlineno}"


def is_plugin_entry(fn: Any) -> bool:
    return not str(getattr(fn, "__module__", "")).startswith("kexp.")


# --------------------------------------------------------------------------- a run's plugins, checked again


def check_recorded(recorded: list[PluginRecord], run_dir: Path, allow_changed: bool) -> list[str]:
    """Re-import a run's plugins as they were; PluginError (exit 2) for one whose source has changed
    since the run, naming its file and both hashes, unless `allow_changed` (then a warning)."""
    warnings = []
    for record in recorded:
        now = source_hash(record.name) if record.origin == "spec" else module_hash(record.module)
        label = record.file or record.module
        if now is None and record.copy and (run_dir / record.copy).is_file():
            warnings.append(f"plugin {label} is gone; using the run's copy {run_dir / record.copy}")
            import_copy(record, run_dir / record.copy)
            continue
        if now is None and record.origin == "entry point":
            raise PluginError(f"{record.module}: the run {run_dir.name} used {record.describe()}, which is not installed here; "
                              f"install its package (or put {record.module} on PYTHONPATH)")
        if now is None:
            raise PluginError(f"{label}: plugin not found (the run {run_dir.name} used it)")
        if now != record.sha256:
            change = f"sha256 {str(record.sha256)[:12]}… at the run, {now[:12]}… now"
            if not allow_changed:
                raise PluginError(f"{label}: plugin changed since {run_dir.name} ran it ({change}); "
                                  "restore it, or pass --allow-changed-code to use the changed code (recorded as a warning)")
            warnings.append(f"{label}: plugin changed since the run ({change}); used as it is now (--allow-changed-code)")
        if record.origin == "spec":
            import_plugin(record.name)
    return warnings


def plugins_of_run(plugin_names: list[str], dataset_module: str, model_module: str) -> list[PluginRecord]:
    """The plugins a run depends on, as it records them: those its spec lists, and an entry point's
    when the run's dataset or model comes from one. Each file plugin's record names the run's copy."""
    records = [_LOADED[name] for name in plugin_names if name in _LOADED]
    for module in (dataset_module, model_module):
        owner = plugin_of(module)
        if owner is not None and owner.origin == "entry point" and owner not in records:
            records.append(owner)
    return [replace(r, copy=f"{COPIES_FOLDER}/{Path(r.file).name}") if r.is_file and r.file else r for r in records]


def unload_all() -> None:
    """Forget every plugin this process imported (spec-listed and entry points): a fresh start, for tests."""
    global _ENTRY_POINTS_LOADED
    for record in list(_LOADED.values()):
        forget(record)
    _ENTRY_POINTS_LOADED = False
