"""`kexp predict`: new raw inputs through a trained run's own preprocessing and model.

    rows = predict_run("runs/<id>", ["WINNER! Claim your prize", "@messages.txt"], top_k=2)
    write_predictions(rows, Path("preds.jsonl"))

Inputs are read the way the run's preprocessing kind reads them (kexp.preprocessing: text
runs take literal strings or one example per line of a `.txt` file; table runs CSV files of
the feature columns; image runs PNG/JPEG, `.npy` or IDX files; image_folder runs image files
and folders of them). The run's saved preprocessing
encodes them (never refitted) and the model sees them in batches. Each row names its input
and gives the predicted label and its probability, the `top_k` best labels when asked, or for
a regression run the predicted value. Progress and warnings go out as events (kexp.events).
"""

from __future__ import annotations

import collections
import contextlib
import csv as csvlib
import itertools
import json
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kexp.errors import DataError, KexpError, RunDirError
from kexp.events import Emit, discard
from kexp.preprocessing import Fitted, RawInputs, SavedPreprocessing, Source, TableLayout, load_saved
from kexp.preprocessing.inputs import Warn, batched

EXCERPT_CHARS = 60
OUTPUT_FORMATS = (".jsonl", ".csv")

Rows = list[dict[str, Any]]


def predict_run(run_dir: Path | str, inputs: Sequence[str], top_k: int = 1, emit: Emit = discard, allow_changed_code: bool = False) -> Rows:
    """Predictions for raw `inputs` with a run's saved preprocessing and model, one dict per example (all in memory:
    for inputs of any size, iterate predict_batches)."""
    return [row for rows in predict_batches(run_dir, inputs, top_k, emit, allow_changed_code) for row in rows]


def predict_batches(run_dir: Path | str, inputs: Sequence[str], top_k: int = 1, emit: Emit = discard,
                    allow_changed_code: bool = False) -> Iterator[Rows]:
    """Predictions in input order, BATCH_SIZE examples at a time: files are read, encoded and
    predicted a batch at a time, so memory stays bounded whatever the size of the inputs.

    Events to `emit`: `progress` {task: "predicting", done, total: None} as batches are
    predicted, and `warning` {message} for anything the caller should show (an interrupted
    run's model, a resized image); nothing is printed here.
    """
    from kexp.run.files import PREPROCESSING_FILE
    from kexp.run.saved import open_run

    emit("progress", task="predicting", done=0, total=None)  # total None: still reading the inputs

    def warn(message: str) -> None:
        emit("warning", message=message)

    record = open_run(Path(run_dir), allow_changed_code)
    document = record.preprocessing
    if document.get("raw_input_unsupported"):
        raise RunDirError(f"{record.path}: cannot predict from raw inputs: {document['raw_input_unsupported']}")
    saved = load_saved(document, str(record.path / PREPROCESSING_FILE))
    for message in record.warnings:
        warn(message)
    if top_k > 1 and saved.task == "regression":
        warn(f"top-k {top_k} ignored: {record.path.name} is a regression run (one predicted value per input)")
    batches = first_batch_read(input_batches(saved.fitted, inputs, input_layout(record.spec), warn), inputs)
    yield from predicted_rows(record.model_path, saved, batches, top_k, emit, warn)
    emit("progress_end", task="predicting")


def first_batch_read(batches: Iterator[RawInputs], inputs: Sequence[str]) -> Iterator[RawInputs]:
    """The batches, with the first one read now: a bad or empty input is reported in a second,
    before TensorFlow starts; a problem further into a large file is reported when reached."""
    first = next(batches, None)
    if first is None:
        raise DataError(f"no examples in {', '.join(inputs)} (empty files)")
    return itertools.chain([first], batches)


def input_batches(fitted: Fitted, inputs: Sequence[str], layout: TableLayout, warn: Warn) -> Iterator[RawInputs]:
    """The inputs as the run's preprocessing kind reads them, BATCH_SIZE at a time; DataError names the file (and line)."""
    if not inputs:
        raise DataError("no inputs given")
    return batched(fitted.read_examples(inputs, layout, warn), fitted.stack)


