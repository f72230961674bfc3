"""`kexp sweep`: one ordinary run per point of a parameter space, in parallel, resumable.

    <runs-dir>/sweeps/<UTC time>-<name>-<xxxx>/
      sweep.yaml        what the sweep is: the base spec file, the --set overrides, the space
      manifest.json     one entry per trial: id, params, seed, state, run_dir, exit_code, attempts
                        (rewritten atomically on every change)
      specs/<id>.yaml   each trial's resolved spec: what its process trains
      logs/<id>.txt     each trial process's console output
      <id>/             each trial's ordinary run directory (kexp runs / compare / evaluate / resume)
      summary.json, summary.csv, summary.png   (kexp.sweep_summary)

Every trial runs as its own `python -m kexp train --run-dir` process: memory never grows
across trials, a crash takes one trial down, and the driver reads the trial's outcome from
its status.json and metrics.json, never from printed text. Trials are resumed in place with
`kexp resume`, so a sweep that is stopped (Ctrl-C, SIGTERM, a dead driver) and started again
loses no finished epoch, let alone a finished trial.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kexp.errors import ResumeRefused, RunDirError, SpecError
from kexp.events import Emit, discard
from kexp.run.dirs import create_run_dir
from kexp.run.files import MANIFEST, SWEEPS, RunFiles, SweepFiles
from kexp.run.io import now_iso, write_text_atomic
from kexp.run.lifecycle import effective_state, lock_run
from kexp.run.records import Manifest, Status, Trial, has_manifest, read_manifest, read_status, read_sweep_metric, write_manifest, write_sweep_spec

FINAL = ("completed", "diverged")  # a diverged trial would diverge again: it is not retried


# --- the space --------------------------------------------------------------------------


class RangeSpec(BaseModel):
    """A range for random search: uniform, or log-uniform (`log: true`); integers with `integer: true`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    low: float
    high: float
    log: bool = False
    integer: bool = False


class SweepSpec(BaseModel):
    """The `sweep:` section of a spec (and what --param, --seeds, --samples add to it)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    method: Literal["grid", "random"] = "grid"
    # dotted spec key -> values to try (grid or random), or a range (random only)
    params: dict[str, list[Any] | RangeSpec] = Field(default_factory=dict)
    samples: int | None = Field(default=None, ge=1, le=10_000)  # random: how many points
    seeds: int = Field(default=1, ge=1, le=100)  # each point trained with seed, seed+1, ...
    metric: str | None = None  # what the summary compares; default: the task's main metric


@dataclass
class Plan:
    """A sweep before it runs: every trial's spec, already validated."""

    name: str
    config: Path
    overrides: list[str]
    space: SweepSpec
    trials: list[Trial]  # manifest entries (state pending)
    specs: dict[str, Any]  # trial id -> ExperimentSpec
    fingerprint: str = ""
    notes: list[str] = field(default_factory=list)


def parse_param(text: str) -> tuple[str, list[Any] | RangeSpec]:
    """`model.hidden_units.0=10,25,50` -> values (parsed as YAML); `KEY=LOW..HIGH` or `KEY=log:LOW..HIGH` -> a range."""
    from kexp.spec import parse_yaml

    key, sep, values = text.partition("=")
    key, values = key.strip(), values.strip()
    if not sep or not key or not values:
        raise SpecError([f"--param {text}: expected KEY=V1,V2,... (e.g. model.hidden_units.0=10,25,50) or KEY=LOW..HIGH"])
    log = values.startswith("log:")
    if ".." in values and not values.startswith("["):
        low, _, high = values.removeprefix("log:").partition("..")
        try:
            lo, hi = float(low), float(high)
        except ValueError:
            raise SpecError([f"--param {text}: a range is LOW..HIGH with numbers, e.g. 0.0001..0.1 or log:0.0001..0.1"]) from None
        integer = all(part.strip().lstrip("-").isdigit() for part in (low, high))
        return key, check_range(key, RangeSpec(low=lo, high=hi, log=log, integer=integer))
    try:
        parsed = parse_yaml(f"[{values}]")[0]
    except yaml.YAMLError as exc:
        raise SpecError([f"--param {text}: values are not valid YAML ({' '.join(str(exc).split())})"]) from None
    if not parsed:
        raise SpecError([f"--param {text}: no values"])
    return key, parsed


