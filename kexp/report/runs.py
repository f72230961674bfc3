"""Many runs at once: `kexp runs` lists a runs directory, `kexp compare` sets runs side by side.

Reads only the small files of each run directory (config.yaml, status.json, metrics.json,
history.json) and never imports TensorFlow, so listing 500 runs takes a fraction of a second.
A run directory that cannot be read whole is listed as "damaged" with a note, never a
traceback: runs directories collect killed and half-copied runs. Aggregation (mean ± std of
runs that differ only in seed) is kexp.report.aggregate's; matplotlib is imported only to draw.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kexp.errors import RunDirError
from kexp.run.files import CONFIG, LOCK, SMALL_FILES, SWEEPS, RunFiles
from kexp.run.io import parse_time
from kexp.run.lifecycle import STATES as RECORDED_STATES
from kexp.run.lifecycle import effective_state
from kexp.run.records import Status, read_config, read_small_json

# recorded states, `crashed` (running, but its process is gone: kexp.run.lifecycle) and `damaged` (unreadable files)
STATES = (*RECORDED_STATES, "crashed", "damaged")
FORMATS = ("table", "csv", "json", "markdown")
# What `kexp runs` shows, in order; each is also a --sort key.
RUN_COLUMNS = ("id", "name", "dataset", "model", "status", "epochs", "measured", "metric", "duration", "age", "note")
# CSV for scripts: numbers as numbers (durations and ages in seconds), std and member count apart.
CSV_COLUMNS = RUN_COLUMNS[:-1] + ("metric_std", "metric_n", "started", "ended", "path", "note")
SPLITS = ("test", "validation", "train")
_RUN_ID = re.compile(r"^\d{8}-\d{6}-")


# --------------------------------------------------------------------------- reading


def component_name(spec: dict | None, section: str) -> str | None:
    value = (spec or {}).get(section)
    return value.get("name") if isinstance(value, dict) else value if isinstance(value, str) else None


def run_protocol(metrics: dict) -> str:
    """holdout, kfold, train or repeats (a hold-out run trained once per seed); older runs record none: holdout."""
    protocol = metrics.get("protocol") or "holdout"
    return "repeats" if protocol == "holdout" and metrics.get("members") else protocol


def task_metrics(metrics: dict) -> tuple[str, ...]:
    """The metrics a run is judged by, best first: R², MAE, RMSE for regression, else accuracy."""
    task = metrics.get("task") or (metrics.get("data") or {}).get("task")
    return ("r2", "mae", "rmse") if task == "regression" else ("accuracy",)


def main_metric(metrics: dict) -> dict[str, Any]:
    """The one number a run is known by: {"measured", "value", "std", "n"} (value None if it has none).

    Test accuracy if the run has a test part, else validation, else train; R² for regression.
    A run with several members (folds, seeds) gives its mean, std and member count; a number
    scored on training rows says so in "measured".
    """
    wanted = task_metrics(metrics)
    aggregate = metrics.get("aggregate") or {}
    for split in SPLITS:
        part = metrics.get(split) or {}
        for name in wanted:
            if part.get(name) is None:
                continue
            summary = (aggregate.get(split) or {}).get(name) or {}
            measured = f"{split} {name}"
            protocol = run_protocol(metrics)
            if protocol == "train" or split == "train":
                measured += " (on training rows)"
            elif summary.get("n"):
                measured += f" ({protocol}, n={summary['n']})"
            return {"measured": measured, "value": part[name], "std": summary.get("std"), "n": summary.get("n")}
    return {"measured": None, "value": None, "std": None, "n": None}


def count_epochs(run_dir: Path, metrics: dict | None) -> int | float | None:
    if metrics and metrics.get("epochs_completed") is not None:
        return metrics["epochs_completed"]
    history, _ = read_small_json(RunFiles(run_dir).history)  # a running or stopped run: its finished epochs
    if isinstance(history, dict):
        if isinstance(history.get("epochs"), (int, float)):
            return history["epochs"]
        return len(history.get("loss") or []) or None
    return None


def read_run_row(run_dir: Path, now: datetime) -> dict[str, Any]:
    """One `kexp runs` row for a run directory; problems become status "damaged" and a note."""
    problems = []
    files = RunFiles(run_dir)
    spec, problem = read_config(run_dir)
    problems += [problem] if problem else []
    status, problem = read_small_json(files.status)
    problems += [problem] if problem else []
    status = status if isinstance(status, dict) else {}
    state = status.get("state")
    if status and state not in RECORDED_STATES:
        problems.append(f"{files.status.name} has state {state!r}")
    metrics, problem = read_small_json(files.metrics)
    if problem and (state == "completed" or "missing" not in problem):  # only a completed run must have metrics
        problems.append(problem)
    metrics = metrics if isinstance(metrics, dict) else None
    started, ended = parse_time(status.get("started")), parse_time(status.get("ended"))
    if started is None:  # status.json lost: env.json records the start too
        env, _ = read_small_json(files.env)
        started = parse_time(env.get("started")) if isinstance(env, dict) else None
    duration = (ended - started).total_seconds() if started and ended else None
    if duration is None and metrics and isinstance(metrics.get("wall_seconds"), (int, float)):
        duration = float(metrics["wall_seconds"])
    headline = main_metric(metrics or {})
    notes = list(problems)
    if state in ("failed", "interrupted", "diverged") and status.get("error"):
        notes.append(str(status["error"]))
    shown = state
    if not problems and effective_state(Status.from_document(status)) == "crashed":
        shown = "crashed"
        notes.append(f"process {status.get('pid')} on {status.get('host')} is gone (last heartbeat {status.get('heartbeat')}); kexp resume {run_dir}")
    return {
        "id": run_dir.name,
        "path": str(run_dir),
        "name": (spec or {}).get("name"),
        "dataset": component_name(spec, "data"),
        "model": component_name(spec, "model"),
        "status": "damaged" if problems else shown,
        "recorded_status": state,
        "epochs": count_epochs(run_dir, metrics),
        "measured": headline["measured"],
        "metric": headline["value"],
        "metric_std": headline["std"],
        "metric_n": headline["n"],
        "started": started.isoformat() if started else None,
        "ended": ended.isoformat() if ended else None,
        "duration": duration,
        "age": (now - started).total_seconds() if started else None,
        "note": "; ".join(notes),
    }


def looks_like_run(path: Path) -> bool:
    """A folder with any run file or a run's lock, or an empty one named like a run: a run killed, or
    stopped by a full disk, before it wrote its first file is listed (as damaged), never hidden."""
    if any((path / name).exists() for name in (*SMALL_FILES, LOCK)):
        return True
    return bool(_RUN_ID.match(path.name)) and not any(path.iterdir())


def list_runs(runs_dir: Path, now: datetime | None = None) -> list[dict[str, Any]]:
    """A row per run directory under runs_dir, newest first; other folders and files are skipped."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise RunDirError(f"{runs_dir}: no such runs directory; pass the folder `kexp train --runs-dir` wrote to")
    now = now or datetime.now(UTC)
    rows = []
    for path in runs_dir.iterdir():
        if path.name.startswith(".") or not path.is_dir():
            continue
        # config.yaml first: nearly every folder is a run, so the full check is rarely needed
        if (path / CONFIG).exists() or looks_like_run(path):
            rows.append(read_run_row(path, now))
    return sort_rows(rows, None)


