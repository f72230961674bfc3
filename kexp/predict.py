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

import collections
import contextlib
import csv as csvlib
import itertools
import json
import math
import multiprocessing
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kexp.datasets.csv import PIMA_LABEL_COLUMN, header_columns, is_number
from kexp.errors import DataError, KexpError, RunDirError

# Examples per preprocessing + model step: bounds memory (a 10,000-word count matrix of 1,024
# rows is 20 MB) and is the progress bar's step. One model call per step, not one per example.
BATCH_SIZE = 1024
EXCERPT_CHARS = 60
OUTPUT_FORMATS = (".jsonl", ".csv")

Progress = Callable[[int, int], None]  # (examples done, total)
Warn = Callable[[str], None]


@dataclass(frozen=True)
class Source:
    """Where one example came from, as its output row names it: the input whole (a text, a CSV row's
    cells, an image's file), and its file and 1-based line (or .npy/IDX row); None for a literal string."""

    input: str
    file: str | None = None
    line: int | None = None


@dataclass
class RawInputs:
    """A batch of new examples as read: where each came from, and the examples for the preprocessing."""

    sources: list[Source]
    examples: Any  # list[str] (text), float32 [n, d] (table), uint8 [n, h, w] (images)


Rows = list[dict[str, Any]]


def predict_run(run_dir: Path | str, inputs: Sequence[str], top_k: int = 1, progress: Progress | None = None, warn: Warn | None = None) -> Rows:
    """Predictions for raw `inputs` with a run's saved preprocessing and model, one dict per example (all in memory:
    for inputs of any size, iterate predict_batches)."""
    return [row for rows in predict_batches(run_dir, inputs, top_k, progress, warn) for row in rows]


def predict_batches(run_dir: Path | str, inputs: Sequence[str], top_k: int = 1, progress: Progress | None = None,
                    warn: Warn | None = None) -> Iterator[Rows]:
    """Predictions in input order, BATCH_SIZE examples at a time: files are read, encoded and
    predicted a batch at a time, so memory stays bounded whatever the size of the inputs.

    `progress(done, total)` is called after each batch (total None while the inputs are still
    being read) and `warn(message)` for anything the caller should show (an interrupted run's
    model, a resized image); neither prints here.
    """
    from kexp.preprocessing import from_document
    from kexp.run.files import PREPROCESSING_FILE
    from kexp.run.saved import open_run

    warn = warn or (lambda message: None)
    record = open_run(Path(run_dir))
    document = record.preprocessing
    if document.get("raw_input_unsupported"):
        raise RunDirError(f"{record.path}: cannot predict from raw inputs: {document['raw_input_unsupported']}")
    fitted = from_document(document, str(record.path / PREPROCESSING_FILE))
    for message in record.warnings:
        warn(message)
    if top_k > 1 and document.get("task") == "regression":
        warn(f"top-k {top_k} ignored: {record.path.name} is a regression run (one predicted value per input)")
    batches = first_batch_read(input_batches(fitted, inputs, record.spec, warn), inputs)
    yield from predicted_rows(record.model_path, fitted, batches, document, top_k, progress, warn)


def first_batch_read(batches: Iterator[RawInputs], inputs: Sequence[str]) -> Iterator[RawInputs]:
    """The batches, with the first one read now: a bad or empty input is reported in a second,
    before TensorFlow starts; a problem further into a large file is reported when reached."""
    first = next(batches, None)
    if first is None:
        raise DataError(f"no examples in {', '.join(inputs)} (empty files)")
    return itertools.chain([first], batches)


# --- reading inputs ------------------------------------------------------------------------


def input_batches(fitted: Any, inputs: Sequence[str], spec: Any, warn: Warn) -> Iterator[RawInputs]:
    """The inputs as the run's preprocessing kind takes them, BATCH_SIZE at a time; DataError names the file (and line)."""
    if not inputs:
        raise DataError("no inputs given")
    if fitted.kind == "text":
        examples = text_examples(inputs, warn)
    elif fitted.kind == "table":
        examples = table_examples([Path(i) for i in inputs], fitted.feature_names, spec)
    elif fitted.kind == "images":
        examples = image_examples([Path(i) for i in inputs], tuple(fitted.image_shape), warn)
    else:
        raise RunDirError(f"kexp predict does not know how to read inputs for '{fitted.kind}' preprocessing")
    return batched(examples, fitted.kind)


