"""How the library's events (kexp.events) are shown: the only place that draws progress.

A run (`kexp train`, `kexp resume`) is shown in the format the user picks:

rich   a live bar per epoch on a terminal, and a line per epoch
plain  one line per event worth reading, nothing that redraws: for log files, CI and `tee`
jsonl  one JSON object per event on stdout (the same objects as <run>/events.jsonl, plus
       nothing else), for scripts

A sweep (SweepDisplay) shows a bar over its trials on a terminal and a line per finished trial;
a download (DownloadBars) a bar per file; predictions a transient bar on a terminal's stderr.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from kexp.events import NOT_RECORDED, Emit, event, json_line

LOG_FORMATS = ("auto", "rich", "plain", "jsonl")


class PipeSafeConsole(Console):
    """A Console that outlives its reader: when the pipe it writes to closes (`kexp train … | head`),
    it goes quiet and the command goes on; rich's own handling exits, which would fail the run."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        silence(self.file)


def silence(stream: Any) -> None:
    """Point a closed pipe's file descriptor at /dev/null, so later writes and the flush at exit succeed."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a StringIO (tests) or a closed file: nothing to point
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def resolve_format(requested: str, console: Console) -> str:
    """auto: the live display on a terminal; plain lines with no TTY or under CI."""
    if requested != "auto":
        return requested
    return "rich" if console.is_terminal and not os.environ.get("CI") else "plain"


def describe(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def line_for(kind: str, fields: dict[str, Any]) -> str | None:
    """The plain line an event shows as, or None for events shown otherwise (batches, results)."""
    member = f"{fields['member']}: " if fields.get("member") else ""
    if kind == "data":
        return f"data: {fields['name']}  {fields['description']}"
    if kind == "run_started":
        action = "run" if fields["attempt"] == 1 else f"resuming (attempt {fields['attempt']})"
        return f"{action}: {fields['run_dir']}  model: {fields['model']} ({fields['params']:,} parameters)  device: {fields['device']}"
    if kind == "member_started":
        return f"{fields['member']} ({fields['index']}/{fields['count']}): {fields['description']}"
    if kind == "member_skipped":
        return f"{fields['member']} ({fields['index']}/{fields['count']}): {fields['reason']}"
    if kind == "tracking":
        experiment = f"experiment {fields['experiment']}, " if fields.get("experiment") else ""
        return f"mlflow: logging to {fields['uri']} ({experiment}run {fields['run_id']})" + (f"; {fields['note']}" if fields.get("note") else "")
    if kind == "warning":
        return f"warning: {fields['message']}"
    if kind == "shared_data_loaded":
        return f"data: loaded from the sweep's shared data ({fields['seconds']:.2f}s)"
    if kind == "epoch_end":
        return f"{member}epoch {fields['epoch']}/{fields['epochs']}  {fields['seconds']:.1f}s  {describe(fields['metrics'])}"
    if kind == "run_failed":
        return f"run {fields['state']}: {fields['error']}"
    return None


# Epoch lines per training in plain mode when --log-every is not given: pima_cv's 10 folds of
# 150 epochs printed 1,521 lines; events.jsonl keeps every epoch whatever is shown.
PLAIN_EPOCH_LINES = 20


def epoch_shown(epoch: int, epochs: int, every: int) -> bool:
    """Whether an epoch's line is printed: the first, every `every`-th, and the last."""
    return epoch == 1 or epoch % every == 0 or epoch == epochs


def plain_lines(console: Console, log_every: int | None = None, thin: bool = False) -> Emit:
    """A line per event worth reading. Epoch lines: every `log_every`-th (with the first and the
    last); None: every epoch, or with `thin` about PLAIN_EPOCH_LINES per training. Each k-fold
    or repeat member ends with a line of its final metrics."""

    def show(kind: str, /, **fields: Any) -> None:
        if kind == "epoch_end":
            every = log_every or (max(1, math.ceil(fields["epochs"] / PLAIN_EPOCH_LINES)) if thin else 1)
            if not epoch_shown(fields["epoch"], fields["epochs"], every):
                return
        if kind == "evaluation" and fields.get("member"):
            parts = "  ".join(f"{part} {describe(values)}" for part, values in fields["metrics"].items() if values)
            console.print(f"{fields['member']}: final {parts}", highlight=False, markup=False, soft_wrap=True)
            return
        text = line_for(kind, fields)
        if text is not None:
            console.print(text, highlight=False, markup=False, soft_wrap=True)

    return show


def json_lines(stream=None) -> Emit:
    def show(kind: str, /, **fields: Any) -> None:
        if kind not in NOT_RECORDED:
            out = stream or sys.stdout
            try:
                out.write(json_line(event(kind, **fields)))
                out.flush()
            except BrokenPipeError:  # the reader left (`| head`): the run goes on, its files are written as always
                silence(out)

    return show


