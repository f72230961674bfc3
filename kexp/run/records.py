"""The records of a run directory, typed: status, env, metrics, history, preprocessing, the sweep manifest.

Each record is read here into a frozen dataclass whose fields are the keys kexp reads; the
JSON document it came from is kept whole in `document`, so a record written by another kexp
(0.2.0, or a newer one with more keys) is shown, compared and continued exactly as it is.
Each is written here too, atomically, with the very bytes kexp has always written.
Nothing here imports TensorFlow: reading runs must stay fast.
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Self, TypedDict

import yaml

from kexp.errors import RunDirError
from kexp.run.files import MANIFEST, PREPROCESSING_FILE, RunFiles, SweepFiles
from kexp.run.io import now_iso, rewrite_in_place, strict_json, write_json, write_text_atomic

# libyaml's parser reads a resolved spec in 0.34 ms, PyYAML's own in 1.8: 0.7 s saved over 500 runs.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# history.json's keys besides the per-epoch series
_HISTORY_KEYS = ("epochs", "epoch_seconds", "non_finite")


# --------------------------------------------------------------------------- reading JSON


def read_json(path: Path) -> Any:
    """The file's JSON; RunDirError (one line) for a missing or broken file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: not found") from None
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc})") from None


def read_small_json(path: Path) -> tuple[Any, str | None]:
    """(data, None), or (None, "why not") for a missing or truncated file: for listings that show damage, never raise."""
    try:
        return json.loads(Path(path).read_bytes()), None
    except FileNotFoundError:
        return None, f"{Path(path).name} missing"
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"{Path(path).name} unreadable ({type(exc).__name__})"


def read_config(run_dir: Path) -> tuple[dict | None, str | None]:
    """The run's config.yaml as plain data (not validated: a run of an older kexp still lists), or (None, why not)."""
    name = RunFiles(run_dir).config.name
    try:
        spec = yaml.load(RunFiles(run_dir).config.read_bytes(), Loader=_YAML_LOADER)
    except FileNotFoundError:
        return None, f"{name} missing"
    except (OSError, yaml.YAMLError) as exc:
        return None, f"{name} unreadable ({type(exc).__name__})"
    if not isinstance(spec, dict):
        return None, f"{name} is not a spec"
    return spec, None


class Record:
    """A run file's typed view: each dataclass field is the document's key of that name (None when
    absent); `document` keeps the whole JSON, so nothing a file holds is lost."""

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Self:
        names = [f.name for f in fields(cls) if f.name != "document"]
        return cls(**{name: document.get(name) for name in names}, document=document)


# --------------------------------------------------------------------------- status.json


@dataclass(frozen=True)
class Status(Record):
    """status.json: the run's state and who is (or was) working on it (kexp.run.lifecycle writes it)."""

    state: str | None = None
    updated: str | None = None
    started: str | None = None
    ended: str | None = None
    attempt: int | None = None
    pid: int | None = None
    pid_started: int | None = None
    host: str | None = None
    heartbeat: str | None = None
    error: str | None = None
    signal: str | None = None
    exit_code: int | None = None
    epoch: int | None = None
    member: str | None = None
    document: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def read_status(run_dir: Path) -> Status:
    return Status.from_document(read_json(RunFiles(run_dir).status))


def write_status(run_dir: Path, state: str, **fields: Any) -> Status:
    """status.json, atomically; on a full disk (no room for the temp file) rewritten in place instead,
    which fits in the blocks the old file holds: a run that fails for want of space still says so."""
    document = {"state": state, "updated": now_iso(), **fields}
    path = RunFiles(run_dir).status
    try:
        write_json(path, document)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or not path.is_file():
            raise
        rewrite_in_place(path, strict_json(document) + "\n")
    return Status.from_document(document)


# --------------------------------------------------------------------------- env.json