def check_range(key: str, value: RangeSpec) -> RangeSpec:
    if value.low > value.high:
        raise SpecError([f"sweep.params.{key}: low {value.low:g} is above high {value.high:g}"])
    if value.log and value.low <= 0:
        raise SpecError([f"sweep.params.{key}: a log range needs low > 0 (got {value.low:g})"])
    return value


def read_sweep_spec(section: Any, source: str) -> SweepSpec:
    from kexp.spec import _problems

    if section is None:
        return SweepSpec()
    try:
        space = SweepSpec.model_validate(section)
    except ValidationError as exc:
        raise SpecError([f"{source}: sweep.{key}: {message}" for key, message in _problems(exc, SweepSpec)]) from None
    for key, value in space.params.items():
        if isinstance(value, RangeSpec):
            check_range(key, value)
        elif not value:
            raise SpecError([f"{source}: sweep.params.{key}: no values"])
    return space


def merge_space(space: SweepSpec, params: list[str], seeds: int | None, samples: int | None, metric: str | None) -> SweepSpec:
    """The YAML's sweep section with the command line's additions (a --param replaces the same key)."""
    merged = dict(space.params)
    for text in params:
        key, values = parse_param(text)
        merged[key] = values
    method = "random" if samples is not None else space.method
    return space.model_copy(update={"params": merged, "method": method, "samples": samples or space.samples,
                                    "seeds": seeds or space.seeds, "metric": metric or space.metric})


def expand_points(space: SweepSpec, seed: int) -> list[dict[str, Any]]:
    """Grid: every combination, in the order given. Random: `samples` points drawn from `seed`."""
    keys = list(space.params)
    if not keys:
        raise SpecError(["the sweep has no parameters: add a `sweep: {params: {...}}` section or --param KEY=V1,V2,..."])
    if space.method == "grid":
        ranges = [k for k in keys if isinstance(space.params[k], RangeSpec)]
        if ranges:
            raise SpecError([f"sweep.params.{ranges[0]}: a range needs random search: add --samples N (or sweep.method: random, samples: N)"])
        return [dict(zip(keys, combo)) for combo in itertools.product(*(space.params[k] for k in keys))]
    if space.samples is None:
        raise SpecError(["sweep.samples: random search needs the number of points: --samples N"])
    rng = np.random.default_rng(seed)
    return [{k: draw(space.params[k], rng) for k in keys} for _ in range(space.samples)]


def draw(values: list[Any] | RangeSpec, rng: np.random.Generator) -> Any:
    if isinstance(values, list):
        return values[int(rng.integers(len(values)))]
    low, high = (math.log(values.low), math.log(values.high)) if values.log else (values.low, values.high)
    x = rng.uniform(low, high)
    x = math.exp(x) if values.log else x
    return int(round(x)) if values.integer else float(f"{x:.6g}")


