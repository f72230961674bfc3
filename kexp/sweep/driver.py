"""The sweep driver's loop: trials launched a few at a time, watched, pruned, and their outcomes recorded.

Each turn of the loop (every POLL_SECONDS): stop everything on a signal; propose new trials
(tpe: as slots free up, or with --sync a batch once none runs); launch ready ones; feed each
running trial's new epochs (its history.json) to the pruner and SIGTERM the ones it prunes;
record the trials that ended, in manifest.json and, when there is one, the study. The manifest
is rewritten atomically at every change, so a driver killed at any point loses nothing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kexp.errors import ResumeRefused
from kexp.events import Emit, discard
from kexp.run.files import RunFiles, SweepFiles
from kexp.run.io import now_iso
from kexp.run.lifecycle import lock_run, mark_pruned
from kexp.run.records import Manifest, Trial, read_manifest, read_sweep_metric, write_manifest
from kexp.sweep.space import FINAL, Plan, describe_point
from kexp.sweep.trials import (
    LocalBackend,
    SweepResult,
    check_no_live_trials,
    check_sweep_plugins,
    create_sweep_dir,
    find_sweep,
    open_manifest,
    reconcile,
    slot_environments,
    trial_command,
    trial_data_env,
    trial_outcome,
    visible_gpus,
)

POLL_SECONDS = 0.2


@dataclass
class TrialLoop:
    """Runs every trial that is not final, up to len(environments) at a time."""

    sweep_dir: Path
    manifest: Manifest
    backend: Any  # LocalBackend or RayBackend: launch, poll, stop, close
    environments: list[dict[str, str]]
    data_dir: Path
    max_attempts: int
    emit: Emit
    stop_requested: Callable[[], bool]
    allow_changed_code: bool = False
    search: Any = None  # kexp.sweep.search.Search, when the sweep has a study
    new_trial: Callable[[int, dict[str, Any]], Trial] | None = None  # tpe: a manifest entry (and spec file) for a proposed point
    batch: int = 1  # --sync: trials proposed at once
    running: dict[int, tuple[Any, int]] = field(default_factory=dict)  # trial index -> (handle, slot)
    pruning: dict[int, tuple[int, float | None]] = field(default_factory=dict)  # trial index -> (epoch judged at, its value)
    seen: dict[int, int] = field(default_factory=dict)  # trial index -> history.json's mtime last read
    warned: set = field(default_factory=set)

    @property
    def trials(self) -> list[Trial]:
        return self.manifest["trials"]

    def run(self) -> bool:
        """False if stopped by a signal."""
        free = list(range(len(self.environments)))
        stopping = False
        while True:
            if self.stop_requested() and not stopping:
                stopping = True
                for handle, _ in self.running.values():
                    self.backend.stop(handle)
            if not stopping:
                self.propose(len(free))
                self.launch_ready(free)
            self.watch_pruning()
            self.collect(free)
            if not self.running and (stopping or not (self.any_ready() or self.more_to_propose())):
                return not stopping
            time.sleep(POLL_SECONDS)

    def warn_once(self, kind: str, /, **fields: Any) -> None:
        """The shared-data step's events, a warning that every launch would repeat (data not found) shown once."""
        if kind == "warning":
            if fields.get("message") in self.warned:
                return
            self.warned.add(fields.get("message"))
        self.emit(kind, **fields)

    def save(self, i: int, trial: Trial) -> None:
        self.trials[i] = trial
        write_manifest(self.sweep_dir, self.manifest)
        if trial["state"] != "pending":  # a proposed trial is shown when it starts
            emit_trial(self.emit, self.sweep_dir, trial)

    def ready(self, i: int) -> bool:
        """Pending and interrupted trials always (a preemption is not the trial's fault); failed ones up to max_attempts."""
        trial = self.trials[i]
        if trial["state"] == "failed":
            return trial.get("failures", 0) < self.max_attempts
        return trial["state"] not in FINAL and trial["state"] != "running"

    def any_ready(self) -> bool:
        return any(i not in self.running and self.ready(i) for i in range(len(self.trials)))

    # --- proposing (tpe) ---------------------------------------------------------------

    def more_to_propose(self) -> bool:
        return bool(self.search and self.search.proposes and self.search.trial_count() < self.search.space.samples)

    def propose(self, free: int) -> None:
        """tpe: new trials for free slots; with --sync a whole batch, and only once the last one has ended."""
        if not self.more_to_propose():
            return
        if self.search.sync:
            if self.running or self.any_ready():
                return
            count = self.batch
            self.search.start_batch()
        else:
            count = free - sum(1 for i in range(len(self.trials)) if i not in self.running and self.ready(i))
        for _ in range(min(count, self.search.space.samples - self.search.trial_count())):
            number, point = self.search.ask()
            if number >= self.search.space.samples:  # another driver of a shared study asked the last one first
                self.search.tell(number, "failed", None)
                return
            trial = self.new_trial(number, point)
            self.search.note(number, trial)
            if trial["state"] == "failed":  # a proposed point the spec refuses: a failed trial the study learns from
                self.search.tell(number, "failed", None)
            self.trials.append(trial)
            self.save(len(self.trials) - 1, trial)

    # --- launching, watching, collecting ------------------------------------------------

    def launch_ready(self, free: list[int]) -> None:
        for i in range(len(self.trials)):
            if not free:
                return
            if i in self.running or not self.ready(i):
                continue
            trial = self.trials[i]
            if self.search is not None and trial.get("number") is None:  # grid or random with pruning: a study number
                trial = {**trial, "number": self.search.ask()[0]}
                self.search.note(trial["number"], trial)
            slot = free.pop(0)
            command = trial_command(self.sweep_dir, trial, self.data_dir, self.allow_changed_code)
            env = {**self.environments[slot], **trial_data_env(self.sweep_dir, trial, self.data_dir, self.warn_once),
                   **({"KEXP_HISTORY_SECONDS": "0"} if self.search and self.search.prunes else {})}
            handle = self.backend.launch(command, env, SweepFiles(self.sweep_dir).trial_log(trial["id"]))
            self.running[i] = (handle, slot)
            self.seen.pop(i, None)
            self.save(i, {**trial, "state": "running", "attempts": trial["attempts"] + 1, "started": now_iso(), "ended": None,
                          "command": " ".join(command[1:]), "process": self.backend.process(handle)})

    def watch_pruning(self) -> None:
        """Each running trial's new epochs go to the study; one the pruner stops gets SIGTERM (it checkpoints and exits)."""
        if self.search is None or not self.search.prunes:
            return
        from kexp.sweep.search import history_values

        for i, (handle, _) in self.running.items():
            trial = self.trials[i]
            run_dir = self.sweep_dir / trial["run_dir"]
            history = RunFiles(run_dir).history
            mtime = history.stat().st_mtime_ns if history.is_file() else None
            if i in self.pruning or mtime is None or self.seen.get(i) == mtime:
                continue
            self.seen[i] = mtime
            values = history_values(run_dir, self.search.metric) or []
            step = self.search.observe(trial["number"], values)
            if step is not None:
                self.pruning[i] = (step, values[step - 1])
                self.backend.stop(handle)
                self.emit("trial_pruned", id=trial["id"], epoch=step, metric=self.search.metric, value=values[step - 1])

    def collect(self, free: list[int]) -> None:
        for i, (handle, slot) in list(self.running.items()):
            code = self.backend.poll(handle)
            if code is None:
                continue
            del self.running[i]
            free.append(slot)
            outcome = trial_outcome(self.sweep_dir, self.trials[i], code)
            outcome["failures"] = self.trials[i].get("failures", 0) + (outcome["state"] == "failed")
            if i in self.pruning and code >= 0:  # killed outright it failed, whatever the pruner said
                epoch, value = self.pruning.pop(i)
                outcome = {**outcome, "state": "pruned", "pruned_at": epoch, "error": None}
                mark_pruned(self.sweep_dir / outcome["run_dir"], epoch, self.search.metric, value)
                note_in_log(SweepFiles(self.sweep_dir).trial_log(outcome["id"]), epoch, self.search.metric, value)
            self.pruning.pop(i, None)
            self.tell(outcome)
            self.save(i, outcome)

    def tell(self, outcome: Trial) -> None:
        """A trial that will not run again is told to the study: its value, pruned, or failed."""
        if self.search is None or outcome.get("number") is None:
            return
        final = outcome["state"] in FINAL or (outcome["state"] == "failed" and outcome["failures"] >= self.max_attempts)
        if final:
            from kexp.sweep.search import objective_value

            outcome["value"] = objective_value(self.sweep_dir, outcome, self.search.metric)
            self.search.tell(outcome["number"], outcome["state"], outcome["value"])


