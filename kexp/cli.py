"""The `kexp` command: parse options, call one library function, print the result.

Every KexpError becomes one line per problem on stderr and its exit code (2 for an
invalid spec, 1 otherwise, 128+N for signal N); anything else is a bug and keeps its
traceback. TensorFlow is imported only by commands that train.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape as literal  # help text shown as written, `[ray]` included (rich markup otherwise)
from rich.table import Table

import kexp
from kexp.display import PipeSafeConsole
from kexp.errors import KexpError, SpecError

app = typer.Typer(
    help="Keras experiments from YAML specs: validate, train, and keep every run in its own directory.",
    no_args_is_help=True,
    add_completion=True,  # kexp --install-completion; dataset, model and run names complete too
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Get data sets into the data directory.", no_args_is_help=True)
app.add_typer(data_app, name="data")

# emoji=False: rich would turn ":x:" in a path or value into an emoji
console = PipeSafeConsole(soft_wrap=True, emoji=False)
err_console = PipeSafeConsole(stderr=True, soft_wrap=True, emoji=False)

SetOption = Annotated[list[str], typer.Option("--set", help="Override a spec value: --set train.epochs=2 (value parsed as YAML). Repeatable.")]
DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Where data files live (default: $KEXP_DATA_DIR, else ./data)")]
RunsDirOption = Annotated[Path, typer.Option("--runs-dir", help="Where run directories are created")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
LogFormatOption = Annotated[str, typer.Option("--log-format", help="auto (a live display on a terminal, else plain), rich, plain (a line per epoch) or jsonl (one JSON event per line on stdout; also in <run>/events.jsonl)")]
LogEveryOption = Annotated[int | None, typer.Option("--log-every", min=1, show_default=False,
                                                    help="Print every Nth epoch's line (and the first and last); default: every epoch on a terminal, about 20 per training in plain logs")]
VerboseOption = Annotated[bool, typer.Option("--verbose", help="Also show Python warnings and TensorFlow's start-up messages")]


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """The one place that turns known errors into a message and an exit code."""
    try:
        yield
    except KexpError as exc:
        for line in error_lines(exc):
            err_console.print(f"kexp: error: {printable(line)}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("kexp: interrupted", highlight=False)
        raise typer.Exit(130) from None
    except OSError as exc:  # a full, read-only or quota-bound disk the library did not name itself
        from kexp.errors import describe_os_error

        err_console.print(f"kexp: error: {printable(describe_os_error(exc))}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


def print_warning(message: str) -> None:
    err_console.print(f"kexp: warning: {printable(message)}", highlight=False, markup=False)


# C0 and C1 control characters (ESC, BEL, CR, DEL, CSI ...): from an input file they would clear,
# retitle or rewrite the user's terminal; on the screen they are shown escaped, in files kept as they are.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with every control character shown as an escape (ESC as \\x1b, a newline as \\n)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1] if m.group() in "\n\t\r" else f"\\x{ord(m.group()):02x}", text)


def error_lines(exc: KexpError) -> list[str]:
    """One line per problem: a spec lists several, any other error is one (embedded newlines folded)."""
    problems = exc.problems if isinstance(exc, SpecError) else [str(exc)]
    return [" ".join(str(p).split()) for p in problems if str(p).strip()] or [type(exc).__name__]


def show_version(value: bool) -> None:
    if value:
        console.print(f"kexp {kexp.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True, help="Show the version and exit")] = False,
) -> None:
    """Keras experiments from YAML specs."""


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="Experiment spec (YAML), e.g. configs/pima.yaml or runs/<id>/config.yaml")] = None,
    set_: SetOption = [],
    data_dir: DataDirOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    repeat: Annotated[int | None, typer.Option("--repeat", min=1, max=100, help="Train N times with seeds seed, seed+1, ... and report mean, std and 95% CI (sets `seeds`)")] = None,
    resume_dir: Annotated[Path | None, typer.Option("--resume", help="Continue this stopped run in its own directory instead (same as `kexp resume RUN_DIR`)", autocompletion=complete_runs)] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Write the run to exactly this new (or empty) directory instead of <runs-dir>/<time>-<name>-<xxxx>/")] = None,
    log_format: LogFormatOption = "auto",
    log_every: LogEveryOption = None,
    verbose: VerboseOption = False,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Write TensorBoard logs into <run>/tensorboard/ (sets train.tensorboard)")] = False,
    mlflow: Annotated[bool, typer.Option("--mlflow", help="Also log the run to MLflow: $MLFLOW_TRACKING_URI, else a SQLite store beside the runs (<runs-dir>/mlflow.db) (sets tracking.mlflow)")] = False,
    mlflow_uri: Annotated[str | None, typer.Option("--mlflow-uri", help="Log to the MLflow tracking server or store at this URI (implies --mlflow)")] = None,
) -> None:
    """Train the experiment in CONFIG and write a new run directory.

    Exit codes: 0 completed, 1 failed, 2 invalid spec or usage, 3 diverged (NaN loss),
    130 / 138 / 143 stopped by SIGINT / SIGUSR1 / SIGTERM after saving a checkpoint.
    """
    from kexp.datasets.base import resolve_data_dir
    from kexp.spec import load_spec

    if resume_dir is not None:
        if config is not None or set_ or repeat is not None or run_dir is not None:
            usage_error("--resume continues a run as it was: give no CONFIG, --set, --repeat or --run-dir with it")
        return resume(resume_dir, data_dir, log_format, log_every, verbose)
    if config is None:
        usage_error("missing CONFIG: kexp train configs/<name>.yaml (or --resume RUN_DIR)")
    check_log_format(log_format)
    quiet_unless(verbose)
    with exit_on_error():
        from kexp.spec import read_yaml

        source = read_yaml(config)  # once: a spec from a pipe cannot be read twice
        spec = load_spec(config, set_, source=source)
        extra = tracking_overrides(spec, tensorboard, mlflow, mlflow_uri)
        if repeat is not None:
            extra.append(f"seeds=[{', '.join(str(spec.seed + i) for i in range(repeat))}]")
        if extra:  # as overrides, so config.yaml records them and a resume repeats them
            spec = load_spec(config, [*set_, *extra], source=source)
        from kexp.display import display
        from kexp.experiment import run_experiment

        with display(log_format, console, log_every) as (chosen, emit):
            result = run_experiment(spec, resolve_data_dir(data_dir), runs_dir, emit, run_dir=run_dir)
    if chosen != "jsonl":  # there the run_finished event carries the metrics
        show_result(result, plain=chosen == "plain")


def tracking_overrides(spec, tensorboard: bool, mlflow: bool, mlflow_uri: str | None) -> list[str]:
    """--tensorboard / --mlflow / --mlflow-uri as spec overrides; options the spec already sets are kept."""
    extra = []
    if tensorboard and spec.train.tensorboard is None:
        extra.append("train.tensorboard=true")
    if mlflow_uri is not None:
        extra.append(f"tracking.mlflow.uri={json.dumps(mlflow_uri)}")
    elif mlflow and spec.tracking.mlflow is None:
        extra.append("tracking.mlflow={}")
    return extra


def check_log_format(log_format: str) -> None:
    from kexp.display import LOG_FORMATS

    if log_format not in LOG_FORMATS:
        usage_error(f"--log-format {log_format!r}: choose from {', '.join(LOG_FORMATS)}")


def quiet_unless(verbose: bool) -> None:
    """Python warnings and TensorFlow's C++ log lines say nothing a user can act on in a normal run."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    # With a handler on the root logger, TensorFlow adds no stderr handler of its own (tf.get_logger)
    # and Python's last-resort handler stays silent: libraries' logged warnings (TensorFlow's
    # retracing notes) reach log.txt in a run (kexp.lifecycle), not the screen.
    logging.getLogger().addHandler(logging.NullHandler())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
    # MLflow logs INFO lines of its own (creating a SQLite store's tables) to stderr; it sets its
    # logger's level from this when imported
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run directory that was interrupted, failed or crashed: runs/<id>", autocompletion=complete_runs)],
    data_dir: DataDirOption = None,
    log_format: LogFormatOption = "auto",
    log_every: LogEveryOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Continue a stopped run in the same directory from its last checkpoint (a completed run is left unchanged).

    Refused when config.yaml was edited or the data changed since the run started, when
    another process holds the run, or when it diverged. Exit codes as for `kexp train`.
    """
    from kexp.datasets.base import resolve_data_dir

    check_log_format(log_format)
    quiet_unless(verbose)
    with exit_on_error():
        from kexp.display import display
        from kexp.experiment import resume_experiment

        with display(log_format, console, log_every) as (chosen, emit):
            result = resume_experiment(run_dir, resolve_data_dir(data_dir), emit)
    if chosen != "jsonl":
        show_result(result, plain=chosen == "plain")


@app.command()
def sweep(
    config: Annotated[Path | None, typer.Argument(help="Experiment spec (YAML), with or without a `sweep:` section")] = None,
    param: Annotated[list[str], typer.Option("--param", help="KEY=V1,V2,... (values parsed as YAML), or KEY=LOW..HIGH / KEY=log:LOW..HIGH for --samples. Several form a grid.")] = [],
    set_: SetOption = [],
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, max=100, help="Train each point N times (seed, seed+1, ...): mean ± std in the summary")] = None,
    samples: Annotated[int | None, typer.Option("--samples", min=1, help="Random search: N points drawn from the values and ranges")] = None,
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Trials at once (local: CPU threads are divided among them; with GPUs: one per GPU)")] = 1,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, help="Failures of a trial before it is left failed (an interrupted trial is always continued)")] = 2,
    trials_per_gpu: Annotated[int, typer.Option("--trials-per-gpu", min=1, help="Pack K small trials on each GPU")] = 1,
    backend: Annotated[str, typer.Option("--backend", help=literal("local (child processes) or ray (Ray tasks; pip install 'kexp[ray]')"))] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster: auto or HOST:PORT (default: start a local Ray)")] = None,
    cpus_per_trial: Annotated[float, typer.Option("--cpus-per-trial", min=0.1, help="Ray: CPUs each trial asks for (and its TensorFlow threads)")] = 1.0,
    metric: Annotated[str | None, typer.Option("--metric", help="Metric the summary compares (default: the task's main one)")] = None,
    data_dir: DataDirOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    resume_dir: Annotated[Path | None, typer.Option("--resume", help="Continue this sweep directory")] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new sweep even if one with the same spec and space exists")] = False,
) -> None:
    """Train one run per point of a parameter space; re-running the same command continues the sweep.

    Writes <runs-dir>/sweeps/<time>-<name>-<xxxx>/ with a run directory per trial,
    manifest.json and summary.json/.csv/.png. Exit 0 when every trial completed, 1 if
    any failed, 130/143 when stopped (running trials are checkpointed: resume later).
    """
    from kexp.datasets.base import resolve_data_dir

    if backend not in ("local", "ray"):
        usage_error(f"--backend {backend}: expected local or ray")
    if (config is None) == (resume_dir is None):
        usage_error("give a CONFIG to start (or continue) a sweep, or --resume SWEEP_DIR, not both")
    with exit_on_error():
        from kexp.sweep import plan_sweep, run_sweep

        plan = None if config is None else plan_sweep(config, set_, param, seeds, samples, metric)
        display = SweepDisplay()
        result = run_sweep(plan, runs_dir, resolve_data_dir(data_dir), parallel, max_attempts, trials_per_gpu, backend, address,
                           resume_dir, new, cpus_per_trial, on_change=display.trial_changed, on_start=display.start)
        display.stop()
    print_sweep_summary(result)
    raise typer.Exit(result.exit_code)


class SweepDisplay:
    """A progress bar over trials with ETA on a terminal; one line per finished trial either way."""

    def __init__(self) -> None:
        self.progress = None

    def start(self, sweep_dir: Path, manifest: dict) -> None:
        trials = manifest["trials"]
        done = sum(t["state"] in ("completed", "diverged") for t in trials)
        console.print(f"sweep: {sweep_dir}  {len(trials)} trials, {done} already done", highlight=False)
        self.sweep_dir = sweep_dir
        self.total = len(trials)
        self.done = done
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                                     TimeRemainingColumn(), console=console)
            self.progress.start()
            self.task = self.progress.add_task("", total=self.total, completed=done)

    def trial_changed(self, trial: dict) -> None:
        if trial["state"] == "running":
            return
        self.done += trial["state"] in ("completed", "diverged")
        from kexp.run.records import read_small_json

        metrics, _ = read_small_json(self.sweep_dir / trial["run_dir"] / "metrics.json")
        shown = ""
        if isinstance(metrics, dict):
            parts = [f"{part} {name} {value:.4f}" for part in ("train", "test") for name, value in (metrics.get(part) or {}).items()
                     if name in ("accuracy", "mae") and isinstance(value, (int, float))]
            shown = "  ".join(parts)
        from kexp.sweep import describe_point

        line = f"{trial['id']}  {describe_point(trial['params'])}  seed {trial['seed']}  {trial['state']}  {shown}"
        if trial["state"] not in ("completed",) and trial.get("error"):
            line += f"  ({trial['error']})"
        (self.progress.console if self.progress else console).print(f"{line}  [{self.done}/{self.total}]", highlight=False, markup=False)
        if self.progress:
            self.progress.update(self.task, completed=self.done)

    def stop(self) -> None:
        if self.progress:
            self.progress.stop()


def print_sweep_summary(result) -> None:
    summary = result.summary
    table = Table(title=f"sweep summary: {summary.get('metric')} per point (also in summary.json, summary.csv, summary.png)")
    for column in (*summary.get("params", []), "n", "train", "validation", "test"):
        table.add_column(column, justify="right")
    for point in summary.get("points", []):
        cells = [json.dumps(point["params"][k]) for k in summary.get("params", [])]
        values = []
        for part in ("train", "validation", "test"):
            stats = point.get(part) or {}
            mean, std, n = stats.get("mean"), stats.get("std"), stats.get("n", 0)
            values.append("-" if mean is None else f"{mean:.4f}" + (f" ± {std:.4f}" if n and n > 1 else ""))
        table.add_row(*cells, str(point.get("n", 0)), *values)
    console.print(table)
    counts = summary.get("counts", {})
    console.print("trials: " + ", ".join(f"{n} {state}" for state, n in counts.items()), highlight=False)
    if result.stopped_by:
        console.print(f"stopped by {result.stopped_by}; continue with: kexp sweep --resume {result.sweep_dir}", highlight=False)
    console.print(f"sweep directory: {result.sweep_dir}", highlight=False)


def usage_error(message: str) -> None:
    err_console.print(f"kexp: error: {message}", highlight=False, markup=False)
    raise typer.Exit(2)


def show_result(result, plain: bool = False) -> None:
    if result.note:
        console.print(result.note, highlight=False)
    print_metrics(result.metrics, plain)
    console.print(f"run directory: {result.run_dir}", highlight=False)


def print_metrics(metrics: dict, plain: bool = False) -> None:
    """A table of the final metrics; plain (a log file): one line per part, nothing box-drawn."""
    aggregate = metrics.get("aggregate")
    title = "final metrics (also in metrics.json)"
    if aggregate:
        title = f"{metrics['protocol']}: mean ± std [95% CI] over {len(metrics['members'])} members (also in metrics.json)"
    elif metrics.get("protocol") == "train":
        title += ": scored on the training rows, not an estimate for new data"
    splits = [s for s in ("train", "validation", "test") if metrics.get(s)]
    if plain:
        console.print(title, highlight=False, markup=False)
        for split in splits:
            console.print(f"final {split}: " + "  ".join(f"{name} {describe_value(metrics, aggregate, split, name)}" for name in metrics[split]),
                          highlight=False, markup=False)
    else:
        table = Table(title=title)
        table.add_column("metric")
        for split in splits:
            table.add_column(split, justify="right")
        for name in dict.fromkeys(k for s in splits for k in metrics[s]):
            table.add_row(name, *(describe_value(metrics, aggregate, s, name) for s in splits))
        console.print(table)
    report = metrics.get("report")
    if report and "balanced_accuracy" in report:
        console.print(f"balanced accuracy {report['balanced_accuracy']:.4f}" + (f" ({report['part']} part)" if "part" in report else ""), highlight=False)
    attempts = metrics.get("attempts", 1)
    this_attempt = f" (attempt {attempts} of the run; fit time counts all {attempts})" if attempts > 1 else ""
    console.print(f"epochs {metrics['epochs_completed']}  fit {metrics['fit_seconds']:.1f}s  total {metrics['wall_seconds']:.1f}s{this_attempt}", highlight=False)


def describe_value(metrics: dict, aggregate: dict | None, split: str, name: str) -> str:
    value = metrics[split].get(name)
    summary = (aggregate or {}).get(split, {}).get(name)
    if value is None:
        return "-"
    if not summary or summary["n"] < 2:
        return f"{value:.4f}"
    low, high = summary["ci95"]
    clipped = " (interval clipped to the metric's range)" if summary.get("ci95_clipped") else ""
    return f"{value:.4f} ± {summary['std']:.4f} [{low:.4f}, {high:.4f}]{clipped}"


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="Experiment spec (YAML)")],
    set_: SetOption = [],
    show: Annotated[bool, typer.Option("--show", help="Print the resolved spec with every default filled in")] = False,
    runs_dir: RunsDirOption = Path("runs"),
) -> None:
    """Check a spec (and overrides) as `kexp train` would before reading data; exit 2 if it is invalid."""
    from kexp.run.dirs import check_runs_dir
    from kexp.spec import load_spec

    with exit_on_error():
        from kexp.spec import read_yaml

        source = read_yaml(config)  # once: a spec from a pipe cannot be read twice
        if "sweep" in source[0]:  # every trial's spec, as `kexp sweep` checks them
            from kexp.sweep import plan_sweep

            plan = plan_sweep(config, set_, [], source=source)
            check_runs_dir(runs_dir)
            console.print(f"{config}: valid sweep of {len(plan.trials)} trials over {', '.join(plan.space.params)}", highlight=False)
            return
        spec = load_spec(config, set_, source=source)
        check_runs_dir(runs_dir)
    if show:
        console.print(spec.to_yaml(), highlight=False, markup=False)
    console.print(f"{config}: valid ({spec.data.name} data, {spec.model.name} model, {spec.train.epochs} epoch{'s' * (spec.train.epochs != 1)})", highlight=False)


def describe_options(options: type, defaults: object = None, prefix: str = "") -> list[dict]:
    """Every option as {name, required, default, description}; nested option groups as dotted names (text.num_words)."""
    from pydantic import BaseModel

    rows = []
    for field_name, info in options.model_fields.items():
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if defaults is not None:
            default = getattr(defaults, field_name)
        if isinstance(default, BaseModel) and not isinstance(default, list):
            rows += describe_options(type(default), default, f"{prefix}{field_name}.")
            continue
        if isinstance(default, list):
            default = [d.model_dump() if isinstance(d, BaseModel) else d for d in default]
        rows.append({"name": prefix + field_name, "required": info.is_required(), "default": default, "description": info.description or ""})
    return rows


def describe_entries(kind: str) -> list[dict]:
    from kexp.registry import DATASETS, MODELS, load_components

    load_components()
    registry = DATASETS if kind == "datasets" else MODELS
    return [{"name": e.name, "summary": e.summary, "options": describe_options(e.options)} for e in registry.entries()]


def print_entries(kind: str, as_json: bool) -> None:
    rows = describe_entries(kind)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"registered {kind}", show_lines=True)
    for column in ("name", "what", "options (default)"):
        table.add_column(column)
    for row in rows:
        opts = "\n".join(
            (f"{o['name']} (required)" if o["required"] else f"{o['name']} = {json.dumps(o['default'])}")
            + (f"  ({o['description']})" if o["description"] else "")
            for o in row["options"]
        )
        table.add_row(row["name"], row["summary"], opts)
    console.print(table)


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/20261123-133045-imdb-h1vd", autocompletion=complete_runs)],
    split: Annotated[str | None, typer.Option("--split", help="test, validation, train, or all (every part the run has); default: test, else the part the run was scored on", show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where data files live (default: $KEXP_DATA_DIR, else the run's own data dir)")] = None,
    allow_changed_data: Annotated[bool, typer.Option("--allow-changed-data", help="Evaluate even if the data files differ from what the run read (recorded as a warning)")] = False,
    as_json: JsonOption = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the evaluation JSON to this file instead of <run>/evaluations/ (for a read-only run)")] = None,
) -> None:
    """Evaluate a run's saved model on its data again (no refitting); write <run>/evaluations/<UTC time>.json."""
    from kexp.evaluate import evaluate_run

    with exit_on_error():
        result = evaluate_run(run_dir, split, data_dir, allow_changed_data, output=output)
    for warning in result["warnings"]:
        print_warning(warning)
    if as_json:
        saved = {k: v for k, v in result.items() if k != "path"}
        if result["path"] is None:  # not saved (read-only run): the same strict JSON, on stdout only
            from kexp.run.io import strict_json

            print(strict_json(saved))
        else:
            print(Path(result["path"]).read_text(encoding="utf-8"), end="")
        return
    if result["split_note"] is not None:
        console.print(result["split_note"], highlight=False, markup=False)
    if result["positive_class"] is not None:
        console.print(f"positive class (precision, recall, auc): {result['positive_class']}", highlight=False, markup=False)
    for name in result["splits"]:
        print_evaluation(name, result["results"][name])
    if result["path"] is not None:
        console.print(f"evaluation: {result['path']}", highlight=False)