def batched(examples: Iterator[tuple[Source, Any]], kind: str) -> Iterator[RawInputs]:
    """(source, example) pairs gathered into batches of BATCH_SIZE."""
    sources: list[Source] = []
    parts: list[Any] = []
    for source, example in examples:
        sources.append(source)
        parts.append(example)
        if len(sources) == BATCH_SIZE:
            yield RawInputs(sources, stack(parts, kind))
            sources, parts = [], []
    if sources:
        yield RawInputs(sources, stack(parts, kind))


def stack(parts: list[Any], kind: str) -> Any:
    return parts if kind == "text" else np.stack(parts)


# An argument that ends like a file name is meant as a file: predicting on the name itself
# ("new_reviews.csv" as a review) would answer a question nobody asked.
FILE_LIKE = re.compile(r"^[^\s]+\.(txt|csv|tsv|json|jsonl|text|lst)$", re.IGNORECASE)


def text_examples(inputs: Sequence[str], warn: Warn) -> Iterator[tuple[Source, str]]:
    """(source, text) for each literal string and each non-blank line of each file, read as they come."""
    paths = [text_file(item) for item in inputs]  # every file named is checked before the first is read
    for item, path in zip(inputs, paths):
        if path is None:
            yield Source(item), item
            continue
        blank = 0
        for n, line in numbered_lines(path):
            if not line.strip():
                blank += 1
                continue
            yield Source(line, str(path), n), line
        if blank:
            warn(f"{path}: skipped {blank} blank line(s); each prediction names its file and line, so results match lines")


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


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its ending), read a line at a time."""
    n = 0
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:  # -sig: a leading byte-order mark is not part of the first line
            for n, line in enumerate(f, 1):  # noqa: B007  (n is read after the loop, for the error's line)
                yield n, line.rstrip("\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}:{n + 1}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None


def excerpt(text: str) -> str:
    return " ".join(text.split())[:EXCERPT_CHARS]


def shown_input(row: dict[str, Any]) -> str:
    """A prediction's input as a terminal table shows it: `name:line` and the input shortened to one line."""
    where = "" if row.get("file") is None else Path(row["file"]).name + ("" if row.get("line") is None else f":{row['line']}")
    text = excerpt(str(row["input"]))
    if where and (text == row["file"] or not text):
        return where
    return f"{where} {text}" if where else text


# --- tables --------------------------------------------------------------------------------


def table_examples(paths: list[Path], feature_names: list[str], spec: Any) -> Iterator[tuple[Source, np.ndarray]]:
    """(source, float32 features) for each data row of each CSV file, read a row at a time; the
    source's input is the row's cells as written."""
    delimiter = spec.data.options().get("delimiter", ",")
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: not found; a table run predicts from CSV files of its feature columns ({', '.join(feature_names)})")
    for path in paths:
        rows = csv_rows(path, delimiter)
        first = next(rows, None)
        if first is None:
            continue
        columns, header = table_columns(path, first, feature_names, spec)
        for line, row in rows if header else itertools.chain([first], rows):
            yield Source(delimiter.join(row), str(path), line), parse_row(path, line, row, columns, feature_names)


def csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV rows with the 1-based line each starts on, read a row at a time."""
    line = 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csvlib.reader(f, delimiter=delimiter)
            while True:
                line = reader.line_num + 1
                row = next(reader, None)
                if row is None:
                    return
                if any(cell.strip() for cell in row):
                    yield line, row
    except UnicodeDecodeError:
        raise DataError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8") from None
    except csvlib.Error as exc:
        raise DataError(f"{path}:{line}: not a readable CSV file: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None


def table_columns(path: Path, first: tuple[int, list[str]], feature_names: list[str], spec: Any) -> tuple[list[int], bool]:
    """(the column of each feature, whether the first row is a header): by header names, else by position."""
    cells = [cell.strip() for cell in first[1]]
    found = header_columns(cells, feature_names)
    if None not in found:
        return [int(at) for at in found], True
    expected = f"the run's features: {', '.join(feature_names)}; header names match ignoring case and punctuation"
    if any(at is not None for at in found):
        missing = [name for name, at in zip(feature_names, found) if at is None]
        raise DataError(f"{path}:{first[0]}: the header lacks the run's feature column(s) {', '.join(missing)} ({expected})")
    text = [cell for cell in cells if cell and not is_number(cell)]
    if text and len(text) >= len(cells) - 1:  # every column but perhaps a text label holds a name: a header, not data
        raise DataError(f"{path}:{first[0]}: a header row ({', '.join(cells[:4])}{', ...' if len(cells) > 4 else ''}) that names none of the run's features ({expected})")
    return positional_columns(path, len(cells), feature_names, spec), False


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


def parse_row(path: Path, line: int, row: list[str], columns: list[int], feature_names: list[str]) -> np.ndarray:
    """float32 [d]; a short row, a non-number or a NaN/infinite value names file:line and the feature."""
    width = max(columns, default=-1) + 1
    if len(row) < width:
        raise DataError(f"{path}:{line}: expected at least {width} fields, found {len(row)}")
    x = np.empty(len(columns), dtype=np.float32)
    for c, (name, at) in enumerate(zip(feature_names, columns)):
        value = row[at].strip()
        try:
            number = float(value)
        except ValueError:
            raise DataError(f"{path}:{line}: feature '{name}' is {value!r}, not a number") from None
        if not math.isfinite(number):
            raise DataError(f"{path}:{line}: feature '{name}' is {value!r}; the model needs a finite number")
        x[c] = number
    return x


# --- images --------------------------------------------------------------------------------


def image_examples(paths: list[Path], shape: tuple[int, ...], warn: Warn) -> Iterator[tuple[Source, np.ndarray]]:
    """(source, uint8 [h, w] image) from each PNG/JPEG, and from each row of .npy and IDX batches
    (its 1-based row as the line), read a block at a time."""
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: not found; an image run predicts from PNG/JPEG, .npy or IDX (*-ubyte[.gz]) files")
    for path in paths:
        if path.suffix == ".npy":
            blocks = npy_blocks(path, shape)
        elif is_idx(path):
            blocks = idx_blocks(path, shape)
        else:
            yield Source(str(path), str(path)), decode_image(path, shape, warn)
            continue
        for start, block in blocks:
            yield from ((Source(str(path), str(path), start + i + 1), image) for i, image in enumerate(block))


def npy_blocks(path: Path, shape: tuple[int, ...]) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, uint8 images) of a .npy batch, memory-mapped: only one block is in memory at a time."""
    images = check_image_shape(path, load_npy(path), shape)
    scale = pixel_scale(path, images)
    for start in range(0, len(images), BATCH_SIZE):
        yield start, pixels_as_uint8(path, images[start : start + BATCH_SIZE], scale)


def idx_blocks(path: Path, shape: tuple[int, ...]) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, images) of an IDX image file (gzip or raw), decompressed a block at a time."""
    import gzip
    import zlib

    from kexp.datasets.mnist import IMAGE_MAGIC

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or int.from_bytes(head, "big") != IMAGE_MAGIC:
                found = int.from_bytes(head, "big") if len(head) == 4 else None
                raise DataError(f"{path}: not an IDX image file (magic number {found}, expected {IMAGE_MAGIC})")
            dims = [int.from_bytes(f.read(4), "big") for _ in range(head[3])]
            if len(dims) < 2:
                raise DataError(f"{path}: an IDX file of {len(dims)}-dimensional data, not a batch of images")
            count, image = dims[0], dims[1:]
            if len(dims) == 2:  # one image [h, w], as check_image_shape accepts
                count, image = 1, dims
            if tuple(image) != shape:
                raise DataError(f"{path}: images of shape {dims} do not fit the run's {'x'.join(map(str, shape))} images")
            size = int(np.prod(image))
            for start in range(0, count, BATCH_SIZE):
                n = min(BATCH_SIZE, count - start)
                raw = f.read(n * size)
                if len(raw) != n * size:
                    raise DataError(f"{path}: header promises {count} images, the file ends after {start + len(raw) // size} (truncated or corrupt)")
                yield start, np.frombuffer(raw, dtype=np.uint8).reshape(n, *image)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot decompress: {' '.join(str(exc).split())}") from None


def is_idx(path: Path) -> bool:
    return path.name.endswith("-ubyte") or path.suffix in (".gz", ".idx")


def load_npy(path: Path) -> np.ndarray:
    """The array of a .npy file, memory-mapped where the format allows (pages are read as they are used)."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a NumPy .npy array ({' '.join(str(exc).split())})") from None


