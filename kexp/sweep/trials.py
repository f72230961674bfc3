"""`kexp sweep`'s sweep directory and its trials: created or found again, reconciled with their
runs' own status, run as child processes (or Ray tasks) a few at a time, summarized at the end."""

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

from kexp.errors import ResumeRefused, RunDirError
from kexp.events import Emit, discard
from kexp.plugins import PluginRecord, check_recorded, plugins_of_run
from kexp.registry import DATASETS, MODELS
from kexp.run.dirs import create_run_dir
from kexp.run.files import MANIFEST, SWEEPS, RunFiles, SweepFiles
from kexp.run.io import now_iso, write_text_atomic
from kexp.run.lifecycle import effective_state, lock_run, process_alive, process_start_ticks
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
from kexp.sweep.proposals import SearchSettings
from kexp.sweep.space import FINAL, Plan, describe_point

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


def write_trial_spec(sweep_dir: Path, trial: Trial, spec) -> None:
    header = f"# Trial {trial['id']} of sweep {Path(sweep_dir).name}: {describe_point(trial['params'])}\n"
    write_text_atomic(SweepFiles(sweep_dir).trial_spec(trial["id"]), header + spec.to_yaml())


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


def run_sweep(plan: Plan | None, runs_dir: Path, data_dir: Path, parallel: int = 1, max_attempts: int = 2, trials_per_gpu: int = 1,
              backend: str = "local", address: str | None = None, resume_dir: Path | None = None, new: bool = False, cpus_per_trial: float = 1.0,
              emit: Emit = discard, allow_changed_code: bool = False, storage: str | None = None) -> SweepResult:
    """Create (or continue) a sweep directory, run its trials, and write its summary; progress goes to
    `emit` as events (sweep_started, trial_started, trial_pruned, trial_ended, warning). A continued sweep
    whose plugins changed since it started is refused unless `allow_changed_code` (then a warning).
    A tpe or pruned sweep keeps its Optuna study in the sweep folder, or in `storage` (an RDB URL)."""
    from kexp.sweep.summary import write_summary

    data_dir = Path(data_dir).resolve()  # trials may run elsewhere (Ray workers) or from another directory
    sweep_dir = open_or_create_sweep(plan, runs_dir, resume_dir, new, storage, parallel)
    lock = lock_run(sweep_dir)  # one driver per sweep
    try:
        manifest = open_manifest(sweep_dir)
        check_no_live_trials(sweep_dir, manifest)
        check_sweep_plugins(sweep_dir, manifest, allow_changed_code, emit)
        manifest["trials"] = [reconcile(sweep_dir, t) for t in manifest["trials"]]
        loop = trial_loop(sweep_dir, manifest, plan, storage, max_attempts, emit)
        write_manifest(sweep_dir, manifest)
        emit("sweep_started", sweep_dir=str(sweep_dir), trials=max(len(manifest["trials"]), loop.search.space.samples if loop.search
                                                                   and loop.search.proposes else 0),
             done=sum(t["state"] in FINAL for t in manifest["trials"]))
        stopped = run_with_backend(loop, backend, address, parallel, trials_per_gpu, cpus_per_trial, data_dir, allow_changed_code)
        summary = write_summary(sweep_dir, manifest["trials"], read_sweep_metric(sweep_dir))
        return SweepResult(sweep_dir, manifest, summary, stopped)
    finally:
        if lock is not None:
            os.close(lock)


def open_or_create_sweep(plan: Plan | None, runs_dir: Path, resume_dir: Path | None, new: bool, storage: str | None, parallel: int) -> Path:
    """The sweep directory to continue (--resume, or the same command's newest) or a new one, absolute."""
    from kexp.sweep.proposals import settings_for

    if resume_dir is not None:
        sweep_dir = Path(resume_dir)
        open_manifest(sweep_dir)
    else:
        existing = None if new else find_sweep(runs_dir, plan.fingerprint)
        sweep_dir = existing or create_sweep_dir(runs_dir, plan, settings_for(plan, storage, parallel, new))
    sweep_dir = sweep_dir.resolve()  # trial commands carry absolute paths: Ray workers have their own working directory
    if plan is not None and read_manifest(sweep_dir).get("fingerprint") != plan.fingerprint:
        raise ResumeRefused(f"{sweep_dir}: the spec or space differs from the one this sweep was started with; start a new sweep")
    return sweep_dir


def trial_loop(sweep_dir: Path, manifest: Manifest, plan: Plan | None, storage: str | None, max_attempts: int, emit: Emit):
    """The driver's loop over this sweep's trials, with its study when it has one (trials it missed adopted)."""
    from kexp.sweep.driver import TrialLoop
    from kexp.sweep.proposals import adopt_orphans, new_search_trial, open_sweep_search, settle_told, sweep_base

    search, batch = open_sweep_search(sweep_dir, storage)
    loop = TrialLoop(sweep_dir, manifest, None, [], Path(), max_attempts, emit, lambda: False, search=search, batch=batch)
    if search is None:
        return loop
    bases: list = []

    def make(number: int, point: dict[str, Any]) -> Trial:
        if not bases:  # read once, when the first new trial needs it
            bases.append(sweep_base(sweep_dir, manifest, plan))
        return new_search_trial(sweep_dir, bases[0], number, point, search.space.samples or len(manifest["trials"]), max_attempts)

    loop.new_trial = make
    settle_told(sweep_dir, manifest, search)
    for trial_id in adopt_orphans(manifest, search, make, shared=storage is not None):
        emit("warning", message=f"{trial_id}: asked of the study by a driver that died before recording it; it runs now under its own number")
    if search.sync:
        search.resume_batch(batch)
    return loop


def run_with_backend(loop, backend: str, address: str | None, parallel: int, trials_per_gpu: int, cpus_per_trial: float,
                     data_dir: Path, allow_changed_code: bool) -> str | None:
    """Run the loop's trials locally or on Ray, SIGINT/SIGTERM/SIGUSR1 stopping them; the signal's name, if one came."""
    if backend == "ray":
        from kexp.sweep.ray_backend import RayBackend

        loop.backend = RayBackend(address, cpus_per_trial, gpus_per_trial=1.0 / trials_per_gpu if visible_gpus() else 0.0)
        loop.environments = [{} for _ in range(parallel)]
    else:
        loop.backend = LocalBackend()
        loop.environments = slot_environments(parallel, visible_gpus(), trials_per_gpu)
    loop.data_dir, loop.allow_changed_code = data_dir, allow_changed_code
    stopped: list[str] = []
    loop.stop_requested = lambda: bool(stopped)
    previous = {s: signal.signal(s, lambda signum, frame: stopped.append(signal.Signals(signum).name))
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        loop.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        loop.backend.close()
    return stopped[0] if stopped else None