def print_evaluation(split: str, result: dict) -> None:
    """Keras' metrics beside metrics.json's, then the prediction-based figures and, for classes, one row each."""
    recorded = result.get("recorded_metrics") or {}
    table = Table(title=f"{split}: {result['rows']:,} rows")
    for column in ("metric", "value", "in metrics.json"):
        table.add_column(column, justify="left" if column == "metric" else "right")

    def number(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    for name, value in result["metrics"].items():
        table.add_row(name, number(value), number(recorded.get(name)))
    for name in ("balanced_accuracy", "mae", "rmse", "r2"):
        if name in result and name not in result["metrics"]:  # regression's mae/rmse/r2 are Keras metrics too
            table.add_row(name, number(result[name]), number(recorded.get(name)))
    console.print(table)
    if result.get("recorded_note"):
        console.print(f"note: {result['recorded_note']}", highlight=False, markup=False)
    if "per_class" not in result:
        return
    classes = Table(title=f"{split}: per class (rows: true class)")
    for column in ("class", "precision", "recall", "F1", "support"):
        classes.add_column(column, justify="left" if column == "class" else "right")
    for name, row in result["per_class"].items():
        classes.add_row(name, number(row["precision"]), number(row["recall"]), number(row["f1"]), f"{row['support']:,}")
    console.print(classes)


FormatOption = Annotated[str, typer.Option("--format", help="table, csv, json or markdown")]


def check_format(fmt: str) -> None:
    from kexp.compare import FORMATS

    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(FORMATS)}", param_hint="'--format'")