@dataclass(frozen=True)
class Env(Record):
    """env.json: versions, machine, seed, the resolved spec and the data's fingerprint, each attempt."""

    kexp: str | None = None
    host: str | None = None
    device: str | None = None
    processes: int | None = None  # one run over several processes (backend jax); absent before kexp recorded it
    seed: int | None = None
    data_dir: str | None = None
    data_files: list[dict[str, Any]] | None = None
    spec: dict[str, Any] | None = None
    plugins: list[dict[str, Any]] | None = None  # kexp.plugins.PluginRecord.to_json of each plugin the run used
    spec_files: list[dict[str, Any]] | None = None  # [{path, sha256, role: spec|base}] of the files the spec was read from
    started: str | None = None
    ended: str | None = None
    attempts: list[dict[str, Any]] | None = None
    document: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def read_env(run_dir: Path) -> Env:
    return Env.from_document(read_json(RunFiles(run_dir).env))


def write_env(run_dir: Path, document: dict[str, Any]) -> None:
    """env.json as the run starts (kexp.train.record builds the document)."""
    write_json(RunFiles(run_dir).env, document)


def add_env_attempt(run_dir: Path, attempt: dict[str, Any]) -> None:
    """Another attempt (host, pid, time, command) of a resumed run; the run has not ended yet."""
    document = read_json(RunFiles(run_dir).env)
    document.setdefault("attempts", []).append(attempt)
    document["ended"] = None
    write_env(run_dir, document)


def mark_env_ended(run_dir: Path) -> None:
    """The time the run's last attempt ended, as it completes."""
    document = read_json(RunFiles(run_dir).env)
    document["ended"] = now_iso()
    write_env(run_dir, document)


# --------------------------------------------------------------------------- metrics.json


@dataclass(frozen=True)
class Metrics(Record):
    """metrics.json of a run or a member: final train/validation/test metrics, report, timings, members' numbers."""

    train: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None
    test: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    aggregate: dict[str, Any] | None = None
    members: list[dict[str, Any]] | None = None
    protocol: str | None = None
    task: str | None = None
    loss_function: str | None = None
    train_metrics_from: str | None = None
    epochs_completed: int | None = None
    fit_seconds: float | None = None
    wall_seconds: float | None = None
    attempts: int | None = None
    data: dict[str, Any] | None = None
    document: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def part(self, name: str) -> dict[str, Any] | None:
        """The metrics of one part: train, validation or test."""
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]


def has_metrics(folder: Path) -> bool:
    """Whether the run (or member folder) has written its final metrics."""
    return RunFiles(folder).metrics.is_file()


def read_metrics(folder: Path) -> Metrics:
    return Metrics.from_document(read_json(RunFiles(folder).metrics))


def write_metrics(folder: Path, document: dict[str, Any]) -> None:
    write_json(RunFiles(folder).metrics, document)


# --------------------------------------------------------------------------- history.json


@dataclass(frozen=True)
class History:
    """history.json: one value per finished epoch of each Keras metric, and each epoch's seconds."""

    epochs: int | None
    epoch_seconds: list[float]
    series: dict[str, list[float | None]]  # loss, val_loss, accuracy, ...; NaN is null (strict JSON)
    document: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> History:
        series = {k: v for k, v in document.items() if k not in _HISTORY_KEYS}
        epochs = document.get("epochs")
        return cls(epochs if isinstance(epochs, int) else None, document.get("epoch_seconds") or [], series, document)


def has_history(folder: Path) -> bool:
    return RunFiles(folder).history.exists()


def read_history(folder: Path) -> History:
    return History.from_document(read_json(RunFiles(folder).history))


def write_history(folder: Path, epoch_seconds: list[float], series: dict[str, list[float]]) -> None:
    """history.json with every finished epoch, atomically (a reader never sees half an epoch)."""
    write_json(RunFiles(folder).history, {"epochs": len(epoch_seconds), "epoch_seconds": epoch_seconds, **series})


# --------------------------------------------------------------------------- preprocessing, config


def write_preprocessing(run_dir: Path, document: dict[str, Any]) -> None:
    """The fitted preprocessing as data (kexp.preprocessing.to_document); the run store owns the file."""
    (run_dir / PREPROCESSING_FILE).parent.mkdir(exist_ok=True)
    write_json(run_dir / PREPROCESSING_FILE, document)


def read_preprocessing(run_dir: Path) -> dict[str, Any]:
    """kexp.preprocessing's document (its format is that module's)."""
    return read_json(run_dir / PREPROCESSING_FILE)


