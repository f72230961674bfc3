"""Many runs at once: `kexp runs` lists a runs directory, `kexp compare` sets runs side by side.

Reads only the small files of each run directory (config.yaml, status.json, metrics.json,
history.json) and never imports TensorFlow, so listing 500 runs takes a fraction of a second.
A run directory that cannot be read whole is listed as "damaged" with a note, never a
traceback: runs directories collect killed and half-copied runs. Aggregation (mean ± std of
runs that differ only in seed) is kexp.aggregate's; matplotlib is imported only to draw.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import io
import json
import math
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kexp.aggregate import SEED_KEYS, flatten_spec, group_runs_by_spec, summarize_values
from kexp.errors import RunDirError
from kexp.run.files import CONFIG, LOCK, SMALL_FILES, SWEEPS, RunFiles
from kexp.run.io import parse_time, write_json
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


# --------------------------------------------------------------------------- compare


def expand_run_paths(arguments: list[str], skipped: list[str] | None = None) -> list[Path]:
    """Run directories from arguments; a quoted glob ("runs/*pima*") is expanded here, as a shell would.

    A glob's matches that are not runs (runs/sweeps/, a notes folder) are left out, each with a
    line in `skipped`; a folder named outright must be a run."""
    paths: list[Path] = []
    for argument in arguments:
        if not Path(argument).exists() and glob.has_magic(argument):
            folders = sorted(Path(p) for p in glob.glob(argument) if Path(p).is_dir())
            matches = [p for p in folders if (p / CONFIG).exists() or looks_like_run(p)]
            for other in (p for p in folders if p not in matches):
                hint = f" (a sweep folder: kexp compare '{other}/*/trial-*')" if other.name == SWEEPS else ""
                if skipped is not None:
                    skipped.append(f"{other}: not a run directory, skipped{hint}")
            if not matches:
                raise RunDirError(f"{argument}: no run directories match")
            paths += matches
        else:
            paths.append(Path(argument))
    seen, unique = set(), []
    for path in paths:  # a folder named twice (runs/a and ./runs/a) is compared once
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    return unique


def read_compared_run(run_dir: Path) -> dict[str, Any]:
    """Spec, status, metrics and curves of one run; only a missing or unreadable config.yaml is an error."""
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    spec, problem = read_config(run_dir)
    if spec is None:
        hint = f"; to compare the runs in it: kexp compare '{run_dir}/*'" if any(run_dir.glob(f"*/{CONFIG}")) else ""
        raise RunDirError(f"{run_dir}: not a kexp run directory ({problem}){hint}")
    status, status_problem = read_small_json(RunFiles(run_dir).status)
    metrics, metrics_problem = read_small_json(RunFiles(run_dir).metrics)
    state = effective_state(Status.from_document(status)) if isinstance(status, dict) else None
    notes = [status_problem] if status_problem else []
    if metrics_problem and (state == "completed" or not metrics_problem.endswith("missing")):  # as in `kexp runs`
        notes.append(metrics_problem)
    curves, averaged = read_curves(run_dir)
    return {
        "id": run_dir.name,
        "path": str(run_dir),
        "spec": spec,
        "status": "damaged" if notes else state,
        "note": "; ".join(notes),
        "metrics": metrics if isinstance(metrics, dict) else {},
        "history": curves,
        "curves_averaged_over": averaged,
    }


def read_curves(run_dir: Path) -> tuple[dict[str, list], int | None]:
    """(series, None) from history.json; a run of folds or seeds without one: its members' epoch-wise mean and their count."""
    history, _ = read_small_json(RunFiles(run_dir).history)
    if isinstance(history, dict):
        return {k: v for k, v in history.items() if isinstance(v, list) and k != "epoch_seconds"}, None
    members = [read_small_json(p)[0] for p in RunFiles(run_dir).member_histories()]
    members = [m for m in members if isinstance(m, dict)]
    if not members:
        return {}, None
    curves = {}
    for key in dict.fromkeys(k for m in members for k, v in m.items() if isinstance(v, list) and k != "epoch_seconds"):
        series = [m.get(key) or [] for m in members]
        # early stopping ends members at different epochs: each epoch's mean is over the members that reached it
        curves[key] = [mean_or_none([s[i] for s in series if i < len(s)]) for i in range(max(map(len, series)))]
    return curves, len(members)


def mean_or_none(values: list[float | None]) -> float | None:
    numbers = [v for v in values if v is not None]
    return math.fsum(numbers) / len(numbers) if numbers else None


