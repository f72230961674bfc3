"""A sweep's summary: the chosen metric of every trial and of every point (mean ± std over
seeds), as summary.json, summary.csv and summary.png in the sweep directory.

The figure is the tutorial's: train and test accuracy against the number of hidden units
(one swept parameter), or a heat map of the test metric (two parameters). Means, standard
deviations and 95% CIs come from kexp.aggregate, as for folds, repeats and `kexp compare`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from kexp.aggregate import summarize_values
from kexp.compare import format_value, read_small_json, task_metrics
from kexp.rundir import write_json, write_text_atomic

PARTS = ("train", "validation", "test")
LOWER_IS_BETTER = ("loss", "mae", "rmse", "mse")
STATES = ("completed", "running", "interrupted", "failed", "diverged", "pending")


def trial_rows(sweep_dir: Path, trials: list[dict[str, Any]], metric: str | None) -> tuple[str, list[dict[str, Any]]]:
    """(the metric, one row per trial with its train/validation/test value); the metric defaults to the task's main one."""
    rows = []
    for trial in trials:
        metrics, _ = read_small_json(Path(sweep_dir) / trial["run_dir"] / "metrics.json")
        metrics = metrics if isinstance(metrics, dict) and trial.get("state") == "completed" else {}
        if metric is None and metrics:
            metric = next((m for m in task_metrics(metrics) if any((metrics.get(p) or {}).get(m) is not None for p in PARTS)), None)
        rows.append({"trial": trial, "metrics": metrics})
    metric = metric or "accuracy"
    table = []
    for row in rows:
        trial, metrics = row["trial"], row["metrics"]
        table.append({"id": trial["id"], "params": trial["params"], "seed": trial.get("seed"), "state": trial.get("state"),
                      "run_dir": trial["run_dir"], **{part: (metrics.get(part) or {}).get(metric) for part in PARTS},
                      "epochs_completed": metrics.get("epochs_completed"), "fit_seconds": metrics.get("fit_seconds")})
    return metric, table


def point_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per distinct parameter combination (first-seen order): n completed trials, mean/std/CI per part."""
    points: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = json.dumps(row["params"], sort_keys=True)
        points.setdefault(key, {"params": row["params"], "rows": []})["rows"].append(row)
    out = []
    for point in points.values():
        done = [r for r in point["rows"] if r["state"] == "completed"]
        out.append({"params": point["params"], "n": len(done), "trials": [r["id"] for r in point["rows"]],
                    **{part: summarize_values(r[part] for r in done) for part in PARTS}})
    return out


def best_point(points: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The point with the best mean on test (else validation, else train)."""
    lower = metric in LOWER_IS_BETTER
    for part in ("test", "validation", "train"):
        scored = [p for p in points if p[part]["mean"] is not None]
        if scored:
            best = (min if lower else max)(scored, key=lambda p: p[part]["mean"])
            return {"params": best["params"], "part": part, "mean": best[part]["mean"], "std": best[part]["std"], "n": best[part]["n"]}
    return None


def write_summary(sweep_dir: Path, trials: list[dict[str, Any]], metric: str | None = None) -> dict[str, Any]:
    """summary.json, summary.csv and summary.png in sweep_dir; returns the summary."""
    sweep_dir = Path(sweep_dir)
    metric, rows = trial_rows(sweep_dir, trials, metric)
    points = point_rows(rows)
    params = list(dict.fromkeys(k for t in trials for k in t["params"]))
    counts = {state: n for state in STATES if (n := sum(t.get("state") == state for t in trials))}
    summary = {"metric": metric, "params": params, "complete": all(t.get("state") == "completed" for t in trials), "counts": counts,
               "best": best_point(points, metric), "points": points, "trials": rows}
    write_json(sweep_dir / "summary.json", summary)
    write_text_atomic(sweep_dir / "summary.csv", summary_csv(rows, params, metric))
    plot_summary(sweep_dir / "summary.png", points, params, metric)
    return summary


def summary_csv(rows: list[dict[str, Any]], params: list[str], metric: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", *params, "seed", "state", *(f"{part}_{metric}" for part in PARTS), "epochs", "fit_seconds"])
    for r in rows:
        writer.writerow([r["id"], *(format_value(r["params"].get(k)) for k in params), r["seed"], r["state"],
                         *("" if r[part] is None else f"{r[part]:.6g}" for part in PARTS),
                         "" if r["epochs_completed"] is None else r["epochs_completed"], "" if r["fit_seconds"] is None else f"{r['fit_seconds']:.1f}"])
    return out.getvalue()


def as_number(value: Any) -> float | None:
    """A plottable x: a number, or a list holding one number ([100] hidden units)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def plot_summary(path: Path, points: list[dict[str, Any]], params: list[str], metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if len(params) == 2:
        heat_map(fig, ax, points, params, metric)
    else:
        curves(ax, points, params, metric)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def curves(ax, points: list[dict[str, Any]], params: list[str], metric: str) -> None:
    """The metric per part against the swept parameter; mean line and ±std band over seeds."""
    labels = [", ".join(format_value(p["params"].get(k)) for k in params) for p in points]
    xs = [as_number(p["params"].get(params[0])) if len(params) == 1 else None for p in points]
    numeric = all(x is not None for x in xs) and len(params) == 1
    order = sorted(range(len(points)), key=lambda i: xs[i]) if numeric else list(range(len(points)))
    x = [xs[i] if numeric else n for n, i in enumerate(order)]
    for part, style in (("train", "o-"), ("validation", "s--"), ("test", "^-")):
        mean = [points[i][part]["mean"] for i in order]
        if all(m is None for m in mean):
            continue
        std = [points[i][part]["std"] or 0.0 for i in order]
        shown = [(xi, m, s) for xi, m, s in zip(x, mean, std) if m is not None]
        ax.plot([a for a, _, _ in shown], [m for _, m, _ in shown], style, label=part)
        if any(points[i][part]["n"] > 1 for i in order):
            ax.fill_between([a for a, _, _ in shown], [m - s for _, m, s in shown], [m + s for _, m, s in shown], alpha=0.2)
    if numeric:
        positive = [v for v in x if v > 0]
        if len(positive) == len(x) and max(x) / min(x) >= 20:
            ax.set_xscale("log")
        ax.set_xticks(x, [format_value(points[i]["params"][params[0]]) for i in order])
    else:
        ax.set_xticks(x, [labels[i] for i in order], rotation=30, ha="right")
    ax.set_xlabel(" / ".join(params))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{metric} per point" + (" (mean ± std over seeds)" if any(p["test"]["n"] > 1 for p in points) else ""))


def heat_map(fig, ax, points: list[dict[str, Any]], params: list[str], metric: str) -> None:
    """Test (else validation, else train) mean for each pair of values, annotated."""
    import numpy as np

    part = next((p for p in ("test", "validation", "train") if any(pt[p]["mean"] is not None for pt in points)), "test")
    rows = list(dict.fromkeys(json.dumps(p["params"].get(params[0])) for p in points))
    cols = list(dict.fromkeys(json.dumps(p["params"].get(params[1])) for p in points))
    grid = np.full((len(rows), len(cols)), np.nan)
    for p in points:
        value = p[part]["mean"]
        if value is not None:
            grid[rows.index(json.dumps(p["params"].get(params[0]))), cols.index(json.dumps(p["params"].get(params[1])))] = value
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=f"{part} {metric}")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_ylabel(params[0])
    ax.set_xlabel(params[1])
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.4f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_title(f"{part} {metric}")