@app.command("runs")
def runs_command(
    runs_dir: Annotated[Path, typer.Argument(help="The runs directory `kexp train --runs-dir` wrote to")] = Path("runs"),
    status: Annotated[list[str], typer.Option("--status", help="Only runs in this state: running, completed, failed, interrupted, damaged. Repeatable.")] = [],
    name: Annotated[str | None, typer.Option("--name", help="Only runs whose spec name contains this, or matches it as a glob (pima*)")] = None,
    sort: Annotated[str | None, typer.Option("--sort", help="Sort by a column (id, name, dataset, model, status, epochs, measured, metric, duration, age, note); -column for descending (default: newest first)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Show at most N runs")] = None,
    fmt: FormatOption = "table",
) -> None:
    """List run directories: name, data, model, status, epochs, main metric (mean ± std for folds and seeds), duration, age."""
    from kexp.compare import RUN_COLUMNS, STATES, list_runs, render_runs, select_runs, sweep_trials_note

    check_format(fmt)
    for state in status:
        if state not in STATES:
            raise typer.BadParameter(f"{state!r} is not one of {', '.join(STATES)}", param_hint="'--status'")
    if sort and sort.removeprefix("-") not in RUN_COLUMNS:
        raise typer.BadParameter(f"{sort!r}: sort by one of {', '.join(RUN_COLUMNS)} (prefix - for descending)", param_hint="'--sort'")
    with exit_on_error():
        rows = select_runs(list_runs(runs_dir), status, name, sort, limit)
    note = sweep_trials_note(runs_dir)
    if not rows and fmt == "table":
        console.print(f"no runs in {runs_dir}{' match --status/--name' if status or name else ''}", highlight=False, markup=False)
    else:
        print(render_runs(rows, fmt), end="")
    if note:
        err_console.print(f"kexp: note: {printable(note)}", highlight=False, markup=False)


