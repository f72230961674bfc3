"""A sweep's summary: the chosen metric of every trial and of every point (mean ± std over
seeds), as summary.json, summary.csv and summary.png in the sweep directory.

The figure is the tutorial's: train and test accuracy against the number of hidden units
(one swept parameter), or a heat map of the test metric (two parameters). Means, standard
deviations and 95% CIs come from kexp.report.aggregate, as for folds, repeats and `kexp compare`;
the default metric is the one `kexp compare` judges a run by. A sweep still in progress can
be summarized: trials that have not completed count in "counts" and have no values.

A search (random, tpe) adds what kexp.sweep.insight finds: the optimization history, Optuna's
parameter importance and the pruned trials, in summary.json and, for a tpe sweep or a random
one of SEARCH_PANEL_TRIALS trials or more, as two more panels of summary.png (summary_plots).
"best" names the trial to look at and the command that trains its spec again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kexp.report.aggregate import summarize_values
from kexp.report.compare import format_value
from kexp.report.runs import task_metrics
from kexp.run.files import RunFiles, SweepFiles
from kexp.run.io import write_json, write_text_atomic
from kexp.run.records import read_small_json, read_sweep_space
from kexp.sweep.insight import optimization_history, param_importance, pruned_trials, trial_curves
from kexp.sweep.summary_plots import param_names

PARTS = ("train", "validation", "test")
BEST_PARTS = ("test", "validation", "train")  # the best point is judged on held-out data when a trial has some
# Known states first, so the CLI's "3 completed, 1 failed" line reads the same in every sweep.
STATE_ORDER = ("completed", "pruned", "running", "pending", "interrupted", "failed", "diverged")
LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "mape", "msle")
MAX_ANNOTATED_CELLS = 150  # beyond this a heat map's numbers overlap: the colours alone are drawn
SEARCH_PANEL_TRIALS = 8  # a random search this long has a history worth drawing; a tpe one always has


# --------------------------------------------------------------------------- numbers


def read_trial_metrics(sweep_dir: Path, trial: dict[str, Any]) -> dict[str, Any]:
    """The trial's metrics.json, or {} until it completed (a failed run's partial numbers are not its result)."""
    if trial.get("state") != "completed" or not trial.get("run_dir"):
        return {}
    metrics, _ = read_small_json(RunFiles(Path(sweep_dir) / trial["run_dir"]).metrics)  # an absolute run_dir stays as it is
    return metrics if isinstance(metrics, dict) else {}


def default_metric(all_metrics: list[dict[str, Any]]) -> str:
    """The task's main metric, as `kexp compare` picks it: accuracy, or R², MAE, RMSE for regression."""
    for metrics in all_metrics:
        for name in task_metrics(metrics):
            if any((metrics.get(part) or {}).get(name) is not None for part in PARTS):
                return name
    return "accuracy"  # nothing completed yet: the common case, and the summary is rewritten when trials finish


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER or metric.endswith(("loss", "error", "crossentropy"))


def trial_row(trial: dict[str, Any], metrics: dict[str, Any], metric: str) -> dict[str, Any]:
    """One summary row: the trial's identity and its train/validation/test value of `metric` (None when missing)."""
    return {
        "id": trial["id"], "params": trial.get("params") or {}, "seed": trial.get("seed"), "state": trial.get("state"),
        "run_dir": str(trial.get("run_dir")) if trial.get("run_dir") is not None else None,
        **{part: (metrics.get(part) or {}).get(metric) for part in PARTS},
        "epochs_completed": metrics.get("epochs_completed"), "fit_seconds": metrics.get("fit_seconds"),
    }


def point_key(value: Any) -> str:
    """A hashable key for params or one param's value: lists ([64, 32] hidden units) and dicts cannot be dict keys."""
    return json.dumps(value, sort_keys=True, default=str)


