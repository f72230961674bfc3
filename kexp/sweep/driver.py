"""The sweep driver's loop: trials launched a few at a time, watched, pruned, and their outcomes recorded.

Each turn of the loop (every POLL_SECONDS): stop everything on a signal; propose new trials
(tpe: as slots free up, or with --sync a batch once none runs); launch ready ones; feed each
running trial's new epochs (its history.json) to the pruner and SIGTERM the ones it prunes;
record the trials that ended, in manifest.json and, when there is one, the study. The manifest
is rewritten atomically at every change, so a driver killed at any point loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kexp.events import Emit
from kexp.run.files import RunFiles, SweepFiles
from kexp.run.io import now_iso
from kexp.run.lifecycle import mark_pruned
from kexp.run.records import Manifest, Trial, write_manifest
from kexp.sweep.space import FINAL, describe_point
from kexp.sweep.trials import trial_command, trial_outcome

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
            env = {**self.environments[slot], **({"KEXP_HISTORY_SECONDS": "0"} if self.search and self.search.prunes else {})}
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