def describe_point(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


def plan_sweep(config: Path, overrides: list[str], params: list[str], seeds: int | None = None, samples: int | None = None,
               metric: str | None = None, source=None) -> Plan:
    """Read the spec (or take `source`, spec.read_yaml's result for it) and its sweep section, expand the trials
    and validate every trial's spec before anything runs."""
    from kexp.spec import apply_override, parse_override, read_yaml, validate_spec

    raw, lines = copy.deepcopy(source) if source is not None else read_yaml(config)
    space = merge_space(read_sweep_spec(raw.pop("sweep", None), str(config)), params, seeds, samples, metric)
    base_seed = raw.get("seed", 0) if isinstance(raw.get("seed", 0), int) else 0
    for text in overrides:
        key, value = parse_override(text)
        if key == "seed" and isinstance(value, int):
            base_seed = value
    points = expand_points(space, base_seed)
    trials, specs = [], {}
    width = max(3, len(str(len(points) * space.seeds - 1)))
    for p, point in enumerate(points):
        for r in range(space.seeds):
            trial_id = f"trial-{len(trials):0{width}d}"
            texts = [*overrides]
            trial_raw = copy.deepcopy(raw)
            applied: dict[str, str] = {}
            try:
                for text in texts:
                    key, value = parse_override(text)
                    apply_override(trial_raw, key, value)
                    applied[key] = f"--set {text}"
                for key, value in point.items():
                    apply_override(trial_raw, key, value)
                    applied[key] = "sweep point"
                seed = base_seed + r
                if space.seeds > 1:
                    trial_raw["seed"] = seed
                spec = validate_spec(trial_raw, str(config), lines, applied)
            except SpecError as exc:
                where = f"{trial_id} ({describe_point(point)})"
                raise SpecError([f"{where}: {problem}" for problem in exc.problems]) from None
            specs[trial_id] = spec
            trials.append({"id": trial_id, "point": p, "params": point, "seed": spec.seed, "state": "pending", "run_dir": trial_id,
                           "exit_code": None, "attempts": 0, "failures": 0, "started": None, "ended": None, "error": None})
    name = specs[trials[0]["id"]].name
    fingerprint = hashlib.sha256(json.dumps({"base": raw, "set": overrides, "space": space.model_dump(mode="json")},
                                            sort_keys=True, default=str).encode()).hexdigest()
    return Plan(name, Path(config), list(overrides), space, trials, specs, fingerprint)


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
    document = {"name": plan.name, "config": str(plan.config.resolve()), "set": plan.overrides,
                "space": plan.space.model_dump(mode="json"), "fingerprint": plan.fingerprint, "created": now_iso()}
    write_sweep_spec(sweep_dir, document)
    write_manifest(sweep_dir, {"sweep": sweep_dir.name, "fingerprint": plan.fingerprint, "trials": plan.trials})
    return sweep_dir


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


def trial_command(sweep_dir: Path, trial: Trial, data_dir: Path) -> list[str]:
    """`kexp resume` for a trial that has a run directory with a status, else `kexp train --run-dir`."""
    run_dir = sweep_dir / trial["run_dir"]
    if RunFiles(run_dir).status.is_file() and RunFiles(run_dir).config.is_file():
        return [sys.executable, "-m", "kexp", "resume", str(run_dir), "--data-dir", str(data_dir)]
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
               max_attempts: int, emit: Emit, stop_requested: Callable[[], bool]) -> bool:
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
                command = trial_command(sweep_dir, trial, data_dir)
                handle = backend.launch(command, environments[slot], SweepFiles(sweep_dir).trial_log(trial["id"]))
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
              emit: Emit = discard) -> SweepResult:
    """Create (or continue) a sweep directory, run its trials, and write its summary; progress goes to
    `emit` as events (sweep_started, trial_started, trial_ended)."""
    from kexp.sweep_summary import write_summary

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
        manifest["trials"] = [reconcile(sweep_dir, t) for t in manifest["trials"]]
        write_manifest(sweep_dir, manifest)
        emit("sweep_started", sweep_dir=str(sweep_dir), trials=len(manifest["trials"]), done=sum(t["state"] in FINAL for t in manifest["trials"]))
        if backend == "ray":
            from kexp.sweep_ray import RayBackend

            runner = RayBackend(address, cpus_per_trial, gpus_per_trial=1.0 / trials_per_gpu if visible_gpus() else 0.0)
            environments = [{} for _ in range(parallel)]
        else:
            runner = LocalBackend()
            environments = slot_environments(parallel, visible_gpus(), trials_per_gpu)
        stopped: list[str] = []
        previous = {s: signal.signal(s, lambda signum, frame: stopped.append(signal.Signals(signum).name))
                    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
        try:
            run_trials(sweep_dir, manifest, runner, environments, data_dir, max_attempts, emit, lambda: bool(stopped))
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            runner.close()
        summary = write_summary(sweep_dir, manifest["trials"], read_sweep_metric(sweep_dir))
        return SweepResult(sweep_dir, manifest, summary, stopped[0] if stopped else None)
    finally:
        if lock is not None:
            os.close(lock)