def point_rows(rows: list[dict[str, Any]], metric: str | None = None) -> list[dict[str, Any]]:
    """One row per distinct params (first-seen order): n completed trials and summarize_values per part over its seeds."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(point_key(row["params"]), []).append(row)
    points = []
    for members in grouped.values():
        done = [r for r in members if r["state"] == "completed"]
        points.append({"params": members[0]["params"], "n": len(done), "trials": [r["id"] for r in members],
                       "seeds": [r["seed"] for r in members], **{part: summarize_values((r[part] for r in done), metric) for part in PARTS}})
    return points


def best_point(points: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """{"params", "part", "value" (the mean over seeds), "std", "n"} of the best test mean (else validation, else train)."""
    choose = min if lower_is_better(metric) else max
    for part in BEST_PARTS:
        scored = [p for p in points if p[part]["mean"] is not None]
        if scored:
            best = choose(scored, key=lambda p: p[part]["mean"])  # ties: the first point in sweep order
            return {"params": best["params"], "part": part, "value": best[part]["mean"], "std": best[part]["std"], "n": best[part]["n"]}
    return None


def state_counts(trials: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(str(t.get("state")) for t in trials)
    order = [s for s in STATE_ORDER if s in counts] + [s for s in counts if s not in STATE_ORDER]
    return {state: counts[state] for state in order}


def best_trial(sweep_dir: Path, best: dict[str, Any] | None, points: list[dict[str, Any]], rows: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """`best` with the trial to reproduce: of the best point's completed trials (seeds), the best on the judged part."""
    if best is None:
        return None
    point = next(p for p in points if p["params"] == best["params"])
    members = [r for r in rows if r["id"] in point["trials"] and r["state"] == "completed" and r[best["part"]] is not None]
    row = (min if lower_is_better(metric) else max)(members, key=lambda r: r[best["part"]])
    command = f"kexp train {shlex.quote(str(SweepFiles(Path(sweep_dir)).trial_spec(row['id'])))}"  # specs/<id>.yaml is the trial's resolved spec
    return {**best, "id": row["id"], "run_dir": row["run_dir"], "command": command}


def build_summary(sweep_dir: Path, trials: list[dict[str, Any]], metric: str | None = None, space: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary dict that write_summary writes, without writing anything; `space` is sweep.yaml's (None: unknown)."""
    all_metrics = [read_trial_metrics(sweep_dir, t) for t in trials]
    metric = metric or default_metric(all_metrics)
    rows = [trial_row(t, m, metric) for t, m in zip(trials, all_metrics)]
    space = space or {}
    pruned = pruned_trials(sweep_dir, trials, metric, space.get("monitor"))
    for p in pruned:  # the epochs it ran: a pruned trial has no metrics.json to say so
        next(r for r in rows if r["id"] == p.id)["epochs_completed"] = p.epochs
    points = point_rows(rows, metric)
    best = best_point(points, metric)
    part = best["part"] if best else None
    return {
        "metric": metric,
        "higher_is_better": not lower_is_better(metric),
        "method": space.get("method"),
        "params": list(dict.fromkeys(k for t in trials for k in t.get("params") or {})),
        "complete": bool(trials) and all(t.get("state") == "completed" for t in trials),
        "counts": state_counts(trials),
        "best": best_trial(sweep_dir, best, points, rows, metric),
        "points": points,
        "trials": rows,
        "history": [asdict(e) for e in optimization_history(trials, rows, part, not lower_is_better(metric))],
        "importance": asdict(param_importance(rows, part, space.get("params"), not lower_is_better(metric))),
        "pruned": [asdict(p) for p in pruned],
        # the pruner's view, for the curves panel: only where something was (or could be) pruned
        "curves": trial_curves(sweep_dir, trials, metric, space.get("monitor")) if pruned or space.get("prune") not in (None, "none") else [],
    }


def write_summary(sweep_dir: Path, trials: list[dict[str, Any]], metric: str | None = None, space: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json, summary.csv and summary.png in sweep_dir; returns the summary dict. `space` defaults to sweep.yaml's."""
    sweep_dir = Path(sweep_dir)
    summary = build_summary(sweep_dir, trials, metric, space if space is not None else read_sweep_space(sweep_dir))
    files = SweepFiles(sweep_dir)
    write_json(files.summary("json"), summary)
    write_text_atomic(files.summary("csv"), summary_csv(summary))
    plot_summary(summary, files.summary("png"))
    return summary


# --------------------------------------------------------------------------- csv


def csv_cell(value: Any) -> Any:
    """Numbers as numbers (full precision, for scripts) as in `kexp compare --format csv`; params as compare shows them."""
    if value is None:
        return ""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else format_value(value)


def summary_csv(summary: dict[str, Any]) -> str:
    """One row per trial: id, each swept param, seed, state, the metric per part, epochs, fit_seconds; with pruned
    trials, two more columns: the epoch it was pruned at and its last value of the monitored series (not a final metric)."""
    params, metric = summary["params"], summary["metric"]
    pruned = {p["id"]: p for p in summary.get("pruned") or []}
    monitor = next((p["monitor"] for p in pruned.values() if p["monitor"]), "monitored")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", *params, "seed", "state", *(f"{part}_{metric}" for part in PARTS), "epochs", "fit_seconds",
                     *(["pruned_at_epoch", f"pruned_last_{monitor}"] if pruned else [])])
    for row in summary["trials"]:
        cells = [row["id"], *(row["params"].get(k) for k in params), row["seed"], row["state"],
                 *(row[part] for part in PARTS), row["epochs_completed"], row["fit_seconds"]]
        if pruned:
            cells += [pruned[row["id"]]["pruned_at"], pruned[row["id"]]["last_value"]] if row["id"] in pruned else [None, None]
        writer.writerow([csv_cell(c) for c in cells])
    return out.getvalue()


