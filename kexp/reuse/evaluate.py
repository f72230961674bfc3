"""evaluate_run: a finished run's model on its own data parts, without training or refitting anything.

    open the run -> re-read the data and check it is what the run read -> rebuild the same
    parts -> transform with the run's saved preprocessing -> Keras metrics (model.evaluate,
    as training did) and per-class numbers from predictions -> <run>/evaluations/<UTC>.json

The run's training files are only read; each evaluation adds a JSON file (and a confusion
matrix PNG per part) under <run>/evaluations/, named by the UTC time it was made.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import kexp
from kexp.datasets.base import DATA_DIR_ENV, DEFAULT_DATA_DIR, Split, changed_files
from kexp.datasets.pipeline import plan_members, prepare_dataset, read_data
from kexp.errors import DataError, RunDirError, SpecError
from kexp.preprocessing import SavedPreprocessing, load_saved
from kexp.report.reports import classification_report, regression_report, to_classes
from kexp.run.files import METRICS, RunFiles
from kexp.run.io import now_iso, write_json
from kexp.run.records import Metrics
from kexp.run.saved import RunRecord, open_run

PARTS = ("train", "validation", "test")
SPLIT_CHOICES = (*PARTS, "all")


def evaluate_run(run_dir: Path, split: str | None = None, data_dir: Path | None = None, allow_changed_data: bool = False,
                 output: Path | None = None, allow_changed_code: bool = False) -> dict[str, Any]:
    """Evaluate a run's model on `split` (train, validation, test or all) and write the evaluation JSON.

    `split` None: the test part if the run has one, else the part its metrics were scored on
    (Pima's tutorial scores its training rows); "split_note" then says which was chosen and why.

    `data_dir` None: $KEXP_DATA_DIR, else the folder the run read its data from. Data files
    that differ from the run's fingerprint are a DataError unless `allow_changed_data`, which
    records a warning instead. Returns the evaluation document plus "path", the JSON written.
    """
    if split is not None and split not in SPLIT_CHOICES:
        raise SpecError([f"--split {split}: choose from {', '.join(SPLIT_CHOICES)}"])
    record = open_run(Path(run_dir), allow_changed_code)
    if split is not None:
        choose_parts(split, None, record)
    saved = load_saved(record.preprocessing, source=str(record.files.preprocessing))
    warnings = list(record.warnings)
    folder = choose_data_dir(data_dir, record)
    raw = read_data(record.spec, folder)
    warnings += check_data(record, raw.summary.get("files", []), raw.class_names, allow_changed_data)
    rows = plan_members(raw, record.spec)[0].rows  # the single member's rows: same split seed, same protocol
    split_note = None
    if split is None:
        split, split_note = default_split(rows, record)
    names = choose_parts(split, rows, record)
    empty = np.array([], dtype=np.int64)
    data = prepare_dataset(raw, {part: rows[part] if part in names else empty for part in PARTS}, saved.fitted)
    results = score_parts(record, saved, {part: getattr(data, part) for part in names})
    document = {
        "kexp": kexp.__version__,
        "run": str(record.path.resolve()),
        "created": now_iso(),
        "split": split,
        "split_note": split_note,
        "task": saved.task,
        "class_names": saved.class_names,
        "positive_class": saved.positive_class,
        **results,
        "warnings": warnings,
        "data": {"data_dir": str(folder.resolve()), "files": raw.summary.get("files", [])},
    }
    return save_evaluation(record, document, output)


def save_evaluation(record: RunRecord, document: dict[str, Any], output: Path | None) -> dict[str, Any]:
    """The document written to `output`, else to <run>/evaluations/, plus "path" (None, with a warning, when it could not be saved)."""
    if output is not None:
        write_json(Path(output), document)
        return {**document, "path": str(output)}
    try:
        return write_evaluation(record.path, document)
    except OSError as exc:  # a colleague's read-only run, a full disk: the numbers are still shown
        where = exc.filename or record.files.evaluations
        warning = f"could not save the evaluation in {where} ({exc.strerror}); the numbers below are not saved: add --output FILE to save them"
        return {**document, "path": None, "warnings": [*document["warnings"], warning]}


def choose_data_dir(data_dir: Path | None, record: RunRecord) -> Path:
    """--data-dir, then $KEXP_DATA_DIR, then the folder the run read (env.json), then ./data."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return Path(record.env.data_dir or DEFAULT_DATA_DIR)


def check_data(record: RunRecord, current: list[dict[str, Any]], class_names: list[str], allow_changed: bool) -> list[str]:
    """Warnings about the data; DataError when it is not what the run read (unless allowed)."""
    if class_names != record.preprocessing.get("class_names", class_names):
        # Different classes make the model's outputs mean something else: never allowed.
        raise DataError(f"{record.files.preprocessing}: the run's classes are {record.preprocessing['class_names']}, the data now has {class_names}")
    recorded = record.env.data_files if record.env.data_files is not None else ((record.metrics and record.metrics.data) or {}).get("files")
    if recorded is None:
        return [f"{record.files.env} records no data fingerprint, so the data cannot be checked against what the run read"]
    changes = changed_files(recorded, current)
    if not changes:
        return []
    more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
    if not allow_changed:
        raise DataError(f"{changes[0]}{more}; the run's metrics came from other data: point --data-dir at the run's data, or pass --allow-changed-data")
    return [f"data changed since training: {change}" for change in changes]


def default_split(rows: dict[str, np.ndarray], record: RunRecord) -> tuple[str, str]:
    """(the part evaluated when no --split is given, the line that says which and why)."""
    if len(rows["test"]):
        return "test", "no --split given: evaluating the test part"
    scored = ((record.metrics and record.metrics.report) or {}).get("part") or "train"
    if scored not in rows or not len(rows[scored]):
        scored = "train"
    return scored, f"no --split given and the run has no test part ({absent_because('test', record)}): evaluating the {scored} part its metrics were scored on"


def choose_parts(split: str, rows: dict[str, np.ndarray] | None, record: RunRecord) -> list[str]:
    """The parts to evaluate; a part the run does not have is an error naming the option.

    With `rows` None only what the spec alone decides is checked (no validation part), so that
    mistake is reported before minutes of data reading.
    """
    if rows is None:
        present = [part for part in PARTS if part != "validation" or record.spec.train.validation_split > 0]
    else:
        present = [part for part in PARTS if len(rows[part])]
    if split == "all":
        return present
    if split not in present:
        raise SpecError([f"--split {split}: run {record.path.name} has no {split} part ({absent_because(split, record)}); choose from {', '.join([*present, 'all'])}"])
    return [split]


def absent_because(part: str, record: RunRecord) -> str:
    if part == "validation":
        return f"train.validation_split is {record.spec.train.validation_split:g}"
    if part == "test":
        return f"data.test_fraction is {record.spec.data.options.held_out_fraction():g}"
    return "the data has no training rows"


def score_parts(record: RunRecord, saved: SavedPreprocessing, parts: dict[str, Any]) -> dict[str, Any]:
    """Keras metrics (model.evaluate, as training computed them) and prediction reports of each part."""
    from kexp.models.saving import load_model
    from kexp.task import resolve_loss
    from kexp.train.compile import make_targets
    from kexp.train.image_feeds import named_decode_errors
    from kexp.train.runtime import start_tensorflow
    from kexp.train.scoring import evaluate_splits, evaluation_batch_size

    task, class_names = saved.task, saved.class_names
    loss = (record.metrics and record.metrics.loss_function) or resolve_loss(record.spec.train.loss, len(class_names), task)
    batch_size = evaluation_batch_size(record.spec.train.batch_size)
    start_tensorflow()
    model = load_model(record.model_path)
    if not model.compiled:
        raise RunDirError(f"{record.model_path}: saved without its loss and metrics; kexp evaluates compiled models only")
    results = {}
    for name, part in parts.items():
        targets = make_targets(part.y, loss, len(class_names))
        scored = Split(part.x, targets, part.divisor)
        with named_decode_errors({name: scored}):
            metrics, outputs = evaluate_splits(model, {name: scored}, record.spec.train.batch_size, keep=name)
        metrics = metrics[name]
        report = regression_report(part.y, outputs[:, 0]) if task == "regression" else classification_report(part.y, to_classes(outputs), class_names)
        recorded = record.metrics or Metrics()
        results[name] = {"metrics": metrics, "recorded_metrics": recorded_figures(recorded, name),
                         "recorded_note": recorded_note(recorded, name), **report}
    return {"loss_function": loss, "batch_size": batch_size, "splits": list(parts), "results": results}


def recorded_figures(metrics: Metrics, part: str) -> dict[str, Any] | None:
    """What metrics.json says of `part`: its Keras metrics, plus the report's figures (balanced
    accuracy, mae, ...) when the report was made on this part."""
    figures = metrics.part(part)
    report = metrics.report or {}
    if report.get("part") != part:
        return figures
    extra = {name: report[name] for name in ("balanced_accuracy", "mae", "rmse", "r2") if isinstance(report.get(name), (int, float))}
    return {**(figures or {}), **extra} if figures is not None or extra else None


def recorded_note(metrics: Metrics, part: str) -> str | None:
    """Why the train part's numbers can differ from metrics.json's, where they do."""
    if part == "train" and metrics.train_metrics_from == "last_epoch" and metrics.train:
        return (f"{METRICS}'s train figures are the last epoch's running means over its batches (weights still changing, "
                "dropout on where the model has any); here the final model scores every train row with dropout off, so the two differ")
    return None


def write_evaluation(run_dir: Path, document: dict[str, Any]) -> dict[str, Any]:
    """<run>/evaluations/<UTC stamp>.json (a second one in the same second gets -2, -3, ...) and its confusion PNGs."""
    folder = RunFiles(run_dir).evaluations
    folder.mkdir(exist_ok=True)
    # a name taken but left empty by a failed write is removed below, so a full disk leaves nothing behind
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1, 1000):
        stem = stamp if attempt == 1 else f"{stamp}-{attempt}"
        plots = {name: f"{stem}-confusion-{name}.png" for name, result in document["results"].items() if "confusion_matrix" in result}
        full = {**document, "plots": plots}
        path = folder / f"{stem}.json"
        if claim(path, full):
            draw_confusion_plots(folder, full, plots)
            return {**full, "path": str(path)}
    raise RunDirError(f"{folder}: could not pick a new evaluation file name")


def claim(path: Path, document: dict[str, Any]) -> bool:
    """Write `document` to `path` only if no file is there: reserve the name by exclusive create
    (never replaces, on any filesystem, unlike a hard link), then write it atomically."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        return False
    try:
        write_json(path, document)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return True


def draw_confusion_plots(folder: Path, document: dict[str, Any], plots: dict[str, str]) -> None:
    from kexp.report.plots import plot_confusion_matrix

    run = Path(document["run"]).name
    for name, filename in plots.items():
        result = document["results"][name]
        title = f"{run}\n{name}: {result['rows']:,} rows, accuracy {result['accuracy']:.4f}"
        plot_confusion_matrix(result["confusion_matrix"], document["class_names"], folder / filename, title)