def note_in_log(log: Path, epoch: int, metric: str, value: float | None) -> None:
    """The trial's log ends with its SIGTERM message: say why it came."""
    shown = f" ({metric} {value:.4f})" if value is not None else ""
    try:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"kexp sweep: pruned at epoch {epoch}{shown}: the SIGTERM above was the pruner's\n")
    except OSError:
        pass  # the log is a convenience; manifest.json and status.json hold the record


def emit_trial(emit: Emit, sweep_dir: Path, trial: dict[str, Any]) -> None:
    """trial_started for a trial that begins, else trial_ended with its run's final metrics."""
    fields = {"id": trial["id"], "point": describe_point(trial["params"]), "seed": trial["seed"], "state": trial["state"]}
    if trial["state"] == "running":
        emit("trial_started", **fields)
        return
    from kexp.run.records import read_small_json

    metrics, _ = read_small_json(RunFiles(sweep_dir / trial["run_dir"]).metrics)
    parts = {part: metrics.get(part) or {} for part in ("train", "validation", "test")} if isinstance(metrics, dict) else {}
    emit("trial_ended", **fields, error=trial.get("error"), metrics=parts, pruned_at=trial.get("pruned_at"))


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
        search, batch, make = open_search_of(sweep_dir, manifest, plan, storage, max_attempts, emit)
        write_manifest(sweep_dir, manifest)
        emit("sweep_started", sweep_dir=str(sweep_dir), trials=max(len(manifest["trials"]), search.space.samples if search
                                                                   and search.proposes else 0),
             done=sum(t["state"] in FINAL for t in manifest["trials"]))
        backend, environments = trial_backend(backend, address, parallel, trials_per_gpu, cpus_per_trial)
        stopped: list[str] = []
        loop = TrialLoop(sweep_dir, manifest, backend, environments, data_dir, max_attempts, emit, lambda: bool(stopped),
                         allow_changed_code, search=search, new_trial=make, batch=batch)
        run_until_stopped(loop, stopped)
        summary = write_summary(sweep_dir, manifest["trials"], read_sweep_metric(sweep_dir))
        return SweepResult(sweep_dir, manifest, summary, stopped[0] if stopped else None)
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