# --------------------------------------------------------------------------- figure


def as_number(value: Any) -> float | None:
    """A plottable x: a number, or a list holding one number (hidden_units [100]); bools are categories."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def numeric_axis(values: list[Any]) -> list[float] | None:
    """The values as numbers when every one is a number, else None (a categorical axis)."""
    numbers = [as_number(v) for v in values]
    return None if any(x is None for x in numbers) else numbers


def wants_log_scale(xs: list[float]) -> bool:
    # hidden units 10..200 or learning rates 1e-4..1e-1: evenly spaced on a log axis, crowded on a linear one
    return bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 20


def plot_summary(summary: dict[str, Any], path: Path) -> Path:
    """summary.png: metric against the parameter (one), a heat map (two), or per point on a categorical axis (more)."""
    # Figure without pyplot (as kexp.report.compare): no GUI backend to choose, and the PNG is drawn by Agg
    from matplotlib.figure import Figure

    from kexp.sweep.summary_plots import SEARCH_PANEL_WIDTH, draw_search_panels, search_panels

    points, params = summary["points"], summary["params"]
    panels = search_panels(summary, SEARCH_PANEL_TRIALS)
    fig = Figure(figsize=(figure_width(points, params) + SEARCH_PANEL_WIDTH * len(panels), 4.5))
    ax, *extra = fig.subplots(1, 1 + len(panels), squeeze=False)[0]
    draw_search_panels(summary, dict(zip(panels, extra)))
    if not any(p[part]["mean"] is not None for p in points for part in PARTS):
        ax.text(0.5, 0.5, "no completed trial yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    elif len(params) == 2:
        draw_heat_map(fig, ax, points, params, summary["metric"])
    else:
        draw_curves(ax, points, params, summary["metric"])
    fig.tight_layout()
    save_png_atomic(fig, Path(path))
    return Path(path)


def figure_width(points: list[dict[str, Any]], params: list[str]) -> float:
    """Inches: wider for many categories, so that their tick labels stay apart; a numeric axis keeps its width."""
    if len(params) == 2:
        columns = len(distinct_values(points, params[1]))
    elif len(params) == 1 and numeric_axis([p["params"].get(params[0]) for p in points]):
        columns = 0
    else:
        columns = len(points)
    return max(6.5, min(16.0, 1.5 + 0.6 * columns))


def save_png_atomic(fig, path: Path) -> None:
    """A reader (a browser refreshing while the sweep runs) sees the old figure or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def point_labels(points: list[dict[str, Any]], params: list[str]) -> list[str]:
    """Tick labels: each point's values in the order of `params` ("10, 0.01, relu"); the axis label names them."""
    return [", ".join(format_value(p["params"].get(k)) for k in params) for p in points]