def input_layout(spec: Any) -> TableLayout:
    """How the run's own CSV files were laid out, for a table run's new rows: its delimiter, and
    the label column a header-less file may hold (Pima's is its last, the default's)."""
    return spec.data.options.table_layout()


def excerpt(text: str) -> str:
    """The input on one line, cut to EXCERPT_CHARS with "…" where it was cut (a cut number must not look whole)."""
    line = " ".join(text.split())
    return line if len(line) <= EXCERPT_CHARS else line[: EXCERPT_CHARS - 1] + "…"


def shown_input(row: dict[str, Any]) -> str:
    """A prediction's input as a terminal table shows it: `name:line` and the input shortened to one line."""
    where = "" if row.get("file") is None else Path(row["file"]).name + ("" if row.get("line") is None else f":{row['line']}")
    text = excerpt(str(row["input"]))
    if where and (text == row["file"] or not text):
        return where
    return f"{where} {text}" if where else text


# --- the model -----------------------------------------------------------------------------


def predicted_rows(model_path: Path, saved: SavedPreprocessing, batches: Iterator[RawInputs], top_k: int,
                   emit: Emit, warn: Warn) -> Iterator[Rows]:
    """The rows of each batch: its inputs transformed (never refitted) and predicted in one model call."""
    from kexp.models.saving import load_model
    from kexp.train.runtime import start_tensorflow

    warn_once = once(warn)  # a model-wide warning (outputs not probabilities) is said once, not per batch
    done = 0
    with encoded_batches(saved.fitted, batches) as encoded:
        start_tensorflow()  # while the first batches are tokenized in the worker, if any
        model = load_model(model_path)
        for raw, x in encoded:
            outputs = np.asarray(model.predict_on_batch(x), dtype=np.float32).reshape(len(raw.sources), -1)
            rows = make_rows(raw.sources, outputs, saved, top_k, model_path, warn_once)
            done += len(rows)
            emit("progress", task="predicting", done=done, total=None)
            yield rows


def once(warn: Warn) -> Warn:
    said: set[str] = set()

    def warn_once(message: str) -> None:
        if message not in said:
            said.add(message)
            warn(message)

    return warn_once


def encode(fitted: Fitted, examples: Any) -> np.ndarray:
    """Model inputs for a batch of raw examples (module level: the worker process runs it)."""
    return fitted.encode(examples)


# Batches tokenized ahead of the model in the worker: enough to keep it busy, few enough that
# memory stays bounded (a 1,024 x 10,000 count matrix is 40 MB).
LOOKAHEAD = 2


@contextlib.contextmanager
def encoded_batches(fitted: Fitted, batches: Iterator[RawInputs]) -> Iterator[Iterator[tuple[RawInputs, np.ndarray]]]:
    """(batch, model inputs) for each batch, in order.

    A kind that `encodes_in_worker` (text: tokenizing) is encoded in a worker process while this
    one starts TensorFlow: both are fixed costs of seconds (NLTK and WordNet ~5 s, TensorFlow ~7 s
    of CPU here), so on two cores a 1,000-line text file answers in ~8 s instead of ~12. The first LOOKAHEAD batches are handed to
    the worker on entry, before the caller starts TensorFlow. Once TensorFlow is loaded (a later
    call in the same process) there is nothing to overlap, and forking it would not be safe: no worker.
    """
    if not fitted.encodes_in_worker or "tensorflow" in sys.modules:
        yield ((raw, encode(fitted, raw.examples)) for raw in batches)
        return
    # fork (Linux) shares the imports already made and starts in milliseconds; spawn elsewhere
    start = "fork" if sys.platform == "linux" else "spawn"
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context(start))
    pending: collections.deque = collections.deque()

    def submit_next() -> None:
        raw = next(batches, None)
        if raw is not None:
            pending.append((raw, pool.submit(encode, fitted, raw.examples)))

    def results() -> Iterator[tuple[RawInputs, np.ndarray]]:
        while pending:
            raw, future = pending.popleft()
            submit_next()
            yield raw, future.result()

    try:
        for _ in range(LOOKAHEAD):
            submit_next()
        yield results()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # report the error now, not after the tokenizing
        raise
    pool.shutdown()


