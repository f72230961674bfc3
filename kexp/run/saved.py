"""A saved run reopened for `kexp evaluate`, `predict` and `export`: its spec, records and model, checked.

Nothing here imports TensorFlow: a run that cannot be used says so in a fraction of a second.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kexp.errors import RunDirError
from kexp.run.files import RunFiles
from kexp.run.lifecycle import effective_state
from kexp.run.records import Env, Metrics, Status, read_env, read_metrics, read_preprocessing, read_status


@dataclass
class RunRecord:
    """A finished (or interrupted) run directory, reopened for evaluate, predict and export."""

    path: Path
    spec: Any  # kexp.spec.ExperimentSpec, from config.yaml
    status: Status
    env: Env
    metrics: Metrics | None
    preprocessing: dict[str, Any]  # kexp.preprocessing.to_document's dict (that module owns its format)
    warnings: list[str] = field(default_factory=list)

    @property
    def files(self) -> RunFiles:
        return RunFiles(self.path)

    @property
    def model_path(self) -> Path:
        return self.files.model


def open_run(run_dir: Path, allow_changed_code: bool = False) -> RunRecord:
    """Reopen a run directory, or say in one line why it cannot be used (RunDirError; PluginError for a
    plugin changed since the run, unless `allow_changed_code`, which makes it a warning)."""
    from kexp.plugins import PluginRecord, check_recorded
    from kexp.spec import load_spec

    files = RunFiles(Path(run_dir))
    if not files.path.is_dir():
        raise RunDirError(f"{files.path}: no such run directory")
    if not files.config.is_file():
        raise RunDirError(f"{files.path}: not a kexp run directory (no {files.config.name})")
    env = read_env(files.path)
    check_not_from_newer_kexp(files.env, env)
    status = read_status(files.path)
    warnings = usable_state(files.status, status)
    metrics = read_metrics(files.path) if files.metrics.exists() else None
    check_single_model(files, metrics)
    if not files.preprocessing.exists():
        raise RunDirError(f"{files.preprocessing}: not found; the run directory is incomplete (or made before kexp 0.2): train again")
    plugins = [PluginRecord.from_json(p) for p in env.plugins or []]
    warnings += check_recorded(plugins, files.path, allow_changed_code)  # before the spec imports them
    return RunRecord(files.path, load_spec(files.config), status, env, metrics, read_preprocessing(files.path), warnings)


def check_single_model(files: RunFiles, metrics: Metrics | None) -> None:
    """RunDirError unless the run saved one whole Keras model (a run of folds or seeds has none)."""
    if metrics is not None and metrics.members:
        raise RunDirError(f"{files.path}: a {metrics.protocol} run of {len(metrics.members)} members has no single model; "
                          f"its {files.metrics.name} holds each member's numbers and their mean, std and 95% CI")
    if not files.model.is_file():
        raise RunDirError(f"{files.model}: not found; the run saved no model")
    if not zipfile.is_zipfile(files.model):  # checked here, before TensorFlow takes seconds to start
        raise RunDirError(f"{files.model}: damaged or not a Keras model (not a .keras zip archive)")


def check_not_from_newer_kexp(source: Path, env: Env) -> None:
    import kexp

    made_by = str(env.document.get("kexp", "0"))
    if version_tuple(made_by) > version_tuple(kexp.__version__):
        raise RunDirError(f"{source}: the run was made by kexp {made_by}, newer than this kexp {kexp.__version__}; upgrade kexp")


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def usable_state(source: Path, status: Status) -> list[str]:
    """Warnings for a run whose model can be used; RunDirError for one whose model cannot."""
    state = status.state
    if state == "completed":
        return []
    if state == "interrupted":
        return [f"{source.parent.name} was interrupted ({status.document.get('error', 'by a signal')}): using the model as it was then"]
    if state == "failed":
        raise RunDirError(f"{source}: the run failed ({status.document.get('error', 'no reason recorded')}); its model is not a trained one")
    if state == "diverged":
        raise RunDirError(f"{source}: the run diverged ({status.document.get('error', 'NaN loss')}); it has no usable model")
    if effective_state(status) == "crashed":
        raise RunDirError(f"{source}: the run crashed (its process {status.pid} on {status.host} is gone); "
                          f"continue it with: kexp resume {source.parent}")
    raise RunDirError(f"{source}: the run is '{state}' (still training); it has no final model yet")


