"""The `kexp` command: parse options, call one library function, print the result.

Every KexpError becomes one line per problem on stderr and its exit code (2 for an
invalid spec, 1 otherwise, 128+N for signal N); anything else is a bug and keeps its
traceback. TensorFlow is imported only by commands that train.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

import kexp
from kexp.errors import KexpError, SpecError

app = typer.Typer(
    help="Keras experiments from YAML specs: validate, train, and keep every run in its own directory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Get data sets into the data directory.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

SetOption = Annotated[list[str], typer.Option("--set", help="Override a spec value: --set train.epochs=2 (value parsed as YAML). Repeatable.")]
DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Where data files live [default: $KEXP_DATA_DIR, else ./data]")]
RunsDirOption = Annotated[Path, typer.Option("--runs-dir", help="Where run directories are created")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """The one place that turns known errors into a message and an exit code."""
    try:
        yield
    except KexpError as exc:
        for line in error_lines(exc):
            err_console.print(f"kexp: error: {line}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("kexp: interrupted", highlight=False)
        raise typer.Exit(130) from None


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
    config: Annotated[Path, typer.Argument(help="Experiment spec (YAML), e.g. configs/pima.yaml or runs/<id>/config.yaml")],
    set_: SetOption = [],
    data_dir: DataDirOption = None,
    runs_dir: RunsDirOption = Path("runs"),
) -> None:
    """Train the experiment in CONFIG and write a new run directory."""
    from kexp.datasets.base import resolve_data_dir
    from kexp.spec import load_spec

    with exit_on_error():
        spec = load_spec(config, set_)
        from kexp.experiment import run_experiment

        result = run_experiment(spec, resolve_data_dir(data_dir), runs_dir, console)
    print_metrics(result.metrics)
    console.print(f"run directory: {result.run_dir}", highlight=False)


def print_metrics(metrics: dict) -> None:
    table = Table(title="final metrics (also in metrics.json)")
    splits = [s for s in ("train", "validation", "test") if metrics.get(s)]
    names = list(dict.fromkeys(k for s in splits for k in metrics[s]))
    table.add_column("metric")
    for split in splits:
        table.add_column(split, justify="right")
    for name in names:
        table.add_row(name, *(f"{metrics[s].get(name, float('nan')):.4f}" for s in splits))
    console.print(table)
    console.print(f"epochs {metrics['epochs_completed']}  fit {metrics['fit_seconds']:.1f}s  total {metrics['wall_seconds']:.1f}s", highlight=False)


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="Experiment spec (YAML)")],
    set_: SetOption = [],
    show: Annotated[bool, typer.Option("--show", help="Print the resolved spec with every default filled in")] = False,
    runs_dir: RunsDirOption = Path("runs"),
) -> None:
    """Check a spec (and overrides) as `kexp train` would before reading data; exit 2 if it is invalid."""
    from kexp.rundir import check_runs_dir
    from kexp.spec import load_spec

    with exit_on_error():
        spec = load_spec(config, set_)
        check_runs_dir(runs_dir)
    if show:
        console.print(spec.to_yaml(), highlight=False, markup=False)
    console.print(f"{config}: valid ({spec.data.name} data, {spec.model.name} model, {spec.train.epochs} epochs)", highlight=False)


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
def datasets(as_json: JsonOption = False) -> None:
    """List the registered datasets with their options and defaults."""
    print_entries("datasets", as_json)


@app.command()
def models(as_json: JsonOption = False) -> None:
    """List the registered models with their options and defaults."""
    print_entries("models", as_json)


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


def main() -> None:
    # TensorFlow's C++ start-up chatter (oneDNN notes, missing CUDA on CPU machines)
    # buries kexp's own output; a user can still ask for it with TF_CPP_MIN_LOG_LEVEL=0.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app(prog_name="kexp")


if __name__ == "__main__":
    sys.exit(main())