def class_probabilities(outputs: np.ndarray, class_names: list[str], model_path: Path) -> np.ndarray:
    """[n, classes]: a binary sigmoid's output p is p(class_names[1]) and 1 - p p(class_names[0])."""
    units = outputs.shape[1]
    if units == 1 and len(class_names) == 2:
        return np.column_stack([1.0 - outputs[:, 0], outputs[:, 0]])
    if units == len(class_names):
        return outputs
    raise RunDirError(f"{model_path}: the model gives {units} output(s) per example but the run has {len(class_names)} classes ({', '.join(class_names)})")


def make_rows(sources: list[Source], outputs: np.ndarray, saved: SavedPreprocessing, top_k: int, model_path: Path, warn: Warn) -> list[dict[str, Any]]:
    """One dict per input: input, file, line, then label, probability (and `top`, the top_k best), or value."""
    if saved.task == "regression":
        return [{**source_fields(source), "value": float(value)} for source, value in zip(sources, outputs[:, 0])]
    class_names = saved.class_names
    probabilities = class_probabilities(outputs, class_names, model_path)
    if probabilities.min() < -1e-6 or probabilities.max() > 1 + 1e-6 or (probabilities.shape[1] > 2 and not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)):
        warn(f"{model_path}: the model's outputs are not probabilities (its last layer is not softmax or sigmoid); 'probability' holds the raw output")
    k = min(top_k, len(class_names))
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    rows = []
    for source, order, p in zip(sources, best, probabilities):
        row: dict[str, Any] = {**source_fields(source), "label": class_names[order[0]], "probability": round(float(p[order[0]]), 6)}
        if top_k > 1:
            row["top"] = [{"label": class_names[c], "probability": round(float(p[c]), 6)} for c in order]
        rows.append(row)
    return rows


def source_fields(source: Source) -> dict[str, Any]:
    return {"input": source.input, "file": source.file, "line": source.line}


# --- output files --------------------------------------------------------------------------


def check_output_path(path: Path) -> None:
    """Refuse an output file kexp cannot write before any work is done."""
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise KexpError(f"{path}: unknown output format '{path.suffix}'; name the file .jsonl (JSON lines) or .csv")
    if not path.parent.is_dir():
        raise KexpError(f"{path}: folder {path.parent} does not exist")


def write_predictions(rows: Rows, path: Path | str) -> None:
    """Rows as JSON lines (.jsonl) or CSV (.csv, `top` flattened to label_1, probability_1, ...), written atomically."""
    with predictions_file(Path(path)) as write:
        write(rows)


@contextlib.contextmanager
def predictions_file(path: Path) -> Iterator[Callable[[Rows], None]]:
    """A `write(rows)` that appends batches of rows to a hidden file beside `path`, renamed to `path`
    when the block ends: readers see the whole file or none, and a failure (a bad line further
    in, a full disk, Ctrl-C) leaves no partial file and no temporary one."""
    from kexp.run.io import fsync_dir, umask

    check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise KexpError(f"{path}: cannot write the predictions: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield rows_writer(f, path.suffix.lower())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise KexpError(f"{path}: cannot write the predictions: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rows_writer(f: Any, suffix: str) -> Callable[[Rows], None]:
    """write(rows) in JSON lines, or CSV whose header is the first row's fields (every row has the same)."""
    writer: list[csvlib.DictWriter] = []

    def write(rows: Rows) -> None:
        if suffix == ".jsonl":
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            return
        flat = [flatten_row(row) for row in rows]
        if not writer and flat:
            writer.append(csvlib.DictWriter(f, fieldnames=list(flat[0]), lineterminator="\n"))
            writer[0].writeheader()
        if flat:
            writer[0].writerows(flat)

    return write


def flatten_row(row: dict[str, Any]) -> dict[str, Any]:
    flat = {key: value for key, value in row.items() if key != "top"}
    for i, pair in enumerate(row.get("top", []), 1):
        flat[f"label_{i}"], flat[f"probability_{i}"] = pair["label"], pair["probability"]
    return flat
