"""What a run reports while it works, as events: the library emits them, the CLI shows them.

An event is a kind and plain JSON fields, e.g. `epoch_end` {epoch, epochs, seconds, metrics}.
Training code calls `emit(kind, **fields)` and never prints; `kexp train` turns events into
a live display, plain lines or JSON lines (kexp.cli.display), and every event but the
high-frequency `batch` is also appended to `<run>/events.jsonl`, so a script can follow a
run, or read it afterwards, without parsing what was shown.

Kinds: data, run_started, tracking (where MLflow logs), member_started, member_skipped, warning, train_started, batch
(not recorded), epoch_end, evaluation, checkpoint, run_finished, run_failed; and, for live displays only,
progress {task, done, total} and progress_end {task} (predicting, tokenizing). A sweep (kexp.sweep.trials)
emits sweep_started, trial_started and trial_ended; a download (kexp.fetch) download_started,
download_progress and download_ended; neither is recorded in a run.

A step whose signature cannot carry an Emit (a dataset reader's is public: `fn(options,
data_dir, seed)`) calls `report(kind, **fields)`: it goes to the Emit the caller installed
with `reporting(emit)`, and nowhere when none was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol

from kexp.run.files import EVENTS as EVENTS_FILE
from kexp.run.io import now_iso, strict_json

NOT_RECORDED = {"batch", "progress", "progress_end"}  # many a second: for live displays only


class Emit(Protocol):
    def __call__(self, kind: str, /, **fields: Any) -> None: ...


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """The event as it is shown in JSON lines and recorded: kind and time first."""
    return {"event": kind, "time": now_iso(), **fields}


def json_line(e: dict[str, Any]) -> str:
    """One strict JSON line: a non-finite number is null and named under "non_finite", as in every run file."""
    return strict_json(e, indent=None) + "\n"


def discard(kind: str, /, **fields: Any) -> None:
    """An Emit for library callers that want no reports."""


_REPORTER: ContextVar[Emit] = ContextVar("kexp_reporter", default=discard)


@contextmanager
def reporting(emit: Emit) -> Iterator[None]:
    """Send what `report` is given, inside this block, to `emit`."""
    token = _REPORTER.set(emit)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def report(kind: str, /, **fields: Any) -> None:
    """An event from deep inside a step, to the Emit installed by `reporting` (if any)."""
    _REPORTER.get()(kind, **fields)


class RecordingEmit:
    """An Emit that shows every event and records it in events.jsonl once `record_to` names the
    run; events from before that (reading the data) are written then, in order."""

    def __init__(self, show: Emit) -> None:
        self.show = show
        self.path: Path | None = None
        self.pending: list[dict[str, Any]] = []

    def __call__(self, kind: str, /, **fields: Any) -> None:
        self.show(kind, **fields)
        if kind in NOT_RECORDED:
            return
        self.pending.append(event(kind, **fields))
        if self.path is not None:
            self.flush()

    def record_to(self, run_dir: Path) -> None:
        self.path = run_dir / EVENTS_FILE
        self.flush()

    def flush(self) -> None:
        # appended (a resumed run continues the file) and flushed per event: `tail -f` follows it
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(json_line(e) for e in self.pending)
        except OSError:
            return  # the run's own files say what matters; a full disk fails them loudly
        self.pending.clear()


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """The events a run recorded, oldest first (a line cut short by a kill is skipped)."""
    path = Path(run_dir) / EVENTS_FILE
    events = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events