def write_plugin_copies(run_dir: Path, copies: dict[str, Path]) -> None:
    """The run's copy of each plugin file it used ({path in the run: original}), so the run keeps the code it ran."""
    for relative, original in copies.items():
        (run_dir / relative).parent.mkdir(exist_ok=True)
        write_text_atomic(run_dir / relative, original.read_text(encoding="utf-8"))


def write_config(run_dir: Path, text: str) -> None:
    """config.yaml: the resolved spec, as YAML text with its header comment."""
    write_text_atomic(RunFiles(run_dir).config, text)


# --------------------------------------------------------------------------- manifest.json


class Trial(TypedDict, total=False):
    """One trial of a sweep, as manifest.json lists it (the sweep driver and its display share these)."""

    id: str
    point: int
    params: dict[str, Any]
    seed: int
    state: str  # pending, running, completed, interrupted, failed, diverged, pruned
    run_dir: str
    exit_code: int | None
    attempts: int
    failures: int
    started: str | None
    ended: str | None
    error: str | None
    command: str
    epochs: int  # the trial's train.epochs (a pruner's last step)
    process: dict[str, Any] | None  # {pid, started, host} of a local trial's process (None on Ray)
    # with a study (--method tpe, --prune): its trial number (the id's), the epoch the pruner stopped it at,
    # and the value the study was told (None for a pruned or failed trial)
    number: int
    pruned_at: int
    value: float | None


class Manifest(TypedDict, total=False):
    """manifest.json of a sweep directory, rewritten atomically on every change."""

    sweep: str
    fingerprint: str
    trials: list[Trial]
    updated: str
    warnings: list[str]  # "<time>: <warning>" of each continuation that accepted something (--allow-changed-code)


def has_manifest(sweep_dir: Path) -> bool:
    return (Path(sweep_dir) / MANIFEST).is_file()


def read_manifest(sweep_dir: Path) -> Manifest:
    return read_json(Path(sweep_dir) / MANIFEST)


def write_manifest(sweep_dir: Path, manifest: Manifest) -> None:
    """The manifest, stamped with the time of this change."""
    manifest["updated"] = now_iso()
    write_json(Path(sweep_dir) / MANIFEST, manifest)


# --------------------------------------------------------------------------- sweep.yaml


def write_sweep_spec(sweep_dir: Path, document: dict[str, Any]) -> None:
    """sweep.yaml: what the sweep is (base spec, --set overrides, space), under a line saying how to continue it."""
    header = f"# What this sweep is; continue it with: kexp sweep --resume {sweep_dir}\n"
    write_text_atomic(SweepFiles(sweep_dir).spec, header + yaml.safe_dump(document, sort_keys=False))


def read_sweep_yaml(sweep_dir: Path) -> dict[str, Any]:
    """sweep.yaml as a mapping; RunDirError naming the file when it cannot be read or is not one."""
    path = SweepFiles(sweep_dir).spec
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RunDirError(f"{path}: cannot read it ({' '.join(str(exc).split())})") from None
    if not isinstance(document, dict):
        raise RunDirError(f"{path}: not a sweep description (no mapping)")
    return document


def sweep_yaml_or_empty(sweep_dir: Path) -> dict[str, Any]:
    """For readers that have a default: an unreadable sweep.yaml is an empty one."""
    try:
        return read_sweep_yaml(sweep_dir)
    except RunDirError:
        return {}


def read_sweep_plugins(sweep_dir: Path) -> list[dict[str, Any]]:
    """The plugins the sweep's trials use (kexp.plugins.PluginRecord.to_json each), as sweep.yaml records them."""
    plugins = sweep_yaml_or_empty(sweep_dir).get("plugins")
    return list(plugins) if isinstance(plugins, list) else []


def read_sweep_metric(sweep_dir: Path) -> str | None:
    """The metric the sweep's summary compares, as sweep.yaml records it (None: the task's main metric)."""
    return (read_sweep_space(sweep_dir) or {}).get("metric")


def read_sweep_space(sweep_dir: Path) -> dict[str, Any] | None:
    """The sweep's space as sweep.yaml records it (method, params, prune, monitor, ...), or None without a readable one."""
    space = sweep_yaml_or_empty(sweep_dir).get("space")
    return space if isinstance(space, dict) else None
