"""How each command's result is shown: tables on a terminal, plain lines in a log, nothing else.

The library returns values; these functions decide their look (the consoles are kexp.cli.common's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kexp.cli.common import console, err_console, print_warning, printable
from kexp.run.records import Metrics


def say(text: str) -> None:
    """One line as written: no markup, no highlighting (paths and values stay as they are)."""
    console.print(text, highlight=False, markup=False)


def print_wide(table: Table) -> None:
    """A wide table at its natural width when piped (rich would squeeze it to 80 columns and cut run ids)."""
    if console.is_terminal:
        console.print(table, highlight=False, markup=False)
        return
    width = max(console.width, console.measure(table, options=console.options.update_width(10_000)).maximum)
    Console(width=width, soft_wrap=True, emoji=False).print(table, highlight=False, markup=False)


# --- train / resume ---------------------------------------------------------------------


def show_result(result, plain: bool = False) -> None:
    if result.note:
        console.print(result.note, highlight=False)
    print_metrics(result.metrics, plain)
    console.print(f"run directory: {result.run_dir}", highlight=False)


def metrics_title(metrics: Metrics) -> str:
    title = "final metrics (also in metrics.json)"
    if metrics.aggregate:
        return f"{metrics.protocol}: mean ± std [95% CI] over {len(metrics.members)} members (also in metrics.json)"
    if metrics.protocol == "train":
        title += ": scored on the training rows, not an estimate for new data"
    return title


def print_metrics(metrics: Metrics, plain: bool = False) -> None:
    """A table of the final metrics; plain (a log file): one line per part, nothing box-drawn."""
    title = metrics_title(metrics)
    splits = [s for s in ("train", "validation", "test") if metrics.part(s)]
    if plain:
        say(title)
        for split in splits:
            say(f"final {split}: " + "  ".join(f"{name} {describe_value(metrics, split, name)}" for name in metrics.part(split)))
    else:
        table = Table(title=title)
        table.add_column("metric")
        for split in splits:
            table.add_column(split, justify="right")
        for name in dict.fromkeys(k for s in splits for k in metrics.part(s)):
            table.add_row(name, *(describe_value(metrics, s, name) for s in splits))
        console.print(table)
    report = metrics.report
    if report and "balanced_accuracy" in report:
        console.print(f"balanced accuracy {report['balanced_accuracy']:.4f}" + (f" ({report['part']} part)" if "part" in report else ""), highlight=False)
    attempts = metrics.attempts or 1
    this_attempt = f" (attempt {attempts} of the run; fit time counts all {attempts})" if attempts > 1 else ""
    console.print(f"epochs {metrics.epochs_completed}  fit {metrics.fit_seconds:.1f}s  total {metrics.wall_seconds:.1f}s{this_attempt}", highlight=False)


def describe_value(metrics: Metrics, split: str, name: str) -> str:
    value = metrics.part(split).get(name)
    summary = (metrics.aggregate or {}).get(split, {}).get(name)
    if value is None:
        return "-"
    if not summary or summary["n"] < 2:
        return f"{value:.4f}"
    low, high = summary["ci95"]
    clipped = " (interval clipped to the metric's range)" if summary.get("ci95_clipped") else ""
    return f"{value:.4f} ± {summary['std']:.4f} [{low:.4f}, {high:.4f}]{clipped}"


# --- sweep ------------------------------------------------------------------------------


def print_sweep_summary(result) -> None:
    summary = result.summary
    table = Table(title=f"sweep summary: {summary.get('metric')} per point (also in summary.json, summary.csv, summary.png)")
    states = {row["id"]: row.get("state") for row in summary.get("trials", [])}
    for column in (*summary.get("params", []), "n", "train", "validation", "test", "not completed"):
        table.add_column(column, justify="right")
    for point in summary.get("points", []):
        cells = [json.dumps(point["params"][k]) for k in summary.get("params", [])]
        table.add_row(*cells, str(point.get("n", 0)), *(describe_stats(point.get(part) or {}) for part in ("train", "validation", "test")),
                      not_completed(point, states))
    console.print(table)
    counts = summary.get("counts", {})
    console.print("trials: " + ", ".join(f"{n} {state}" for state, n in counts.items()), highlight=False)
    for line in (describe_best(summary), describe_importance(summary)):
        if line:
            say(line)
    if result.stopped_by:
        console.print(f"stopped by {result.stopped_by}; continue with: kexp sweep --resume {result.sweep_dir}", highlight=False)
    console.print(f"sweep directory: {result.sweep_dir}", highlight=False)


def not_completed(point: dict, states: dict) -> str:
    """"2 pruned, 1 failed": why a point has fewer values than trials (a pruned trial has no final value)."""
    counts: dict[str, int] = {}
    for trial_id in point.get("trials") or []:
        state = states.get(trial_id)
        if state != "completed":
            counts[state or "unknown"] = counts.get(state or "unknown", 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def describe_best(summary: dict) -> str | None:
    """The best trial, its value and params, and the command that trains its spec again."""
    best = summary.get("best")
    if not best or not best.get("id"):
        return None
    seeds = {row.get("seed") for row in summary.get("trials", []) if row.get("params") == best["params"] and row.get("state") == "completed"}
    # a grid point trained with --seeds N, or a point tpe proposed more than once (same seed: the same result again)
    over = "seeds" if len(seeds) == best.get("n", 1) else "trials of this point"
    value = f"{best['value']:.4f}" + (f" ± {best['std']:.4f} over {best['n']} {over}" if best.get("n", 1) > 1 else "")
    params = ", ".join(f"{k}={json.dumps(v)}" for k, v in best["params"].items())
    return f"best: {best['id']}, {best['part']} {summary.get('metric')} {value} ({params}); reproduce: {best['command']}"


TOP_IMPORTANCES = 5


def describe_importance(summary: dict) -> str | None:
    """The most important parameters on one line; for a tpe sweep, why there are none."""
    importance = summary.get("importance") or {}
    if importance.get("params"):
        ranked = sorted(importance["params"].items(), key=lambda kv: -kv[1])[:TOP_IMPORTANCES]
        return f"parameter importance ({importance.get('evaluator')}, {importance.get('trials')} trials): " + ", ".join(f"{k} {v:.2f}" for k, v in ranked)
    if summary.get("method") == "tpe" and importance.get("reason"):
        return f"parameter importance: none ({importance['reason']})"
    return None


def describe_stats(stats: dict) -> str:
    """A point's mean, with ± std when it was trained more than once."""
    mean, std, n = stats.get("mean"), stats.get("std"), stats.get("n", 0)
    return "-" if mean is None else f"{mean:.4f}" + (f" ± {std:.4f}" if n and n > 1 else "")


