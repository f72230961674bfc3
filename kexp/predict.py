"""`kexp predict`: new raw inputs through a trained run's own preprocessing and model.

    rows = predict_run("runs/<id>", ["WINNER! Claim your prize", "@messages.txt"], top_k=2)
    write_predictions(rows, Path("preds.jsonl"))

Inputs are read the way the run's data kind needs (read_inputs): text runs take literal
strings or one example per line of a `.txt` file; table runs CSV files of the feature
columns; image runs PNG/JPEG, `.npy` or IDX files. The run's saved preprocessing transforms
them (never refitted) and the model sees them in batches. Each row names its input and
gives the predicted label and its probability, the `top_k` best labels when asked, or for a
regression run the predicted value.
"""

from __future__ import annotations

import contextlib
import csv as csvlib
import io
import json
import math
import multiprocessing
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kexp.datasets.csv import PIMA_LABEL_COLUMN
from kexp.errors import DataError, KexpError, RunDirError

# Examples per preprocessing + model step: bounds memory (a 10,000-word count matrix of 1,024
# rows is 20 MB) and is the progress bar's step. One model call per step, not one per example.
BATCH_SIZE = 1024
EXCERPT_CHARS = 60
OUTPUT_FORMATS = (".jsonl", ".csv")

Progress = Callable[[int, int], None]  # (examples done, total)
Warn = Callable[[str], None]


@dataclass
class RawInputs:
    """New examples as read: what each output row shows, and the examples for the preprocessing."""

    names: list[str]
    examples: Any  # list[str] (text), float32 [n, d] (table), uint8 [n, h, w] (images)


def predict_run(run_dir: Path | str, inputs: Sequence[str], top_k: int = 1, progress: Progress | None = None, warn: Warn | None = None) -> list[dict[str, Any]]:
    """Predictions for raw `inputs` with a run's saved preprocessing and model, one dict per example.

    `progress(done, total)` is called after each batch and `warn(message)` for anything the
    caller should show (an interrupted run's model, a resized image); neither prints here.
    """
    from kexp.preprocessing import from_document
    from kexp.rundir import PREPROCESSING_FILE, open_run

    warn = warn or (lambda message: None)
    record = open_run(Path(run_dir))
    document = record.preprocessing
    if document.get("raw_input_unsupported"):
        raise RunDirError(f"{record.path}: cannot predict from raw inputs: {document['raw_input_unsupported']}")
    fitted = from_document(document, str(record.path / PREPROCESSING_FILE))
    for message in record.warnings:
        warn(message)
    # Inputs are read before TensorFlow starts, so a bad file is reported in a second.
    raw = read_inputs(fitted, inputs, record.spec, warn)
    if top_k > 1 and document.get("task") == "regression":
        warn(f"top-k {top_k} ignored: {record.path.name} is a regression run (one predicted value per input)")
    outputs = compute_outputs(record.model_path, fitted, raw.examples, progress)
    return make_rows(raw.names, outputs, document, top_k, record.model_path, warn)


# --- reading inputs ------------------------------------------------------------------------


def read_inputs(fitted: Any, inputs: Sequence[str], spec: Any, warn: Warn) -> RawInputs:
    """The inputs as the run's preprocessing kind takes them; DataError names the file (and line)."""
    if not inputs:
        raise DataError("no inputs given")
    if fitted.kind == "text":
        raw = read_texts(inputs, warn)
    elif fitted.kind == "table":
        raw = read_table_inputs([Path(i) for i in inputs], fitted.feature_names, spec)
    elif fitted.kind == "images":
        raw = read_image_inputs([Path(i) for i in inputs], tuple(fitted.image_shape), warn)
    else:
        raise RunDirError(f"kexp predict does not know how to read inputs for '{fitted.kind}' preprocessing")
    if not len(raw.names):
        raise DataError(f"no examples in {', '.join(inputs)} (empty files)")
    return raw


# An argument that ends like a file name is meant as a file: predicting on the name itself
# ("new_reviews.csv" as a review) would answer a question nobody asked.
FILE_LIKE = re.compile(r"^[^\s]+\.(txt|csv|tsv|json|jsonl|text|lst)$", re.IGNORECASE)


def read_texts(inputs: Sequence[str], warn: Warn | None = None) -> RawInputs:
    """Literal strings, or one example per line of `@file` / a `.txt` file (blank lines skipped, with a warning)."""
    names: list[str] = []
    texts: list[str] = []
    for item in inputs:
        path = text_file(item)
        if path is None:
            names.append(excerpt(item))
            texts.append(item)
            continue
        lines = read_lines(path)
        kept = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
        if len(kept) < len(lines) and warn is not None:
            warn(f"{path}: skipped {len(lines) - len(kept)} blank line(s); inputs are named file:line so results match lines")
        names.extend(f"{path.name}:{n} {excerpt(line)}" for n, line in kept)
        texts.extend(line for _, line in kept)
    return RawInputs(names, texts)