def draw_curves(ax, points: list[dict[str, Any]], params: list[str], metric: str) -> None:
    """The metric per part against the points; mean line and a ±std band where a point has several seeds."""
    from matplotlib.ticker import NullFormatter

    xs = numeric_axis([p["params"].get(params[0]) for p in points]) if len(params) == 1 else None
    order = sorted(range(len(points)), key=lambda i: xs[i]) if xs else list(range(len(points)))
    x = [xs[i] for i in order] if xs else list(range(len(order)))
    labels = [format_value(v) for v in xs] if xs else point_labels(points, params)  # [100] hidden units: "100"
    for part, marker in (("train", "o"), ("validation", "s"), ("test", "^")):
        shown = [(xi, points[i][part]) for xi, i in zip(x, order) if points[i][part]["mean"] is not None]
        if not shown:
            continue
        # a random search's scattered values: a line through them zigzags, the markers alone show the trend
        style = "-" if len(shown) <= 12 else "none"
        line, = ax.plot([xi for xi, _ in shown], [s["mean"] for _, s in shown], marker=marker, linestyle=style, label=part)
        if any(s["n"] > 1 for _, s in shown):
            ax.fill_between([xi for xi, _ in shown], [s["mean"] - s["std"] for _, s in shown], [s["mean"] + s["std"] for _, s in shown],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    if xs and wants_log_scale(xs):
        ax.set_xscale("log")
    valued = [(xi, i) for xi, i in zip(x, order) if any(points[i][part]["mean"] is not None for part in PARTS)]  # pruned: no tick
    if xs is None or ticks_fit(sorted({xi for xi, _ in valued}), ax.get_xscale() == "log"):  # else the default ticks read better
        long = xs is None and max(map(len, labels), default=0) > 6
        ax.set_xticks([xi for xi, _ in valued], [labels[i] for _, i in valued], rotation=30 if long else 0, ha="right" if long else "center")
        ax.xaxis.set_minor_formatter(NullFormatter())  # a log axis would also label 2×10¹, 3×10¹ … between ours
    ax.set_xlabel(params[0] if len(params) == 1 else ", ".join(param_names(params).values()))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    several = any(p[part]["n"] > 1 for p in points for part in PARTS)
    title = f"{metric} against {param_names(params)[params[0]]}" if len(params) == 1 else f"{metric} per point"
    ax.set_title(title + (" (mean ± std over seeds)" if several else ""))


def ticks_fit(values: list[float], log: bool) -> bool:
    """A tick per value only when they are few and far enough apart for their labels not to overlap."""
    import math

    if len(values) <= 1:
        return True
    xs = [math.log10(v) for v in values] if log and values[0] > 0 else values
    return len(xs) <= 12 and min(b - a for a, b in zip(xs, xs[1:])) >= (xs[-1] - xs[0]) / 25


def distinct_values(points: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """{point_key(value): value} for the values `key` takes, in sweep order: one heat-map row or column each."""
    return {point_key(p["params"].get(key)): p["params"].get(key) for p in points}


def draw_heat_map(fig, ax, points: list[dict[str, Any]], params: list[str], metric: str) -> None:
    """The test (else validation, else train) mean for each pair of values, every cell annotated; missing cells blank."""
    import numpy as np

    part = next(part for part in BEST_PARTS if any(p[part]["mean"] is not None for p in points))
    rows, cols = distinct_values(points, params[0]), distinct_values(points, params[1])
    row_of, col_of = {key: i for i, key in enumerate(rows)}, {key: j for j, key in enumerate(cols)}
    grid = np.full((len(rows), len(cols)), np.nan)
    for p in points:
        if p[part]["mean"] is not None:
            grid[row_of[point_key(p["params"].get(params[0]))], col_of[point_key(p["params"].get(params[1]))]] = p[part]["mean"]
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=f"{part} {metric}")
    ax.set_yticks(range(len(rows)), [format_value(v) for v in rows.values()])
    ax.set_xticks(range(len(cols)), [format_value(v) for v in cols.values()])
    ax.set(ylabel=params[0], xlabel=params[1], title=f"{part} {metric} (mean over seeds)" if any(p[part]["n"] > 1 for p in points) else f"{part} {metric}")
    if grid.size <= MAX_ANNOTATED_CELLS:
        low, high = np.nanmin(grid), np.nanmax(grid)
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                bright = high > low and (value - low) / (high - low) > 0.6  # viridis turns yellow at the top: dark text there
                ax.text(j, i, f"{value:.4g}", ha="center", va="center", fontsize=8, color="black" if bright else "white")