# --- evaluate / predict / export --------------------------------------------------------


def print_evaluation_result(result: dict) -> None:
    """What `kexp evaluate` found, a table per part (the JSON form is the evaluation file itself)."""
    if result["split_note"] is not None:
        say(result["split_note"])
    if result["positive_class"] is not None:
        say(f"positive class (precision, recall, auc): {result['positive_class']}")
    for name in result["splits"]:
        print_evaluation(name, result["results"][name])
    if result["path"] is not None:
        console.print(f"evaluation: {result['path']}", highlight=False)


def number(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_evaluation(split: str, result: dict) -> None:
    """Keras' metrics beside metrics.json's, then the prediction-based figures and, for classes, one row each."""
    recorded = result.get("recorded_metrics") or {}
    table = Table(title=f"{split}: {result['rows']:,} rows")
    for column in ("metric", "value", "in metrics.json"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, value in result["metrics"].items():
        table.add_row(name, number(value), number(recorded.get(name)))
    for name in ("balanced_accuracy", "mae", "rmse", "r2"):
        if name in result and name not in result["metrics"]:  # regression's mae/rmse/r2 are Keras metrics too
            table.add_row(name, number(result[name]), number(recorded.get(name)))
    console.print(table)
    if result.get("recorded_note"):
        say(f"note: {result['recorded_note']}")
    if "per_class" not in result:
        return
    classes = Table(title=f"{split}: per class (rows: true class)")
    for column in ("class", "precision", "recall", "F1", "support"):
        classes.add_column(column, justify="left" if column == "class" else "right")
    for name, row in result["per_class"].items():
        classes.add_row(name, number(row["precision"]), number(row["recall"]), number(row["f1"]), f"{row['support']:,}")
    console.print(classes)


SHOWN_PREDICTIONS = 50


def print_predictions(rows: list[dict], output: Path | None, count: int | None = None) -> None:
    """The first SHOWN_PREDICTIONS of `count` predictions as a table (control characters escaped)."""
    from kexp.reuse.predict import shown_input

    count = len(rows) if count is None else count
    table = Table(title=f"predictions ({count})")
    regression = bool(rows) and "value" in rows[0]
    columns = ["input", "value"] if regression else ["input", "label", "probability"]
    has_top = any("top" in row for row in rows)
    for name in columns + (["top labels"] if has_top else []):
        table.add_column(name, justify="right" if name in ("value", "probability") else "left")
    for row in rows[:SHOWN_PREDICTIONS]:
        cells = [shown_input(row), f"{row['value']:.4g}"] if regression else [shown_input(row), row["label"], f"{row['probability']:.3f}"]
        if has_top:
            cells.append(", ".join(f"{pair['label']} {pair['probability']:.3f}" for pair in row.get("top", [])))
        table.add_row(*(Text(printable(str(cell))) for cell in cells))
    console.print(table)
    if count > SHOWN_PREDICTIONS:
        where = f"all of them are in {output}" if output is not None else "use --output FILE or --json for all of them"
        console.print(f"… {count - SHOWN_PREDICTIONS} more not shown ({where})", highlight=False)
    elif output is not None:
        console.print(f"predictions written to {output}", highlight=False)


def print_export(info: dict) -> None:
    for warning in info["warnings"]:
        print_warning(warning)
    check = info["check"]
    say(f"exported {info['format']}: {info['path']}  ({info['seconds']:.1f}s)")
    console.print(
        f"check: matches model.keras on {check['rows']} generated rows, max abs difference {check['max_abs_difference']:.2g} <= {check['tolerance']:g}",
        highlight=False,
    )
    say(f"details (inputs, class names, versions): {info['json']}")
    kind = {"images": "image", "image_files": "image", "arrays": "array"}.get(info["preprocessing"]["kind"], info["preprocessing"]["kind"])
    say(f"note: the model takes {kind} inputs already preprocessed by the run; its preprocessing is in that JSON")


# --- runs / compare ---------------------------------------------------------------------


def print_compare_tables(result: dict) -> None:
    """`kexp compare`'s two tables: every run, then the groups that differ only in seed."""
    from kexp.report.compare import compare_table, group_table

    runs = len(result["runs"])
    for title, (header, rows) in (
        (f"{runs} run{'s' * (runs != 1)}: spec keys that differ, final metrics", compare_table(result)),
        ("runs that differ only in seed, or reruns of one seed: mean ± std over their n trainings", group_table(result) if result["groups"] else ([], [])),
    ):
        if not rows:
            continue
        table = Table(title=title)
        for i, column in enumerate(header):
            table.add_column(column, justify="right" if i >= len(header) - len(result["metric_columns"]) else "left")
        for row in rows:
            table.add_row(*row)
        print_wide(table)


# --- datasets / models / data list / doctor ---------------------------------------------


def print_entry_table(kind: str, rows: list[dict]) -> None:
    """The registered datasets or models, their options with defaults."""
    table = Table(title=f"registered {kind}", show_lines=True)
    for column in ("name", "what", "options (default)"):
        table.add_column(column)
    for row in rows:
        opts = "\n".join(
            (f"{o['name']} (required)" if o["required"] else f"{o['name']} = {json.dumps(o['default'])}")
            + (f"  ({o['description']})" if o["description"] else "")
            for o in row["options"]
        )
        what = row["summary"] if row["origin"] == "built-in" else f"{row['summary']}\nfrom {row['origin']}"
        table.add_row(row["name"], Text(what), opts)
    console.print(table)


def print_data_sets(folder: str, found: dict[str, list]) -> None:
    """Each data set's files under `folder`: state, size and source."""
    from kexp.fetch import dataset_state

    table = Table(title=f"data sets in {folder} (kexp data fetch NAME gets or repairs one)")
    for column in ("data set", "file", "state", "bytes", "source"):
        table.add_column(column, justify="right" if column == "bytes" else "left", overflow="fold")
    for name, files in found.items():
        for i, file in enumerate(files):
            label = f"{name}: {dataset_state(files)}" if i == 0 else ""
            table.add_row(label, str(file.path), describe_file_state(file), "" if file.bytes is None else f"{file.bytes:,}", file.url or "extracted from the archive")
        table.add_section()
    print_wide(table)


def file_json(file) -> dict[str, Any]:
    return {"path": str(file.path), "state": file.state, "needed": file.needed, "bytes": file.bytes, "sha256": file.sha256,
            "expected_sha256": file.expected_sha256, "url": file.url, "problem": file.problem}


def describe_file_state(file) -> str:
    return {
        "valid": "ok: sha256 matches",
        "present": "present (no published hash)",
        "missing": "missing" if file.needed else "missing (not needed once extracted)",
        "differs": f"not the published file (sha256 {(file.sha256 or '')[:12]}…); it reads whole, kexp uses it",
        "unreadable": f"UNREADABLE: {file.problem}" if file.problem else "UNREADABLE",
    }[file.state]


def print_doctor(checks: list) -> None:
    """Every check as a row, the counts, and each failure again on stderr with its fix."""
    from kexp.doctor import FAIL, WARN

    colour = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    table = Table(title="kexp doctor")
    for column in ("check", "status", "found", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(Text(check.name), Text(check.status, style=colour[check.status]), Text(check.found), Text(check.fix))
    print_wide(table)
    counts = {status: sum(c.status == status for c in checks) for status in ("ok", WARN, FAIL)}
    console.print(", ".join(f"{n} {status}" for status, n in counts.items()), highlight=False)
    for check in checks:
        if check.status == FAIL:
            err_console.print(f"kexp: error: {check.name}: {check.found}; fix: {check.fix}", highlight=False, markup=False)