def text_file(item: str) -> Path | None:
    """The file an input names (`@file`, or a path ending in .txt), or None for a literal string."""
    if item.startswith("@"):
        path = Path(item[1:])
        if not path.is_file():
            raise DataError(f"{path}: not found (an input starting with @ names a file of one example per line; put text that starts with @ in a .txt file)")
        return path
    if FILE_LIKE.match(item):
        path = Path(item)
        if not path.is_file():
            raise DataError(f"{path}: not found (an input ending like a file name is read as a file; to predict that text itself, put it in a .txt file)")
        if path.suffix.lower() != ".txt":
            raise DataError(f"{path}: a text run reads plain text, one example per line (.txt, or @{path} to read any file's lines as text)")
        return path
    return None


def read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a leading byte-order mark is not part of the first line
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    return text.splitlines()


def excerpt(text: str) -> str:
    return " ".join(text.split())[:EXCERPT_CHARS]


# --- tables --------------------------------------------------------------------------------


def read_table_inputs(paths: list[Path], feature_names: list[str], spec: Any) -> RawInputs:
    """Feature rows of CSV files, with or without a header; an extra (label) column is ignored."""
    delimiter = spec.data.options().get("delimiter", ",")
    names: list[str] = []
    parts = []
    for path in paths:
        rows, columns = table_layout(path, feature_names, delimiter, spec)
        parts.append(parse_features(path, rows, columns, feature_names))
        names.extend(f"{path.name}:{line}" for line, _ in rows)
    return RawInputs(names, np.concatenate(parts) if parts else np.empty((0, len(feature_names)), np.float32))


def table_layout(path: Path, feature_names: list[str], delimiter: str, spec: Any) -> tuple[list[tuple[int, list[str]]], list[int]]:
    """(data rows with line numbers, the column of each feature): by header names, else by position."""
    from kexp.datasets.csv import read_rows

    if not path.is_file():
        raise DataError(f"{path}: not found; a table run predicts from CSV files of its feature columns ({', '.join(feature_names)})")
    rows = read_rows(path, delimiter)
    if not rows:
        return [], list(range(len(feature_names)))
    first = [cell.strip() for cell in rows[0][1]]
    if set(feature_names) <= set(first):
        return rows[1:], [first.index(name) for name in feature_names]
    named = [cell for cell in first if cell in feature_names]
    if named:
        missing = [name for name in feature_names if name not in first]
        raise DataError(f"{path}:{rows[0][0]}: the header lacks the run's feature column(s) {', '.join(missing)} (the run's features: {', '.join(feature_names)})")
    return rows, positional_columns(path, len(first), feature_names, spec)


def positional_columns(path: Path, width: int, feature_names: list[str], spec: Any) -> list[int]:
    """Feature columns of a header-less file: all of them, or all but the label column the run's spec placed."""
    d = len(feature_names)
    if width == d:
        return list(range(d))
    if width != d + 1:
        raise DataError(
            f"{path}: {width} columns and no header naming the features; the run expects {d} feature columns "
            f"({', '.join(feature_names)}), optionally with its label column"
        )
    options = spec.data.options()
    label = PIMA_LABEL_COLUMN if spec.data.name == "pima" else options.get("label_column", -1)
    if isinstance(label, str):
        raise DataError(
            f"{path}: {width} columns and no header: one is the label, but the run named its label column '{label}' "
            f"rather than placing it; add a header row naming the columns ({', '.join(feature_names)}, {label})"
        )
    label_at = label % width
    return [i for i in range(width) if i != label_at]


def parse_features(path: Path, rows: list[tuple[int, list[str]]], columns: list[int], feature_names: list[str]) -> np.ndarray:
    """float32 [len(rows), d]; a short row, a non-number or a NaN/infinite value names file:line and the feature."""
    x = np.empty((len(rows), len(columns)), dtype=np.float32)
    width = max(columns, default=-1) + 1
    for r, (line, row) in enumerate(rows):
        if len(row) < width:
            raise DataError(f"{path}:{line}: expected at least {width} fields, found {len(row)}")
        for c, (name, at) in enumerate(zip(feature_names, columns)):
            value = row[at].strip()
            try:
                number = float(value)
            except ValueError:
                raise DataError(f"{path}:{line}: feature '{name}' is {value!r}, not a number") from None
            if not math.isfinite(number):
                raise DataError(f"{path}:{line}: feature '{name}' is {value!r}; the model needs a finite number")
            x[r, c] = number
    return x


