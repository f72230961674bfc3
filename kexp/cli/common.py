"""What every command shares: the two consoles, the option types, and the one error funnel.

Every KexpError becomes one line per problem on stderr and its exit code (2 for an invalid
spec, 1 otherwise, 128+N for signal N); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from kexp.cli.display import PipeSafeConsole
from kexp.errors import KexpError, SpecError

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
AllowChangedCodeOption = Annotated[bool, typer.Option("--allow-changed-code", help="Use the plugins' code as it is now even if it changed since the run (recorded as a warning)")]
FormatOption = Annotated[str, typer.Option("--format", help="table, csv, json or markdown")]


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


def usage_error(message: str) -> None:
    err_console.print(f"kexp: error: {message}", highlight=False, markup=False)
    raise typer.Exit(2)


def print_warning(message: str) -> None:
    err_console.print(f"kexp: warning: {printable(message)}", highlight=False, markup=False)


def print_note(message: str) -> None:
    err_console.print(f"kexp: note: {printable(message)}", highlight=False, markup=False)


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


def check_choice(value: str, choices: tuple[str, ...] | list[str], option: str) -> None:
    """Typer's own message for a value outside `choices` (exit 2)."""
    if value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=f"'{option}'")


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
    # retracing notes) reach log.txt in a run (kexp.run.lifecycle), not the screen.
    logging.getLogger().addHandler(logging.NullHandler())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
    # MLflow logs INFO lines of its own (creating a SQLite store's tables) to stderr; it sets its
    # logger's level from this when imported
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