def pixel_scale(path: Path, array: np.ndarray) -> float:
    """What turns the whole array's pixels into 0-255: 1, or 255 for floats in [0, 1]; checked a block at a time."""
    if array.dtype == np.uint8:
        return 1.0
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{path}: pixels of type {array.dtype}; expected uint8 (0-255) or floats in [0, 1]")
    if array.size == 0:
        return 1.0
    low, high = math.inf, -math.inf
    for start in range(0, len(array), BATCH_SIZE):
        block = np.asarray(array[start : start + BATCH_SIZE])
        if np.issubdtype(block.dtype, np.floating) and not np.isfinite(block).all():
            raise DataError(f"{path}: pixels include NaN or infinite values")
        low, high = min(low, float(block.min())), max(high, float(block.max()))
    if low < 0 or high > 255:
        raise DataError(f"{path}: pixel values run from {low:g} to {high:g}; expected 0-255 (uint8) or floats in [0, 1]")
    return 255.0 if np.issubdtype(array.dtype, np.floating) and high <= 1.0 else 1.0


def pixels_as_uint8(path: Path, array: np.ndarray, scale: float | None = None) -> np.ndarray:
    """uint8 pixels from integers in 0-255, or floats in [0, 1] (scaled back to 0-255) or 0-255."""
    scale = pixel_scale(path, array) if scale is None else scale
    if array.dtype == np.uint8:
        return np.asarray(array)
    return np.rint(np.asarray(array) * scale).astype(np.uint8)


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


def predicted_rows(model_path: Path, fitted: Any, batches: Iterator[RawInputs], document: dict[str, Any], top_k: int,
                   progress: Progress | None, warn: Warn) -> Iterator[Rows]:
    """The rows of each batch: its inputs transformed (never refitted) and predicted in one model call."""
    from kexp.models.saving import load_model
    from kexp.training import start_tensorflow

    warn_once = once(warn)  # a model-wide warning (outputs not probabilities) is said once, not per batch
    done = 0
    with encoded_batches(fitted, batches) as encoded:
        start_tensorflow()  # while the first batches are tokenized in the worker, if any
        model = load_model(model_path)
        for raw, x in encoded:
            outputs = np.asarray(model.predict_on_batch(x), dtype=np.float32).reshape(len(raw.sources), -1)
            rows = make_rows(raw.sources, outputs, document, top_k, model_path, warn_once)
            done += len(rows)
            if progress is not None:
                progress(done, None)
            yield rows


def once(warn: Warn) -> Warn:
    said: set[str] = set()

    def warn_once(message: str) -> None:
        if message not in said:
            said.add(message)
            warn(message)

    return warn_once


def encode(fitted: Any, chunk: Any) -> np.ndarray:
    return fitted.encode_texts(list(chunk)) if fitted.kind == "text" else fitted.transform(chunk)


# Batches tokenized ahead of the model in the worker: enough to keep it busy, few enough that
# memory stays bounded (a 1,024 x 10,000 count matrix is 40 MB).
LOOKAHEAD = 2


@contextlib.contextmanager
def encoded_batches(fitted: Any, batches: Iterator[RawInputs]) -> Iterator[Iterator[tuple[RawInputs, np.ndarray]]]:
    """(batch, model inputs) for each batch, in order.

    Text is tokenized in a worker process while this one starts TensorFlow: both are fixed
    costs of seconds (NLTK and WordNet ~5 s, TensorFlow ~7 s of CPU here), so on two cores a
    1,000-line file answers in ~8 s instead of ~12. The first LOOKAHEAD batches are handed to
    the worker on entry, before the caller starts TensorFlow. Once TensorFlow is loaded (a later
    call in the same process) there is nothing to overlap, and forking it would not be safe: no worker.
    """
    if fitted.kind != "text" or "tensorflow" in sys.modules:
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


def make_rows(sources: list[Source], outputs: np.ndarray, document: dict[str, Any], top_k: int, model_path: Path, warn: Warn) -> list[dict[str, Any]]:
    """One dict per input: input, file, line, then label, probability (and `top`, the top_k best), or value."""
    if document.get("task") == "regression":
        return [{**source_fields(source), "value": float(value)} for source, value in zip(sources, outputs[:, 0])]
    class_names = list(document.get("class_names") or [])
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