# --- images --------------------------------------------------------------------------------


def read_image_inputs(paths: list[Path], shape: tuple[int, ...], warn: Warn) -> RawInputs:
    """uint8 greyscale images [n, h, w] from PNG/JPEG, .npy and IDX files, checked against `shape`."""
    names: list[str] = []
    parts = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: not found; an image run predicts from PNG/JPEG, .npy or IDX (*-ubyte[.gz]) files")
        if path.suffix == ".npy":
            images = check_image_shape(path, pixels_as_uint8(path, load_npy(path)), shape)
        elif is_idx(path):
            from kexp.datasets.mnist import IMAGE_MAGIC, read_idx

            images = check_image_shape(path, read_idx(path, IMAGE_MAGIC), shape)
        else:
            images = decode_image(path, shape, warn)[np.newaxis]
            names.append(path.name)
            parts.append(images)
            continue
        names.extend(f"{path.name}:{i}" for i in range(len(images)))
        parts.append(images)
    return RawInputs(names, np.concatenate(parts) if parts else np.empty((0, *shape), np.uint8))


def is_idx(path: Path) -> bool:
    return path.name.endswith("-ubyte") or path.suffix in (".gz", ".idx")


def load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a NumPy .npy array ({' '.join(str(exc).split())})") from None


def pixels_as_uint8(path: Path, array: np.ndarray) -> np.ndarray:
    """uint8 pixels from integers in 0-255, or floats in [0, 1] (scaled back to 0-255) or 0-255."""
    if array.dtype == np.uint8:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{path}: pixels of type {array.dtype}; expected uint8 (0-255) or floats in [0, 1]")
    if array.size == 0:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(f"{path}: pixels include NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise DataError(f"{path}: pixel values run from {low:g} to {high:g}; expected 0-255 (uint8) or floats in [0, 1]")
    if np.issubdtype(array.dtype, np.floating) and high <= 1.0:
        array = array * 255.0
    return np.rint(array).astype(np.uint8)


def check_image_shape(path: Path, images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """[n, h, w] images of the run's shape (one [h, w] image is a batch of one), else a DataError with both shapes.

    Arrays shaped as the model takes them are accepted too: [n, h*w] (flattened) and [n, h, w, 1].
    """
    pixels = int(np.prod(shape))
    if images.ndim == 2 and images.shape[1] == pixels and tuple(images.shape) != shape:
        images = images.reshape(len(images), *shape)
    elif images.ndim == len(shape) + 2 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim == len(shape):
        images = images[np.newaxis]
    if images.ndim != len(shape) + 1 or tuple(images.shape[1:]) != shape:
        wanted = "x".join(map(str, shape))
        raise DataError(f"{path}: images of shape {list(images.shape)} do not fit the run's {wanted} images (expected [n, {', '.join(map(str, shape))}] or [{', '.join(map(str, shape))}])")
    return images


def decode_image(path: Path, shape: tuple[int, ...], warn: Warn) -> np.ndarray:
    """A PNG/JPEG as a uint8 greyscale [h, w] array, resized (with a warning) to the run's size."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns (above MAX_IMAGE_PIXELS) before it refuses (twice that): both are one line here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)  # phone photos are stored sideways with a rotation tag
                grey = flatten_alpha(image).convert("L")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DataError(f"{path}: too large to decode safely (more than Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} pixels, "
                        "a possible decompression bomb); resize it first") from None
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not an image Pillow can read ({type(exc).__name__}); use PNG/JPEG, .npy or IDX files") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot decode the image ({' '.join(str(exc).split())})") from None
    height, width = shape
    if grey.size != (width, height):
        stretched = grey.size[0] * height != grey.size[1] * width
        warn(f"{path}: {grey.size[0]}x{grey.size[1]} image resized to the run's {width}x{height}{' (stretched: aspect ratio not kept)' if stretched else ''}")
        grey = grey.resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.uint8)
    if pixels.mean() > 127:
        # MNIST digits are white on black; inverting silently would hide a real mismatch.
        warn(f"{path}: mostly light pixels, but MNIST-style images are light strokes on a dark background; invert it if it is dark ink on white (kexp does not)")
    return pixels


def flatten_alpha(image: Any) -> Any:
    """Transparent pixels become black, the background of the training images."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba)
    return image


# --- the model -----------------------------------------------------------------------------


def compute_outputs(model_path: Path, fitted: Any, examples: Any, progress: Progress | None) -> np.ndarray:
    """Model outputs [n, units], transforming and predicting BATCH_SIZE examples at a time."""
    from kexp.models.saving import load_model
    from kexp.training import start_tensorflow

    total = len(examples)
    chunks = [examples[start : start + BATCH_SIZE] for start in range(0, total, BATCH_SIZE)]
    outputs = []
    with encoded_batches(fitted, chunks) as batches:
        start_tensorflow()
        model = load_model(model_path)
        for chunk, x in zip(chunks, batches):
            outputs.append(np.asarray(model.predict_on_batch(x), dtype=np.float32).reshape(len(chunk), -1))
            if progress is not None:
                progress(sum(map(len, outputs)), total)
    return np.concatenate(outputs)


def encode(fitted: Any, chunk: Any) -> np.ndarray:
    return fitted.encode_texts(list(chunk)) if fitted.kind == "text" else fitted.transform(chunk)


@contextlib.contextmanager
def encoded_batches(fitted: Any, chunks: list[Any]) -> Iterator[Iterator[np.ndarray]]:
    """The model inputs of each chunk, in order.

    Text is tokenized in a worker process while this one starts TensorFlow: both are fixed
    costs of seconds (NLTK and WordNet ~5 s, TensorFlow ~7 s of CPU here), so on two cores a
    1,000-line file answers in ~8 s instead of ~12. Once TensorFlow is loaded (a later call in
    the same process) there is nothing to overlap, and forking it would not be safe: no worker.
    """
    if fitted.kind != "text" or "tensorflow" in sys.modules:
        yield (encode(fitted, chunk) for chunk in chunks)
        return
    # fork (Linux) shares the imports already made and starts in milliseconds; spawn elsewhere
    start = "fork" if sys.platform == "linux" else "spawn"
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context(start))
    try:
        futures = [pool.submit(encode, fitted, chunk) for chunk in chunks]
        yield (future.result() for future in futures)
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


def make_rows(names: list[str], outputs: np.ndarray, document: dict[str, Any], top_k: int, model_path: Path, warn: Warn) -> list[dict[str, Any]]:
    """One dict per input: input, label, probability (and `top`, the top_k best), or input and value."""
    if document.get("task") == "regression":
        return [{"input": name, "value": float(value)} for name, value in zip(names, outputs[:, 0])]
    class_names = list(document.get("class_names") or [])
    probabilities = class_probabilities(outputs, class_names, model_path)
    if probabilities.min() < -1e-6 or probabilities.max() > 1 + 1e-6 or (probabilities.shape[1] > 2 and not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)):
        warn(f"{model_path}: the model's outputs are not probabilities (its last layer is not softmax or sigmoid); 'probability' holds the raw output")
    k = min(top_k, len(class_names))
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    rows = []
    for name, order, p in zip(names, best, probabilities):
        row: dict[str, Any] = {"input": name, "label": class_names[order[0]], "probability": round(float(p[order[0]]), 6)}
        if top_k > 1:
            row["top"] = [{"label": class_names[c], "probability": round(float(p[c]), 6)} for c in order]
        rows.append(row)
    return rows