def differing_keys(specs: list[dict[str, Any]]) -> list[str]:
    """Dotted spec keys whose value is not the same in every spec (a key some lack counts), in spec order."""
    flats = [flatten_spec(s) for s in specs]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    return [k for k in keys if len({json.dumps(f[k], sort_keys=True, default=str) if k in f else "<unset>" for f in flats}) > 1]


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its shortest unambiguous tail: model.hidden_units -> hidden_units, but model.name and data.name stay whole."""
    names = {}
    for key in keys:
        parts = key.split(".")
        names[key] = key  # a top-level key (name) can be the tail of others (data.name): then it stays whole
        for size in range(1, len(parts) + 1):
            tail = ".".join(parts[-size:])
            if sum(1 for other in keys if other == tail or other.endswith("." + tail)) == 1:
                names[key] = tail
                break
    return names


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(", ", ": "))
    return "null" if value is None else str(value)


def run_label(values: dict[str, Any], names: dict[str, str], limit: int = 60) -> str:
    """"hidden_units=[64], learning_rate=0.01": nulls (mostly unset options) left out to keep legends short."""
    label = ", ".join(f"{names[k]}={format_value(v)}" for k, v in values.items() if v is not None)
    return label if len(label) <= limit else label[: limit - 1] + "…"


def metric_columns(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(split, metric) pairs any run has, test first, in the order metrics.json lists them."""
    return [(split, name) for split in SPLITS for name in dict.fromkeys(n for r in runs for n in (r["metrics"].get(split) or {}))]


