"""`kexp sweep`'s sweep directory and its trials: created or found again, reconciled with their
runs' own status, and the commands, backends and outcomes of their processes (kexp.sweep.driver runs them)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexp.errors import KexpError, RunDirError
from kexp.events import Emit
from kexp.plugins import PluginRecord, check_recorded, plugins_of_run
from kexp.registry import DATASETS, MODELS
from kexp.run.dirs import create_run_dir
from kexp.run.files import MANIFEST, SWEEPS, RunFiles, SweepFiles
from kexp.run.io import now_iso
from kexp.run.lifecycle import effective_state, process_alive, process_start_ticks
from kexp.run.records import (
    Manifest,
    Status,
    Trial,
    has_manifest,
    read_manifest,
    read_status,
    read_sweep_plugins,
    write_manifest,
    write_sweep_spec,
)
from kexp.sweep.proposals import SearchSettings, write_trial_spec
from kexp.sweep.space import Plan

# --- the sweep directory ---------------------------------------------------------------


def create_sweep_dir(runs_dir: Path, plan: Plan, search: SearchSettings | None = None) -> Path:
    sweep_dir = create_run_dir(Path(runs_dir) / SWEEPS, plan.name, utc=True)
    files = SweepFiles(sweep_dir)
    files.trial_specs.mkdir()
    files.trial_logs.mkdir()
    for trial in plan.trials:
        spec = plan.specs[trial["id"]]
        trial["epochs"] = spec.train.epochs
        write_trial_spec(sweep_dir, trial, spec)
    first = next(iter(plan.specs.values()))
    spec_files = [file.to_json() for file in first.spec_files]  # the sweep's spec and its bases
    document = {"name": plan.name, "config": str(plan.config.resolve()), "spec_files": spec_files, "set": plan.overrides,
                "space": plan.space.model_dump(mode="json"), "fingerprint": plan.fingerprint, "created": now_iso(),
                "plugins": [p.to_json() for p in sweep_plugins(plan)]}
    if search is not None:
        document["search"] = search.to_json()
    write_sweep_spec(sweep_dir, document)
    write_manifest(sweep_dir, {"sweep": sweep_dir.name, "fingerprint": plan.fingerprint, "trials": plan.trials})
    return sweep_dir


def sweep_plugins(plan: Plan) -> list[PluginRecord]:
    """The plugins of the sweep's trials (every trial shares the spec's plugins list; a swept data or model name may add an entry point)."""
    records: list[PluginRecord] = []
    for spec in plan.specs.values():
        for record in plugins_of_run(spec.plugins, DATASETS.module_of(spec.data.name), MODELS.module_of(spec.model.name)):
            if record not in records:
                records.append(record)
    return records


def check_sweep_plugins(sweep_dir: Path, manifest: Manifest, allow_changed_code: bool, emit: Emit) -> None:
    """A continued sweep's plugins must be the code its earlier trials ran (PluginError), unless allowed:
    then a warning, emitted and kept in the manifest's `warnings` with its time."""
    records = [PluginRecord.from_json(p) for p in read_sweep_plugins(sweep_dir)]
    for warning in check_recorded(records, sweep_dir, allow_changed_code):
        manifest.setdefault("warnings", []).append(f"{now_iso()}: {warning}")
        emit("warning", message=warning)


def open_manifest(sweep_dir: Path) -> Manifest:
    """The sweep's manifest; RunDirError if the folder is not a sweep directory."""
    if not has_manifest(sweep_dir):
        raise RunDirError(f"{sweep_dir}: not a kexp sweep directory (no {MANIFEST})")
    return read_manifest(sweep_dir)


def find_sweep(runs_dir: Path, fingerprint: str) -> Path | None:
    """The newest sweep of the same spec and space: re-running the command continues it (or, if it
    is complete, only rewrites its summary); --new starts another."""
    root = Path(runs_dir) / SWEEPS
    for sweep_dir in sorted(root.glob("*/"), reverse=True) if root.is_dir() else []:
        try:
            manifest = read_manifest(sweep_dir)
        except RunDirError:
            continue
        if manifest.get("fingerprint") == fingerprint:
            return sweep_dir
    return None


def check_no_live_trials(sweep_dir: Path, manifest: Manifest) -> None:
    """A trial still training (its driver was killed, the trial was not) must end before the sweep goes on:
    one that wrote its status.json says so; one still starting is found by the pid the driver recorded."""
    for trial in manifest["trials"]:
        run_dir = sweep_dir / trial["run_dir"]
        if trial["state"] != "running":
            continue
        if RunFiles(run_dir).status.is_file():
            with contextlib.suppress(RunDirError):
                status = read_status(run_dir)
                if effective_state(status) == "running":
                    raise RunDirError(f"{run_dir}: trial {trial['id']} is still training (pid {status.pid} on "
                                      f"{status.host}), left by a sweep driver that died; wait for it or stop it (kill -TERM {status.pid}), then continue the sweep")
        launched = trial.get("process") or {}
        if launched.get("host") == socket.gethostname() and process_alive(launched["pid"], launched.get("started")):
            raise RunDirError(f"{run_dir}: trial {trial['id']} is still starting (pid {launched['pid']}), left by a sweep driver that died; "
                              f"wait for it or stop it (kill -TERM {launched['pid']}), then continue the sweep")


