"""`kexp evaluate`, `kexp predict` and `kexp export`: a trained run's model used again, never refitted."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape as literal  # help text shown as written, `[ray]` included (rich markup otherwise)

from kexp.cli.common import AllowChangedCodeOption, JsonOption, check_choice, err_console, exit_on_error, print_warning
from kexp.cli.completion import complete_runs


def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/20261123-133045-imdb-h1vd", autocompletion=complete_runs)],
    split: Annotated[str | None, typer.Option("--split", help="test, validation, train, or all (every part the run has); default: test, else the part the run was scored on", show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where data files live (default: $KEXP_DATA_DIR, else the run's own data dir)")] = None,
    allow_changed_data: Annotated[bool, typer.Option("--allow-changed-data", help="Evaluate even if the data files differ from what the run read (recorded as a warning)")] = False,
    as_json: JsonOption = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the evaluation JSON to this file instead of <run>/evaluations/ (for a read-only run)")] = None,
    allow_changed_code: AllowChangedCodeOption = False,
) -> None:
    """Evaluate a run's saved model on its data again (no refitting); write <run>/evaluations/<UTC time>.json."""
    from kexp.cli.results import print_evaluation_result
    from kexp.reuse.evaluate import evaluate_run

    with exit_on_error():
        result = evaluate_run(run_dir=run_dir, split=split, data_dir=data_dir, allow_changed_data=allow_changed_data, output=output,
                              allow_changed_code=allow_changed_code)
    for warning in result["warnings"]:
        print_warning(warning)
    if as_json:
        print_evaluation_json(result)
    else:
        print_evaluation_result(result)


def print_evaluation_json(result: dict) -> None:
    """The evaluation file as written; for a read-only run (not saved), the same strict JSON on stdout only."""
    if result["path"] is None:
        from kexp.run.io import strict_json

        print(strict_json({k: v for k, v in result.items() if k != "path"}))
    else:
        print(Path(result["path"]).read_text(encoding="utf-8"), end="")


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
    allow_changed_code: AllowChangedCodeOption = False,
) -> None:
    """Predict new raw inputs with a run's own saved preprocessing (never refitted) and model."""
    from kexp.cli.results import SHOWN_PREDICTIONS, print_predictions

    shown: list[dict] = []  # the first SHOWN_PREDICTIONS rows for the table; the rest stream to --output / --json
    count = 0
    with exit_on_error():
        for rows in streamed_predictions(run_dir, inputs, top_k, output, as_json, allow_changed_code):
            shown += rows[: max(0, SHOWN_PREDICTIONS - len(shown))]
            count += len(rows)
    if not as_json:
        print_predictions(shown, output, count)


def streamed_predictions(run_dir: Path, inputs: list[str], top_k: int, output: Path | None, as_json: bool, allow_changed_code: bool = False):
    """Batches of predictions, each written to --output and, with --json, to stdout as it comes."""
    from kexp.cli.display import progress_bars
    from kexp.reuse.predict import check_output_path, predict_batches, predictions_file

    if output is not None:
        check_output_path(output)
    with progress_bars(err_console, print_warning) as emit, predictions_file(output) if output is not None else contextlib.nullcontext() as write:
        for rows in predict_batches(run_dir=run_dir, inputs=inputs, top_k=top_k, emit=emit, allow_changed_code=allow_changed_code):
            if write is not None:
                write(rows)
            if as_json:
                sys.stdout.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            yield rows


def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory, e.g. runs/<id>", autocompletion=complete_runs)],
    fmt: Annotated[str, typer.Option("--format", help="saved_model (TensorFlow Serving) or tflite")],
    output: Annotated[Path | None, typer.Option("--output", help="Where to write (default: RUN_DIR/export/saved_model or RUN_DIR/export/model.tflite)")] = None,
    allow_changed_code: AllowChangedCodeOption = False,
) -> None:
    """Export a run's model for serving, checked against model.keras on generated rows; never overwrites."""
    from kexp.cli.results import print_export
    from kexp.reuse.export import FORMATS, export_run

    fmt = fmt.lower()
    check_choice(fmt, FORMATS, "--format")
    with exit_on_error():
        info = export_run(run_dir=run_dir, fmt=fmt, output=output, allow_changed_code=allow_changed_code)
    print_export(info)