def run_metrics(metrics: dict[str, Any], columns: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """{"test accuracy": {"value", "std", "n"}} for each column; std and n from the run's own aggregate (folds, seeds)."""
    aggregate = metrics.get("aggregate") or {}
    cells = {}
    for split, name in columns:
        value = (metrics.get(split) or {}).get(name)
        summary = (aggregate.get(split) or {}).get(name) or {}
        cells[f"{split} {name}"] = {"value": value, "std": summary.get("std"), "n": summary.get("n")}
    return cells


def compare_runs(paths: list[Path]) -> dict[str, Any]:
    """What `kexp compare` shows and writes to compare.json: differing spec keys, metrics, seed groups, curves."""
    runs = [read_compared_run(Path(p)) for p in paths]
    if not runs:
        raise RunDirError("no run directories to compare")
    keys = differing_keys([r["spec"] for r in runs])
    names = short_names(keys)
    columns = metric_columns(runs)
    flats = [flatten_spec(r["spec"]) for r in runs]
    labels = [run_label({k: flat[k] for k in keys if k in flat}, names) or r["id"] for r, flat in zip(runs, flats)]
    repeated = {label for label, count in Counter(labels).items() if count > 1}
    labels = [f"{label} [{r['id']}]" if label in repeated else label for label, r in zip(labels, runs)]
    listed = [
        {
            "id": run["id"], "path": run["path"], "label": label, "status": run["status"], "note": run["note"],
            "name": run["spec"].get("name"), "protocol": run_protocol(run["metrics"]),
            "spec": {k: flat[k] for k in keys if k in flat},  # a key an older kexp did not write stays absent ("-")
            "metrics": run_metrics(run["metrics"], columns), "curves_averaged_over": run["curves_averaged_over"],
        }
        for run, flat, label in zip(runs, flats, labels)
    ]
    groups = seed_groups(runs, listed, keys, names, columns)
    return {
        "runs": listed,
        "differing_keys": keys,
        "metric_columns": [f"{split} {name}" for split, name in columns],
        "groups": groups,
        "curve_metric": curve_metric(runs),
        "curves": {r["id"]: r["history"] for r in runs},
    }


def seed_groups(runs: list[dict], listed: list[dict], keys: list[str], names: dict[str, str], columns: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Runs whose specs differ only in seed, each group's metrics as mean, std and 95% CI over its trainings.

    A run that trained several members (seeds, folds) adds each member's value, not its mean,
    so a 3-seed run beside a single run counts as four trainings, not two equal votes.
    """
    by_id = {r["id"]: r for r in runs}
    groups = []
    for ids in group_runs_by_spec([(r["id"], r["spec"]) for r in runs]):
        if len(ids) < 2:
            continue
        shown = next(r for r in listed if r["id"] == ids[0])
        shared = {k: v for k, v in shown["spec"].items() if k not in SEED_KEYS}
        trainings = [t for i in ids for t in trainings_of(by_id[i])]
        seeds = list(dict.fromkeys(t.get("seed") for t in trainings))
        # one seed throughout: the spread is rerun noise (threads, hardware), not seed-to-seed variation
        rerun = f" (reruns of seed {seeds[0]}, not other seeds)" if len(seeds) == 1 else ""
        groups.append({
            "label": (run_label(shared, names) or "same spec") + rerun,
            "same_seed": len(seeds) == 1,
            "spec": shared,
            "runs": ids,
            "trainings": len(trainings),
            "seeds": seeds,
            "metrics": {f"{s} {n}": summarize_values(((t.get(s) or {}).get(n) for t in trainings), n) for s, n in columns},
        })
    return groups


def trainings_of(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's members from metrics.json, or the run itself as one training: each {seed, train, validation, test}."""
    members = run["metrics"].get("members")
    if members:
        return members
    return [{"seed": run["spec"].get("seed"), **{s: run["metrics"].get(s) for s in SPLITS}}]


def curve_metric(runs: list[dict[str, Any]]) -> str | None:
    """The metric drawn beside the loss: accuracy, or R² for regression, whichever most runs recorded."""
    found = Counter()
    for run in runs:
        for name in task_metrics(run["metrics"]):
            if name in run["history"]:
                found[name] += 1
                break
    return found.most_common(1)[0][0] if found else None


def render_compare(result: dict[str, Any], fmt: str) -> str:
    """csv (one row per run, then per seed group; std in its own column), json, or markdown tables."""
    if fmt == "json":
        return json.dumps(result, indent=2) + "\n"
    keys, columns = result["differing_keys"], result["metric_columns"]
    if fmt == "csv":
        header = ["kind", "id", "label", "status", "n", *keys] + [c for column in columns for c in (column, f"{column} std")]
        rows = [
            ["run", r["id"], r["label"], r["status"], 1, *(format_value(r["spec"][k]) if k in r["spec"] else "" for k in keys)]
            + [v for column in columns for v in (r["metrics"][column]["value"], r["metrics"][column]["std"])]
            for r in result["runs"]
        ]
        rows += [
            ["group", " ".join(g["runs"]), g["label"], "", g["trainings"], *(format_value(g["spec"][k]) if k in g["spec"] else "" for k in keys)]
            + [v for column in columns for v in (g["metrics"][column]["mean"], g["metrics"][column]["std"])]
            for g in result["groups"]
        ]
        return render_csv(header, rows)
    header, rows = compare_table(result)
    text = render_markdown(header, rows)
    if result["groups"]:
        header, rows = group_table(result)
        text += "\nRuns that differ only in seed, or reruns of one seed (mean ± std over their n trainings):\n\n" + render_markdown(header, rows)
    return text


def compare_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and text rows: one row per run, its differing spec values, then its final metrics."""
    names = short_names(result["differing_keys"])
    header = ["run", "status", *(names[k] for k in result["differing_keys"]), *result["metric_columns"]]
    rows = [
        [r["id"], r["status"] or "-", *(format_value(r["spec"][k]) if k in r["spec"] else "-" for k in result["differing_keys"])]
        + [format_number(r["metrics"][c]["value"], r["metrics"][c]["std"]) for c in result["metric_columns"]]
        for r in result["runs"]
    ]
    return header, rows


def group_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["runs", "n", "seeds", "spec", *result["metric_columns"]]  # n: trainings, a run of 3 seeds counting 3
    rows = [
        [str(len(g["runs"])), str(g["trainings"]), ", ".join(map(str, g["seeds"])), g["label"]]
        + [format_number(g["metrics"][c]["mean"], g["metrics"][c]["std"]) for c in result["metric_columns"]]
        for g in result["groups"]
    ]
    return header, rows


def write_compare(result: dict[str, Any], png: Path | None = None) -> dict[str, Path]:
    """compare.png (learning curves) and, beside it, compare.json with every number shown;
    `png` None: compare.png in the folder that holds the first run (runs/), not where kexp was started."""
    if png is None:
        png = Path(result["runs"][0]["path"]).parent / "compare.png" if result["runs"] else Path("compare.png")
    png = Path(png)
    if not png.suffix:  # matplotlib would add .png itself, and the line saying where would be wrong
        png = png.with_suffix(".png")
    if not png.parent.is_dir():
        raise RunDirError(f"{png.parent}: no such directory for {png.name}")
    json_path = png.with_suffix(".json")
    plot_compare(result, png)
    write_json(json_path, {**result, "png": str(png)})
    return {"png": png, "json": json_path}


def plot_compare(result: dict[str, Any], path: Path) -> Path:
    """Loss and the main metric per epoch, every run one colour, train solid and validation dashed, one legend below."""
    # Figure without pyplot: no GUI backend to choose, and a tenth of a second less to import
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    metrics = ["loss"] + ([result["curve_metric"]] if result["curve_metric"] else [])
    runs = result["runs"]
    colours = colormaps["tab10" if len(runs) <= 10 else "tab20"].colors
    legend_inches = 0.3 + 0.2 * (len(runs) + 2)  # one column of entries below the plots: long labels stay whole
    height = 4.4 + legend_inches
    fig = Figure(figsize=(12, height))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, run in enumerate(runs):
            curves = result["curves"][run["id"]]
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                values = [math.nan if v is None else v for v in curves.get(key) or []]
                if values:
                    ax.plot(range(1, len(values) + 1), values, style, color=colours[i % len(colours)], linewidth=1.4)
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[i % len(colours)], linewidth=2.5) for i in range(len(runs))]
    handles += [Line2D([], [], color="black", linestyle="-"), Line2D([], [], color="black", linestyle="--")]
    labels = [run["label"] + (f" (mean of {run['curves_averaged_over']} members)" if run["curves_averaged_over"] else "") for run in runs]
    labels += ["train (solid)", "validation (dashed)"]
    fig.legend(handles, labels, loc="lower center", ncol=1, fontsize=9, frameon=False)
    # fixed margins in inches: tight_layout would draw the figure once more (a third of the time)
    fig.subplots_adjust(left=0.8 / 12, right=1 - 0.25 / 12, top=1 - 0.4 / height, bottom=(legend_inches + 0.6) / height, wspace=0.18)
    fig.savefig(path, dpi=100)
    return path
