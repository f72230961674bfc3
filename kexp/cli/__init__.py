"""The `kexp` command: parse options, call one library function, show the result.

    app.py         the Typer app: every command in `kexp --help`'s order, and main()
    common.py      the consoles, shared option types, and the one error funnel (exit_on_error)
    train.py       train, resume            sweep.py   sweep
    reuse.py       evaluate, predict, export
    runs.py        runs, compare
    specs.py       validate, init, datasets, models
    data.py        data fetch, data list, doctor
    display.py     the library's events shown live: rich, plain lines, JSON lines
    results.py     each command's result as tables or lines
    completion.py  shell completion of dataset, model, tutorial and run names

Every KexpError becomes one line per problem on stderr and its exit code (2 for an
invalid spec, 1 otherwise, 128+N for signal N); anything else is a bug and keeps its
traceback. TensorFlow is imported only by commands that train.
"""

from kexp.cli.app import app, main
from kexp.cli.common import printable
from kexp.cli.completion import complete_datasets, complete_examples, complete_models, complete_runs

__all__ = ["app", "main", "printable", "complete_datasets", "complete_examples", "complete_models", "complete_runs"]