def print_wide(table: Table) -> None:
    """A wide table at its natural width when piped (rich would squeeze it to 80 columns and cut run ids)."""
    if console.is_terminal:
        console.print(table, highlight=False, markup=False)
        return
    width = max(console.width, console.measure(table, options=console.options.update_width(10_000)).maximum)
    Console(width=width, soft_wrap=True, emoji=False).print(table, highlight=False, markup=False)


@app.command("compare")
def compare_command(
    run_dirs: Annotated[list[str], typer.Argument(help="Run directories, or a quoted glob such as 'runs/*pima*'", show_default=False, autocompletion=complete_runs)],
    fmt: FormatOption = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the learning-curve PNG (default: runs/compare.png, beside the first run); compare.json goes beside it", show_default=False)] = None,
) -> None:
    """Set runs side by side: the spec keys that differ, final metrics, seed-only differences as mean ± std, and learning curves."""
    from kexp.compare import compare_runs, compare_table, expand_run_paths, group_table, render_compare, write_compare

    check_format(fmt)
    with exit_on_error():
        skipped: list[str] = []
        result = compare_runs(expand_run_paths(run_dirs, skipped))
        for note in skipped:
            err_console.print(f"kexp: note: {printable(note)}", highlight=False, markup=False)
        written = write_compare(result, output)
    done = f"learning curves: {written['png']}  every number: {written['json']}"
    if fmt != "table":
        print(render_compare(result, fmt), end="")
        err_console.print(done, highlight=False, markup=False)
        return
    for title, (header, rows) in (
        (f"{len(result['runs'])} run{'s' * (len(result['runs']) != 1)}: spec keys that differ, final metrics", compare_table(result)),
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
    console.print(done, highlight=False, markup=False)


@app.command()
def datasets(as_json: JsonOption = False) -> None:
    """List the registered datasets with their options and defaults."""
    print_entries("datasets", as_json)


@app.command()
def models(as_json: JsonOption = False) -> None:
    """List the registered models with their options and defaults."""
    print_entries("models", as_json)


SHOWN_PREDICTIONS = 50


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory, e.g. runs/<id>", autocompletion=complete_runs)],
    inputs: Annotated[
        list[str],
        typer.Argument(
            help=literal("Text runs: strings, or @file / file.txt with one example per line. Table runs: CSV files of the "
                         "feature columns (header optional). Image runs: PNG/JPEG, .npy or IDX (*-ubyte[.gz]) files."),
            show_default=False,
        ),
    ],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write every prediction to this .jsonl or .csv file")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Also give the K most probable labels with their probabilities")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per prediction instead of a table")] = False,
) -> None:
    """Predict new raw inputs with a run's own saved preprocessing (never refitted) and model."""
    from kexp.predict import check_output_path, predict_batches, predictions_file

    shown: list[dict] = []  # the first SHOWN_PREDICTIONS rows for the table; the rest stream to --output / --json
    count = 0
    with exit_on_error():
        if output is not None:
            check_output_path(output)
        with prediction_progress() as progress, predictions_file(output) if output is not None else contextlib.nullcontext() as write:
            for rows in predict_batches(run_dir, inputs, top_k, progress=progress, warn=print_warning):
                if write is not None:
                    write(rows)
                if as_json:
                    sys.stdout.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
                shown += rows[: max(0, SHOWN_PREDICTIONS - len(shown))]
                count += len(rows)
    if not as_json:
        print_predictions(shown, output, count)


