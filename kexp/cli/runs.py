"""`kexp runs` and `kexp compare`: what the run directories hold, listed and set side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kexp.cli.common import FormatOption, check_choice, console, err_console, exit_on_error, print_note
from kexp.cli.completion import complete_runs


def check_format(fmt: str) -> None:
    from kexp.report.runs import FORMATS

    check_choice(fmt, FORMATS, "--format")


def runs_command(
    runs_dir: Annotated[Path, typer.Argument(help="The runs directory `kexp train --runs-dir` wrote to")] = Path("runs"),
    status: Annotated[list[str], typer.Option("--status", help="Only runs in this state: running, completed, failed, interrupted, pruned, crashed, damaged. Repeatable.")] = [],
    name: Annotated[str | None, typer.Option("--name", help="Only runs whose spec name contains this, or matches it as a glob (pima*)")] = None,
    sort: Annotated[str | None, typer.Option("--sort", help="Sort by a column (id, name, dataset, model, status, epochs, measured, metric, duration, age, note); -column for descending (default: newest first)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Show at most N runs")] = None,
    fmt: FormatOption = "table",
) -> None:
    """List run directories: name, data, model, status, epochs, main metric (mean ± std for folds and seeds), duration, age."""
    from kexp.report.runs import RUN_COLUMNS, STATES, list_runs, render_runs, select_runs, sweep_trials_note

    check_format(fmt)
    for state in status:
        check_choice(state, STATES, "--status")
    if sort and sort.removeprefix("-") not in RUN_COLUMNS:
        raise typer.BadParameter(f"{sort!r}: sort by one of {', '.join(RUN_COLUMNS)} (prefix - for descending)", param_hint="'--sort'")
    with exit_on_error():
        rows = select_runs(list_runs(runs_dir), status=status, name=name, sort=sort, limit=limit)
    note = sweep_trials_note(runs_dir)
    if not rows and fmt == "table":
        console.print(f"no runs in {runs_dir}{' match --status/--name' if status or name else ''}", highlight=False, markup=False)
    else:
        print(render_runs(rows, fmt), end="")
    if note:
        print_note(note)


def compare_command(
    run_dirs: Annotated[list[str], typer.Argument(help="Run directories, or a quoted glob such as 'runs/*pima*'", show_default=False, autocompletion=complete_runs)],
    fmt: FormatOption = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the learning-curve PNG (default: runs/compare.png, beside the first run); compare.json goes beside it", show_default=False)] = None,
) -> None:
    """Set runs side by side: the spec keys that differ, final metrics, seed-only differences as mean ± std, and learning curves."""
    from kexp.cli.results import print_compare_tables
    from kexp.report.compare import compare_runs, expand_run_paths, render_compare, write_compare

    check_format(fmt)
    with exit_on_error():
        skipped: list[str] = []
        result = compare_runs(expand_run_paths(run_dirs, skipped))
        for note in skipped:
            print_note(note)
        written = write_compare(result, output)
    done = f"learning curves: {written['png']}  every number: {written['json']}"
    if fmt != "table":
        print(render_compare(result, fmt), end="")
        err_console.print(done, highlight=False, markup=False)
        return
    print_compare_tables(result)
    console.print(done, highlight=False, markup=False)