@contextmanager
def live_display(console: Console, log_every: int | None = None) -> Iterator[Emit]:
    """Plain lines, plus a bar that follows the batches of the epoch under way."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[logs]}"), console=console, transient=True)
    lines = plain_lines(console, log_every)
    state: dict[str, Any] = {"task": None, "epochs": 0, "epoch": 1}

    def show(kind: str, /, **fields: Any) -> None:
        if kind == "train_started":
            state["epochs"], state["epoch"] = fields["epochs"], 1
            if state["task"] is None:
                bar.start()
                state["task"] = bar.add_task("", total=fields["steps_per_epoch"], logs="")
            bar.reset(state["task"], total=fields["steps_per_epoch"], description=f"epoch 1/{fields['epochs']}", logs="")
        elif kind == "batch" and state["task"] is not None:
            bar.update(state["task"], completed=fields["step"], logs=describe(fields["metrics"]))
        elif kind == "epoch_end" and state["task"] is not None:
            state["epoch"] = fields["epoch"] + 1
            bar.reset(state["task"], description=f"epoch {state['epoch']}/{state['epochs']}", logs="")
        lines(kind, **fields)

    try:
        yield show
    finally:
        bar.stop()


@contextmanager
def display(log_format: str, console: Console, log_every: int | None = None) -> Iterator[tuple[str, Emit]]:
    """The chosen format (auto resolved) and the Emit that shows events in it; `log_every` thins
    the epoch lines (plain mode thins them itself when it is None)."""
    chosen = resolve_format(log_format, console)
    if chosen == "rich":
        with live_display(console, log_every) as show:
            yield chosen, show
    else:
        yield chosen, json_lines() if chosen == "jsonl" else plain_lines(console, log_every, thin=True)


@contextmanager
def progress_bars(console: Console, warn: Callable[[str], None] | None = None, off_terminal: bool = False) -> Iterator[Emit]:
    """`progress` events (predicting, tokenizing) as transient bars, one per task, on a terminal
    (elsewhere nothing: bars redraw); `warning` events through `warn`, when given.

    `off_terminal`: run the bars on any console, as the tokenizing bar always has; off a
    terminal rich draws nothing but ends each bar with a blank line, which logs have shown.
    """
    from rich.progress import Progress

    bar = Progress(console=console, transient=True)
    tasks: dict[str, Any] = {}

    def show(kind: str, /, **fields: Any) -> None:
        if kind == "warning" and warn is not None:
            warn(fields["message"])
        elif kind == "progress" and (console.is_terminal or off_terminal):
            if not tasks:
                bar.start()
            if fields["task"] not in tasks:
                tasks[fields["task"]] = bar.add_task(fields["task"], total=fields["total"])
            bar.update(tasks[fields["task"]], completed=fields["done"], total=fields["total"])
        elif kind == "progress_end" and fields["task"] in tasks:
            bar.remove_task(tasks.pop(fields["task"]))
            if not tasks:
                bar.stop()

    try:
        yield show
    finally:
        if bar.live.is_started:  # a bar never started is not stopped: rich would print a blank line
            bar.stop()


class SweepDisplay:
    """An Emit for kexp.sweep.trials' events: a progress bar over trials with ETA on a terminal; one line
    per finished trial either way."""

    def __init__(self, console: Console, warn: Callable[[str], None] | None = None) -> None:
        self.console = console
        self.warn = warn  # how a warning is shown (the CLI's print_warning: "kexp: warning: ..." on stderr)
        self.progress = None
        self.total = self.done = 0
        self.pruned: dict[str, str] = {}  # trial id -> "at epoch 3 (accuracy 0.9348)", from trial_pruned

    def __call__(self, kind: str, /, **fields: Any) -> None:
        if kind == "sweep_started":
            self.start(fields["sweep_dir"], fields["trials"], fields["done"])
        elif kind == "trial_ended":
            self.trial_ended(fields)
        elif kind == "trial_pruned":
            self.pruned[fields["id"]] = f"at epoch {fields['epoch']} ({fields['metric']} {fields['value']:.4f})" \
                if isinstance(fields.get("value"), (int, float)) else f"at epoch {fields['epoch']}"
        elif kind == "warning" and self.warn is not None:
            self.warn(fields["message"])
        elif kind == "shared_data" and not fields.get("reused"):
            self.print(f"data: prepared once for the trials that share it ({fields['seconds']:.1f}s, data-cache/{fields['fingerprint']})")

    def print(self, line: str) -> None:
        (self.progress.console if self.progress else self.console).print(line, highlight=False, markup=False)

    def start(self, sweep_dir: str, trials: int, done: int) -> None:
        self.console.print(f"sweep: {sweep_dir}  {trials} trials, {done} already done", highlight=False)
        self.total, self.done = trials, done
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                                     TimeRemainingColumn(), console=self.console)
            self.progress.start()
            self.task = self.progress.add_task("", total=self.total, completed=done)

    def trial_ended(self, trial: dict[str, Any]) -> None:
        self.done += trial["state"] in ("completed", "diverged", "pruned")
        metrics = trial.get("metrics") or {}
        shown = "  ".join(f"{part} {name} {value:.4f}" for part in ("train", "test") for name, value in (metrics.get(part) or {}).items()
                          if name in ("accuracy", "mae") and isinstance(value, (int, float)))
        line = f"{trial['id']}  {trial['point']}  seed {trial['seed']}  {trial['state']}  {shown}"
        if trial["state"] == "pruned":
            line += f"  {self.pruned.get(trial['id']) or 'at epoch ' + str(trial.get('pruned_at'))}"
        elif trial["state"] not in ("completed",) and trial.get("error"):
            line += f"  ({trial['error']})"
        (self.progress.console if self.progress else self.console).print(f"{line}  [{self.done}/{self.total}]", highlight=False, markup=False)
        if self.progress:
            self.progress.update(self.task, completed=self.done)

    def stop(self) -> None:
        if self.progress:
            self.progress.stop()


class DownloadBars:
    """An Emit for kexp.fetch's events: a bar per downloaded file, with its size and speed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = None

    def __call__(self, kind: str, /, **fields: Any) -> None:
        if kind == "download_started":
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            self.bar = Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=self.console)
            self.bar.start()
            self.task = self.bar.add_task(fields["name"], total=fields["total"])
        elif kind == "download_progress" and self.bar is not None:
            self.bar.advance(self.task, fields["bytes"])
        elif kind == "download_ended" and self.bar is not None:
            self.bar.stop()
            self.bar = None
