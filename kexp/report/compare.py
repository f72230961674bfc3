"""`kexp compare`: runs set side by side from their small files (spec keys that differ, metrics,
groups that differ only in seed) and their learning curves in one PNG."""

from __future__ import annotations

import glob
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from kexp.errors import RunDirError
from kexp.report.aggregate import SEED_KEYS, flatten_spec, group_runs_by_spec, spec_as_now, summarize_values
from kexp.report.runs import SPLITS, format_number, looks_like_run, render_csv, render_markdown, run_protocol, task_metrics
from kexp.run.files import CONFIG, SWEEPS, RunFiles
from kexp.run.io import write_json
from kexp.run.lifecycle import effective_state
from kexp.run.records import Status, read_config, read_small_json

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
    flats = [flatten_spec(spec_as_now(s)) for s in specs]
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
    flats = [flatten_spec(spec_as_now(r["spec"])) for r in runs]
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