def reconcile(sweep_dir: Path, trial: Trial) -> Trial:
    """A trial's state as its run directory tells it (the driver may have died while it ran)."""
    run_dir = sweep_dir / trial["run_dir"]
    if trial["state"] in ("running", "interrupted", "failed") and RunFiles(run_dir).status.is_file():
        try:
            state = effective_state(read_status(run_dir))
        except RunDirError:
            state = None
        if state in ("completed", "diverged"):
            return {**trial, "state": state}
        if trial["state"] == "running":
            return {**trial, "state": "interrupted"}
    elif trial["state"] == "running":
        return {**trial, "state": "interrupted"}
    return trial


# --- running trials --------------------------------------------------------------------


def thread_budget(cpus: int, parallel: int) -> dict[str, str]:
    """Each of `parallel` trials gets an equal share of the CPU threads (TensorFlow's intra-op pool,
    and OpenMP's), and 1-2 inter-op threads: N trials each using every core only thrash."""
    share = max(1, cpus // parallel)
    return {"TF_NUM_INTRAOP_THREADS": str(share), "OMP_NUM_THREADS": str(share), "TF_NUM_INTEROP_THREADS": str(min(2, share))}


def visible_gpus() -> list[str]:
    """GPU indexes this machine offers (CUDA_VISIBLE_DEVICES, else nvidia-smi), without importing TensorFlow."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def slot_environments(parallel: int, gpus: list[str], trials_per_gpu: int) -> list[dict[str, str]]:
    """One environment per worker slot: a GPU each (K slots per GPU), or a share of the CPU threads."""
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus for _ in range(trials_per_gpu)]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return [{**thread_budget(cpus, parallel), "CUDA_VISIBLE_DEVICES": "-1"} for _ in range(parallel)]


def trial_command(sweep_dir: Path, trial: Trial, data_dir: Path, allow_changed_code: bool = False) -> list[str]:
    """`kexp resume` for a trial that has a run directory with a status, else `kexp train --run-dir`."""
    run_dir = sweep_dir / trial["run_dir"]
    if RunFiles(run_dir).status.is_file() and RunFiles(run_dir).config.is_file():
        return [sys.executable, "-m", "kexp", "resume", str(run_dir), "--data-dir", str(data_dir), *["--allow-changed-code"] * allow_changed_code]
    if run_dir.exists():  # made, but the trial died before it wrote anything usable: start it again
        shutil.rmtree(run_dir)
    return [sys.executable, "-m", "kexp", "train", str(SweepFiles(sweep_dir).trial_spec(trial["id"])), "--run-dir", str(run_dir),
            "--data-dir", str(data_dir)]


def trial_data_env(sweep_dir: Path, trial: Trial, data_dir: Path, emit: Emit) -> dict[str, str]:
    """KEXP_SHARED_DATA for the trial: its data prepared once in the sweep's data-cache/ (kexp.datasets.shared)."""
    from kexp.datasets.shared import shared_data_env
    from kexp.spec import load_spec

    try:
        spec = load_spec(SweepFiles(sweep_dir).trial_spec(trial["id"]))
    except KexpError:  # the trial meets the same error and records it in its run
        return {}
    return shared_data_env(sweep_dir, spec, data_dir, emit)


class LocalBackend:
    """Trials as child processes of this one."""

    def launch(self, command: list[str], env: dict[str, str], log: Path):
        with open(log, "a", encoding="utf-8") as out:
            return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)

    def poll(self, handle) -> int | None:
        return handle.poll()

    def process(self, handle) -> dict[str, Any] | None:
        """Which process the trial is, for a driver that dies and a later one that must not start it twice."""
        return {"pid": handle.pid, "started": process_start_ticks(handle.pid), "host": socket.gethostname()}

    def stop(self, handle) -> None:
        """SIGTERM: the trial saves a checkpoint and exits 143 (kexp.train.signals)."""
        if handle.poll() is None:
            handle.send_signal(signal.SIGTERM)

    def close(self) -> None:
        pass


def trial_outcome(sweep_dir: Path, trial: Trial, exit_code: int) -> Trial:
    """The trial's state from its run's status.json (the truth), else from the exit code."""
    run_dir = sweep_dir / trial["run_dir"]
    status = Status()
    if RunFiles(run_dir).status.is_file():
        try:
            status = read_status(run_dir)
        except RunDirError:
            pass
    state = status.state if status.state in ("completed", "failed", "interrupted", "diverged") else None
    if state is None:
        state = "interrupted" if exit_code in (130, 138, 143) else "failed" if exit_code else "completed"
    if exit_code < 0:  # killed outright (SIGKILL, the OOM killer): its status.json still says running
        state, error = "failed", f"the trial process was killed by {signal.Signals(-exit_code).name}"
    else:
        error = status.error or (None if state == "completed" else last_line(SweepFiles(sweep_dir).trial_log(trial["id"])))
    return {**trial, "state": state, "exit_code": exit_code, "ended": now_iso(), "error": error}


def last_line(path: Path) -> str | None:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    errors = [line for line in lines if line.startswith("kexp: error:")]
    return (errors or lines or [None])[-1]


@dataclass
class SweepResult:
    sweep_dir: Path
    manifest: Manifest
    summary: dict[str, Any]
    stopped_by: str | None = None

    @property
    def exit_code(self) -> int:
        if self.stopped_by:
            return 128 + signal.Signals[self.stopped_by]
        return 0 if all(t["state"] in ("completed", "pruned") for t in self.manifest["trials"]) else 1