def open_search_of(sweep_dir: Path, manifest: Manifest, plan: Plan | None, storage: str | None, max_attempts: int, emit: Emit):
    """The sweep's study (None without one), its --sync batch, and how a proposed point becomes a trial;
    trials the manifest missed when a driver died are adopted first."""
    from kexp.sweep.proposals import adopt_orphans, new_search_trial, open_sweep_search, settle_told, sweep_base

    search, batch = open_sweep_search(sweep_dir, storage)
    if search is None:
        return None, batch, None
    bases: list = []

    def make(number: int, point: dict[str, Any]) -> Trial:
        if not bases:  # read once, when the first new trial needs it
            bases.append(sweep_base(sweep_dir, manifest, plan))
        return new_search_trial(sweep_dir, bases[0], number, point, search.space.samples or len(manifest["trials"]), max_attempts)

    settle_told(sweep_dir, manifest, search)
    for trial_id in adopt_orphans(manifest, search, make, shared=storage is not None):
        emit("warning", message=f"{trial_id}: asked of the study by a driver that died before recording it; it runs now under its own number")
    if search.sync:
        search.resume_batch(batch)
    return search, batch, make


def trial_backend(backend: str, address: str | None, parallel: int, trials_per_gpu: int, cpus_per_trial: float):
    """Child processes (with an environment per slot: a GPU, or a share of the CPU threads) or Ray tasks."""
    if backend == "ray":
        from kexp.sweep.ray_backend import RayBackend

        gpus = 1.0 / trials_per_gpu if visible_gpus() else 0.0
        return RayBackend(address, cpus_per_trial, gpus_per_trial=gpus), [{} for _ in range(parallel)]
    return LocalBackend(), slot_environments(parallel, visible_gpus(), trials_per_gpu)


def run_until_stopped(loop: TrialLoop, stopped: list[str]) -> None:
    """Run the loop's trials; SIGINT, SIGTERM and SIGUSR1 (their names appended to `stopped`) stop them."""
    previous = {s: signal.signal(s, lambda signum, frame: stopped.append(signal.Signals(signum).name))
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        loop.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        loop.backend.close()