def sweep_trials_note(runs_dir: Path) -> str | None:
    """'12 sweep trials in 2 sweeps under runs/sweeps/ (kexp runs runs/sweeps/<sweep>)', or None: `kexp runs` lists top-level runs only."""
    folder = Path(runs_dir) / SWEEPS
    sweeps = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    if not sweeps:
        return None
    trials = sum(1 for sweep in sweeps for p in sweep.iterdir() if p.is_dir() and p.name.startswith("trial-"))
    return (f"{trials} sweep trial{'s' * (trials != 1)} in {len(sweeps)} sweep{'s' * (len(sweeps) != 1)} under {folder}/, not listed here "
            f"(kexp runs {folder}/<sweep> lists a sweep's trials)")


def sort_rows(rows: list[dict[str, Any]], sort: str | None) -> list[dict[str, Any]]:
    """By a column ("-column" descending); default newest first. Empty values always go last."""
    if not sort:
        return sorted(rows, key=lambda r: (r["started"] or "", r["id"]), reverse=True)
    column, descending = sort.removeprefix("-"), sort.startswith("-")
    if column not in RUN_COLUMNS:
        raise ValueError(f"cannot sort by {column!r}; columns: {', '.join(RUN_COLUMNS)}")
    present = [r for r in rows if r.get(column) is not None]
    missing = [r for r in rows if r.get(column) is None]
    key = (lambda r: str(r[column]).lower()) if isinstance(present[0][column] if present else 0, str) else (lambda r: r[column])
    return sorted(present, key=key, reverse=descending) + missing


