"""The `kexp` Typer app: every command, in the order `kexp --help` lists them, and the entry point."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Annotated

import typer
from rich.markup import escape as literal

import kexp
from kexp.cli.common import console
from kexp.cli.data import data_fetch, data_list, doctor
from kexp.cli.reuse import evaluate, export, predict
from kexp.cli.runs import compare_command, runs_command
from kexp.cli.specs import datasets, init, models, validate
from kexp.cli.sweep import sweep
from kexp.cli.train import resume, train

app = typer.Typer(
    help="Keras experiments from YAML specs: validate, train, and keep every run in its own directory.",
    no_args_is_help=True,
    add_completion=True,  # kexp --install-completion; dataset, model and run names complete too
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Get data sets into the data directory.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def show_version(value: bool) -> None:
    if value:
        console.print(f"kexp {kexp.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True, help="Show the version and exit")] = False,
) -> None:
    """Keras experiments from YAML specs."""


app.command()(train)
app.command()(resume)
app.command()(sweep)
app.command()(validate)
app.command()(evaluate)
app.command("runs")(runs_command)
app.command("compare")(compare_command)
app.command()(datasets)
app.command()(models)
app.command()(predict)
app.command()(doctor)
app.command()(init)
app.command("export")(export)
data_app.command("fetch")(data_fetch)
data_app.command("list")(data_list)


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
    from kexp.cli.common import err_console
    from kexp.cli.display import progress_bars
    from kexp.events import reporting

    try:
        with progress_bars(err_console, off_terminal=True) as show, reporting(show):  # a dataset reader's tokenizing bar
            app(prog_name="kexp")  # standalone mode: always ends in SystemExit
    except SystemExit as exc:
        if "tensorflow" in sys.modules and os.environ.get("KEXP_FAST_EXIT", "1") != "0" and isinstance(exc.code, (int, type(None))):
            exit_now(exc.code or 0)
        raise


def in_broken_group() -> bool:
    """Whether this process joined a multi-process run (kexp.train.distributed): ending badly, it skips the exit
    handlers, where JAX's runtime would wait for the others and then abort with a C++ stack trace."""
    distributed = sys.modules.get("kexp.train.distributed")
    return distributed is not None and distributed.joined()


def exit_now(code: int) -> None:
    """End the process without Python's interpreter teardown, which takes about a second once
    TensorFlow is imported (measured: 1.0-1.2 s on 2 cores, after every file was written).

    Everything a normal exit does for kexp's outputs still happens first: atexit handlers
    (logging, MLflow, Ray) run and stdout/stderr are flushed; every run file is already fsynced.
    KEXP_FAST_EXIT=0 keeps the normal exit (profilers and coverage write their data after it).
    """
    import atexit

    if not (code and in_broken_group()):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
