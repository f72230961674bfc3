"""`kexp sweep`'s sweep directory and its trials: created or found again, reconciled with their
runs' own status, run as child processes (or Ray tasks) a few at a time, summarized at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexp.errors import KexpError, ResumeRefused, RunDirError
from kexp.events import Emit, discard
from kexp.plugins import PluginRecord, check_recorded, plugins_of_run
from kexp.registry import DATASETS, MODELS
from kexp.run.dirs import create_run_dir
from kexp.run.files import MANIFEST, SWEEPS, RunFiles, SweepFiles
from kexp.run.io import now_iso, write_text_atomic
from kexp.run.lifecycle import effective_state, lock_run
from kexp.run.records import (
    Manifest,
    Status,
    Trial,
    has_manifest,
    read_manifest,
    read_status,
    read_sweep_metric,
    read_sweep_plugins,
    write_manifest,
    write_sweep_spec,
)
from kexp.sweep.space import FINAL, Plan, describe_point

# --- the sweep directory ---------------------------------------------------------------


def create_sweep_dir(runs_dir: Path, plan: Plan) -> Path:
    sweep_dir = create_run_dir(Path(runs_dir) / SWEEPS, plan.name, utc=True)
    files = SweepFiles(sweep_dir)
    files.trial_specs.mkdir()
    files.trial_logs.mkdir()
    for trial in plan.trials:
        spec = plan.specs[trial["id"]]
        header = f"# Trial {trial['id']} of sweep {sweep_dir.name}: {describe_point(trial['params'])}\n"
        write_text_atomic(files.trial_spec(trial["id"]), header + spec.to_yaml())
    spec_files = [file.to_json() for file in plan.specs[plan.trials[0]["id"]].spec_files]  # the sweep's spec and its bases
    document = {"name": plan.name, "config": str(plan.config.resolve()), "spec_files": spec_files, "set": plan.overrides,
                "space": plan.space.model_dump(mode="json"), "fingerprint": plan.fingerprint, "created": now_iso(),
                "plugins": [p.to_json() for p in sweep_plugins(plan)]}
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
    """A trial still training (its driver was killed, the trial was not) must end before the sweep goes on."""
    for trial in manifest["trials"]:
        run_dir = sweep_dir / trial["run_dir"]
        if trial["state"] == "running" and RunFiles(run_dir).status.is_file():
            with contextlib.suppress(RunDirError):
                status = read_status(run_dir)
                if effective_state(status) == "running":
                    raise RunDirError(f"{run_dir}: trial {trial['id']} is still training (pid {status.pid} on "
                                      f"{status.host}), left by a sweep driver that died; wait for it or stop it (kill -TERM {status.pid}), then continue the sweep")


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


class LocalBackend:
    """Trials as child processes of this one."""

    def launch(self, command: list[str], env: dict[str, str], log: Path):
        with open(log, "a", encoding="utf-8") as out:
            return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)

    def poll(self, handle) -> int | None:
        return handle.poll()

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
        return 0 if all(t["state"] == "completed" for t in self.manifest["trials"]) else 1


def run_trials(sweep_dir: Path, manifest: Manifest, backend, environments: list[dict[str, str]], data_dir: Path,
               max_attempts: int, emit: Emit, stop_requested: Callable[[], bool], allow_changed_code: bool = False) -> bool:
    """Run every trial that is not final, up to len(environments) at a time; False if stopped by a signal."""
    trials = manifest["trials"]
    free = list(range(len(environments)))
    running: dict[int, tuple[Any, int]] = {}  # trial index -> (handle, slot)

    def save(i: int, trial: Trial) -> None:
        trials[i] = trial
        write_manifest(sweep_dir, manifest)
        emit_trial(emit, sweep_dir, trial)

    def ready(i: int) -> bool:
        """Pending and interrupted trials always (a preemption is not the trial's fault); failed ones up to max_attempts."""
        trial = trials[i]
        if trial["state"] == "failed":
            return trial.get("failures", 0) < max_attempts
        return trial["state"] not in FINAL and trial["state"] != "running"

    stopping = False
    while True:
        if stop_requested() and not stopping:
            stopping = True
            for handle, _ in running.values():
                backend.stop(handle)
        if not stopping:
            for i in range(len(trials)):
                if not free:
                    break
                if i in running or not ready(i):
                    continue
                slot = free.pop(0)
                trial = trials[i]
                command = trial_command(sweep_dir, trial, data_dir, allow_changed_code)
                env = {**environments[slot], **trial_data_env(sweep_dir, trial, data_dir, emit)}
                handle = backend.launch(command, env, SweepFiles(sweep_dir).trial_log(trial["id"]))
                running[i] = (handle, slot)
                save(i, {**trial, "state": "running", "attempts": trial["attempts"] + 1, "started": now_iso(), "ended": None,
                         "command": " ".join(command[1:])})
        for i, (handle, slot) in list(running.items()):
            code = backend.poll(handle)
            if code is None:
                continue
            del running[i]
            free.append(slot)
            outcome = trial_outcome(sweep_dir, trials[i], code)
            outcome["failures"] = trials[i].get("failures", 0) + (outcome["state"] == "failed")
            save(i, outcome)
        if not running and (stopping or not any(ready(i) for i in range(len(trials)))):
            return not stopping
        time.sleep(0.2)


def trial_data_env(sweep_dir: Path, trial: Trial, data_dir: Path, emit: Emit) -> dict[str, str]:
    """KEXP_SHARED_DATA for the trial: its data prepared once in the sweep's data-cache/ (kexp.datasets.shared)."""
    from kexp.datasets.shared import shared_data_env
    from kexp.spec import load_spec

    try:
        spec = load_spec(SweepFiles(sweep_dir).trial_spec(trial["id"]))
    except KexpError:  # the trial meets the same error and records it in its run
        return {}
    return shared_data_env(sweep_dir, spec, data_dir, emit)


def emit_trial(emit: Emit, sweep_dir: Path, trial: dict[str, Any]) -> None:
    """trial_started for a trial that begins, else trial_ended with its run's final metrics."""
    fields = {"id": trial["id"], "point": describe_point(trial["params"]), "seed": trial["seed"], "state": trial["state"]}
    if trial["state"] == "running":
        emit("trial_started", **fields)
        return
    from kexp.run.records import read_small_json

    metrics, _ = read_small_json(RunFiles(sweep_dir / trial["run_dir"]).metrics)
    parts = {part: metrics.get(part) or {} for part in ("train", "validation", "test")} if isinstance(metrics, dict) else {}
    emit("trial_ended", **fields, error=trial.get("error"), metrics=parts)


def run_sweep(plan: Plan | None, runs_dir: Path, data_dir: Path, parallel: int = 1, max_attempts: int = 2, trials_per_gpu: int = 1,
              backend: str = "local", address: str | None = None, resume_dir: Path | None = None, new: bool = False, cpus_per_trial: float = 1.0,
              emit: Emit = discard, allow_changed_code: bool = False) -> SweepResult:
    """Create (or continue) a sweep directory, run its trials, and write its summary; progress goes to
    `emit` as events (sweep_started, trial_started, trial_ended, warning). A continued sweep whose plugins
    changed since it started is refused unless `allow_changed_code` (then a warning)."""
    from kexp.sweep.summary import write_summary

    data_dir = Path(data_dir).resolve()  # trials may run elsewhere (Ray workers) or from another directory
    if resume_dir is not None:
        sweep_dir = Path(resume_dir)
        manifest = open_manifest(sweep_dir)
    else:
        existing = None if new else find_sweep(runs_dir, plan.fingerprint)
        sweep_dir = existing or create_sweep_dir(runs_dir, plan)
        manifest = open_manifest(sweep_dir)
    sweep_dir = sweep_dir.resolve()  # trial commands carry absolute paths: Ray workers have their own working directory
    if plan is not None and manifest.get("fingerprint") != plan.fingerprint:
        raise ResumeRefused(f"{sweep_dir}: the spec or space differs from the one this sweep was started with; start a new sweep")
    lock = lock_run(sweep_dir)  # one driver per sweep
    try:
        check_no_live_trials(sweep_dir, manifest)
        check_sweep_plugins(sweep_dir, manifest, allow_changed_code, emit)
        manifest["trials"] = [reconcile(sweep_dir, t) for t in manifest["trials"]]
        write_manifest(sweep_dir, manifest)
        emit("sweep_started", sweep_dir=str(sweep_dir), trials=len(manifest["trials"]), done=sum(t["state"] in FINAL for t in manifest["trials"]))
        if backend == "ray":
            from kexp.sweep.ray_backend import RayBackend

            runner = RayBackend(address, cpus_per_trial, gpus_per_trial=1.0 / trials_per_gpu if visible_gpus() else 0.0)
            environments = [{} for _ in range(parallel)]
        else:
            runner = LocalBackend()
            environments = slot_environments(parallel, visible_gpus(), trials_per_gpu)
        stopped: list[str] = []
        previous = {s: signal.signal(s, lambda signum, frame: stopped.append(signal.Signals(signum).name))
                    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
        try:
            run_trials(sweep_dir, manifest, runner, environments, data_dir, max_attempts, emit, lambda: bool(stopped), allow_changed_code)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            runner.close()
        summary = write_summary(sweep_dir, manifest["trials"], read_sweep_metric(sweep_dir))
        return SweepResult(sweep_dir, manifest, summary, stopped[0] if stopped else None)
    finally:
        if lock is not None:
            os.close(lock)