@contextlib.contextmanager
def prediction_progress() -> Iterator:
    """A progress callback for predict_run: a transient bar on a terminal's stderr, else nothing."""
    if not err_console.is_terminal:
        yield None
        return
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("predicting", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)  # total None: still reading the inputs


def print_predictions(rows: list[dict], output: Path | None, count: int | None = None) -> None:
    """The first SHOWN_PREDICTIONS of `count` predictions as a table (control characters escaped)."""
    from rich.text import Text

    from kexp.predict import shown_input

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


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Data set to download, e.g. imdb")],
    data_dir: DataDirOption = None,
) -> None:
    """Download a data set from its canonical source into the data directory, checking SHA-256."""
    from kexp.datasets.base import resolve_data_dir
    from kexp.fetch import fetch

    with exit_on_error():
        for path in fetch(name, resolve_data_dir(data_dir), console):
            console.print(f"ok: {path}", highlight=False)


@data_app.command("list")
def data_list(data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Every data set `kexp data fetch` can get: its files in the data directory, present and SHA-256-checked, and their source."""
    from kexp.datasets.base import resolve_data_dir
    from kexp.fetch import SOURCES, check_files, dataset_state

    folder = resolve_data_dir(data_dir)
    found = {name: check_files(name, folder) for name in sorted(SOURCES)}
    if as_json:
        rows = [{"name": name, "state": dataset_state(files), "files": [file_json(f) for f in files]} for name, files in found.items()]
        print(json.dumps({"data_dir": os.path.abspath(folder), "datasets": rows}, indent=2))
        return
    table = Table(title=f"data sets in {os.path.abspath(folder)} (kexp data fetch NAME gets or repairs one)")
    for column in ("data set", "file", "state", "bytes", "source"):
        table.add_column(column, justify="right" if column == "bytes" else "left", overflow="fold")
    for name, files in found.items():
        for i, file in enumerate(files):
            label = f"{name}: {dataset_state(files)}" if i == 0 else ""
            table.add_row(label, str(file.path), describe_file_state(file), "" if file.bytes is None else f"{file.bytes:,}", file.url or "extracted from the archive")
        table.add_section()
    print_wide(table)


def file_json(file) -> dict:
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


@app.command()
def doctor(data_dir: DataDirOption = None, runs_dir: RunsDirOption = Path("runs"), as_json: JsonOption = False) -> None:
    """Check this machine for kexp: Python, TensorFlow, Keras, GPUs, CUDA, NLTK corpora, data files, runs directory.

    Exit 1 if any check fails (each failure is printed with its fix), 0 otherwise; warnings
    are things some experiments need (a data set not downloaded, a GPU TensorFlow cannot use).
    """
    from kexp.doctor import FAIL, WARN, failed, run_checks

    checks = run_checks(data_dir, runs_dir)
    if as_json:
        print(json.dumps({"ok": not failed(checks), "checks": [c.to_dict() for c in checks]}, indent=2))
        raise typer.Exit(1 if failed(checks) else 0)
    from rich.text import Text

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
    raise typer.Exit(1 if failed(checks) else 0)


def complete_datasets(incomplete: str) -> list[str]:
    """Shell completion: registered dataset names."""
    return [name for name in entry_names("datasets") if name.startswith(incomplete)]


def complete_models(incomplete: str) -> list[str]:
    """Shell completion: registered model names."""
    return [name for name in entry_names("models") if name.startswith(incomplete)]


def complete_examples(incomplete: str) -> list[str]:
    """Shell completion: the tutorial configs `kexp init --from` copies."""
    from kexp.starter import example_names

    return [name for name in example_names() if name.startswith(incomplete)]


def complete_runs(incomplete: str) -> list[str]:
    """Shell completion: run directories (folders holding status.json or config.yaml) under the typed folder, else runs/."""
    typed = Path(incomplete or "runs/")
    folder = typed if incomplete.endswith("/") or not incomplete else typed.parent
    if not folder.is_dir():
        folder = Path("runs")
    try:
        candidates = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []
    dot = "./" if incomplete.startswith("./") else ""  # Path drops it, and the shell only keeps words that start as typed
    matching = [p for p in candidates if f"{dot}{p}".startswith(incomplete)]
    runs = [f"{dot}{p}" for p in matching if (p / "status.json").is_file() or (p / "config.yaml").is_file()]
    return runs or [f"{dot}{p}/" for p in matching]  # no run here: offer the folders, to go down into runs/ or runs/sweeps/


def entry_names(kind: str) -> list[str]:
    from kexp.registry import DATASETS, MODELS, load_components

    load_components()
    return (DATASETS if kind == "datasets" else MODELS).names()


@app.command()
def init(
    path: Annotated[Path | None, typer.Argument(help="Where to write the spec (default: print it)")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Registered dataset, see kexp datasets (default: pima)", autocompletion=complete_datasets)] = None,
    model: Annotated[str | None, typer.Option("--model", help="Registered model, see kexp models (default: mlp)", autocompletion=complete_models)] = None,
    example: Annotated[str | None, typer.Option("--from", help="Copy a tutorial config instead, e.g. pima, mnist_cnn, sms_spam (configs/NAME.yaml)", autocompletion=complete_examples)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace PATH if it exists")] = False,
) -> None:
    """Write a starter spec: every option at its default, each commented; or a copy of a tutorial config (--from)."""
    from kexp.starter import DEFAULT_DATASET, DEFAULT_MODEL, read_example, render_starter, write_text

    if example is not None and (dataset is not None or model is not None):
        usage_error("--from copies a tutorial config as it is: give it without --dataset or --model")
    with exit_on_error():
        if example is not None:
            text = read_example(example, path)
        else:
            text = render_starter(dataset or DEFAULT_DATASET, model or DEFAULT_MODEL, path)
        if path is None:
            print(text, end="")
            return
        write_text(text, path, force)
    console.print(f"wrote {path}; check it with `kexp validate {path}`, train with `kexp train {path}`", highlight=False, markup=False)


@app.command("export")
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory, e.g. runs/<id>", autocompletion=complete_runs)],
    fmt: Annotated[str, typer.Option("--format", help="saved_model (TensorFlow Serving) or tflite")],
    output: Annotated[Path | None, typer.Option("--output", help="Where to write (default: RUN_DIR/export/saved_model or RUN_DIR/export/model.tflite)")] = None,
) -> None:
    """Export a run's model for serving, checked against model.keras on generated rows; never overwrites."""
    from kexp.export import FORMATS, export_run

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(FORMATS)}", param_hint="'--format'")
    with exit_on_error():
        info = export_run(run_dir, fmt, output)
    for warning in info["warnings"]:
        print_warning(warning)
    check = info["check"]
    console.print(f"exported {info['format']}: {info['path']}  ({info['seconds']:.1f}s)", highlight=False, markup=False)
    console.print(
        f"check: matches model.keras on {check['rows']} generated rows, max abs difference {check['max_abs_difference']:.2g} <= {check['tolerance']:g}",
        highlight=False,
    )
    console.print(f"details (inputs, class names, versions): {info['json']}", highlight=False, markup=False)
    kind = {"images": "image"}.get(info["preprocessing"]["kind"], info["preprocessing"]["kind"])
    console.print(f"note: the model takes {kind} inputs already preprocessed by the run; its preprocessing is in that JSON", highlight=False, markup=False)