def select_runs(
    rows: list[dict[str, Any]], status: list[str] | None = None, name: str | None = None, sort: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Rows with one of the statuses and a name matching `name` (a glob if it has * ? [, else a substring), sorted, at most `limit`."""
    if status:
        rows = [r for r in rows if r["status"] in status]
    if name:
        if glob.has_magic(name):
            rows = [r for r in rows if r["name"] is not None and fnmatch.fnmatchcase(r["name"], name)]
        else:
            rows = [r for r in rows if r["name"] is not None and name in r["name"]]
    rows = sort_rows(rows, sort)
    return rows[:limit] if limit is not None else rows


# --------------------------------------------------------------------------- showing


def format_number(value: Any, std: Any = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = f"{value:.4f}" if abs(value) < 1000 else f"{value:.5g}"
    return text if std is None else f"{text} ± {format_number(std)}"


def format_seconds(seconds: float | None) -> str:
    """5s, 2m05s, 3h04m, 2d05h."""
    if seconds is None:
        return "-"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def display_run_row(row: dict[str, Any]) -> dict[str, str]:
    """The row as text for a table: metric as "mean ± std", times as 2m05s."""
    shown = {column: "-" if row.get(column) is None else str(row[column]) for column in RUN_COLUMNS}
    shown["epochs"] = format_number(row["epochs"])
    shown["metric"] = format_number(row["metric"], row["metric_std"])
    shown["duration"] = format_seconds(row["duration"])
    shown["age"] = format_seconds(row["age"])
    shown["note"] = " ".join((row["note"] or "").split())  # an error message over several lines stays on its row
    return shown


def render_runs(rows: list[dict[str, Any]], fmt: str) -> str:
    """table (aligned text, one line per run), csv (plain numbers, seconds), json (every field) or markdown."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        return render_csv(list(CSV_COLUMNS), [[row.get(c) for c in CSV_COLUMNS] for row in rows])
    if fmt == "markdown":
        return render_markdown(list(RUN_COLUMNS), [[display_run_row(row)[c] for c in RUN_COLUMNS] for row in rows])
    columns = [c for c in RUN_COLUMNS if c != "note" or any(row["note"] for row in rows)]
    return render_text_table(columns, [[display_run_row(row)[c] for c in columns] for row in rows], right={"epochs", "metric", "duration", "age"})


def render_text_table(header: list[str], rows: list[list[str]], right: set[str]) -> str:
    """Columns padded to their widest cell, two spaces apart: one line per row for grep and awk.

    Not a rich Table: rich takes most of a second to lay out 500 rows, and wraps a row over
    several lines when the terminal is narrow.
    """
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if name in right else c.ljust(w) for c, w, name in zip(cells, widths, header)).rstrip()

    return "\n".join([line(header)] + [line(row) for row in rows]) + "\n"


def render_csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"