# --- output files --------------------------------------------------------------------------


def check_output_path(path: Path) -> None:
    """Refuse an output file kexp cannot write before any work is done."""
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise KexpError(f"{path}: unknown output format '{path.suffix}'; name the file .jsonl (JSON lines) or .csv")
    if not path.parent.is_dir():
        raise KexpError(f"{path}: folder {path.parent} does not exist")


def write_predictions(rows: list[dict[str, Any]], path: Path | str) -> None:
    """Rows as JSON lines (.jsonl) or CSV (.csv, `top` flattened to label_1, probability_1, ...), written atomically."""
    from kexp.rundir import write_text_atomic

    path = Path(path)
    check_output_path(path)
    if path.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        text = csv_text(rows)
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise KexpError(f"{path}: cannot write the predictions: {exc.strerror}") from None


def csv_text(rows: list[dict[str, Any]]) -> str:
    flat = [flatten_row(row) for row in rows]
    header = list(dict.fromkeys(key for row in flat for key in row))
    out = io.StringIO()
    writer = csvlib.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


def flatten_row(row: dict[str, Any]) -> dict[str, Any]:
    flat = {key: value for key, value in row.items() if key != "top"}
    for i, pair in enumerate(row.get("top", []), 1):
        flat[f"label_{i}"], flat[f"probability_{i}"] = pair["label"], pair["probability"]
    return flat