def escape_docstring_markup(*apps: typer.Typer) -> None:
    """Typer renders help texts as rich markup, where `kexp[ray]` would lose `[ray]` as an unknown tag.
    Command docstrings are escaped here, once; option and argument help is written with `literal()`
    (their Annotated metadata is rebuilt from the annotation strings each time Typer reads them)."""
    for group in apps:
        for command in group.registered_commands:
            if command.callback.__doc__:
                command.callback.__doc__ = literal(command.callback.__doc__)


escape_docstring_markup(app, data_app)


def main() -> None:
    # TensorFlow's C++ start-up chatter (oneDNN notes, missing CUDA on CPU machines)
    # buries kexp's own output; a user can still ask for it with TF_CPP_MIN_LOG_LEVEL=0.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        app(prog_name="kexp")  # standalone mode: always ends in SystemExit
    except SystemExit as exc:
        if "tensorflow" in sys.modules and os.environ.get("KEXP_FAST_EXIT", "1") != "0" and isinstance(exc.code, (int, type(None))):
            exit_now(exc.code or 0)
        raise


def exit_now(code: int) -> None:
    """End the process without Python's interpreter teardown, which takes about a second once
    TensorFlow is imported (measured: 1.0-1.2 s on 2 cores, after every file was written).

    Everything a normal exit does for kexp's outputs still happens first: atexit handlers
    (logging, MLflow, Ray) run and stdout/stderr are flushed; every run file is already fsynced.
    KEXP_FAST_EXIT=0 keeps the normal exit (profilers and coverage write their data after it).
    """
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
