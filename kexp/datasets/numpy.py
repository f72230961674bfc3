"""`numpy`: the user's own NumPy arrays, from an `.npz` archive or `.npy` files, examples of any shape.

    data: {name: numpy, path: digits.npz}                    # arrays x and y: test_fraction held out
    data: {name: numpy, path: digits.npz}                    # or x_train, y_train, x_test, y_test: used as is
    data: {name: numpy, path: {x: features.npy, y: labels.npy}}   # .npy files, either layout

`.npy` files and uncompressed `.npz` members (np.savez) are memory-mapped: a split reads only
its rows, so the data are never held twice. Labels are integer class ids or strings (class
names, sorted unless class_names orders them), or numbers for `task: regression`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveFloat, model_validator

from kexp.datasets.base import RawData, find_file
from kexp.datasets.csv import ClassNames
from kexp.errors import DataError
from kexp.preprocessing.arrays import ArrayRows, FittedArrays, describe_keys, file_format, npz_array, npz_members, read_npy, value_range
from kexp.registry import Options, dataset

HOLD_OUT = ("x", "y")
OFFICIAL = ("x_train", "y_train", "x_test", "y_test")
LAYOUTS = f"x and y, or {', '.join(OFFICIAL)}"


class NpyFiles(Options):
    """`path: {x: features.npy, y: labels.npy}`, or the four files of an official split."""

    x: str | None = None
    y: str | None = None
    x_train: str | None = None
    y_train: str | None = None
    x_test: str | None = None
    y_test: str | None = None

    @model_validator(mode="after")
    def _one_layout(self) -> NpyFiles:
        given = set(self.files())
        if given not in (set(HOLD_OUT), set(OFFICIAL)):
            raise ValueError(f"give .npy files for {LAYOUTS}; got {', '.join(sorted(given)) or 'none'}")
        return self

    def files(self) -> dict[str, str]:
        return {key: value for key, value in self.model_dump().items() if value is not None}


class NumpyOptions(Options):
    path: str | NpyFiles = Field(description=f"an .npz holding {LAYOUTS}; or .npy files: {{x: features.npy, y: labels.npy}} "
                                 "(or the four split keys); relative to the data directory or absolute")
    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description="share held out for testing (seeded) when the data are x and y; "
                                 "0: no test part. Data with x_test/y_test use their own split")
    stratify: bool = Field(default=True, description="keep each class's share in the test split (classification only)")
    scale: Literal["auto", "none"] | PositiveFloat = Field(default="auto", description="auto: integer arrays with values in 0-255 (pixels) are "
                                                           "divided by 255, others as stored; none: as stored; a number: divide by it")
    add_channel: bool = Field(default=False, description="append a channel axis of 1 ([n, h, w] -> [n, h, w, 1]), as the cnn model needs")
    class_names: ClassNames | None = Field(default=None, description="names of the class ids 0, 1, ... (integer labels), or the label "
                                           "strings in class-id order; default: the labels sorted")
    task: Literal["classification", "regression"] = Field(default="classification", description="regression: y holds numeric targets, one linear output")

    @model_validator(mode="after")
    def _regression_has_no_classes(self) -> NumpyOptions:
        if self.task == "regression" and self.class_names is not None:
            raise ValueError("class_names is for classification; remove it or set task: classification")
        return self

    def static_num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None

    def static_task(self) -> str:
        return self.task


@dataclass(frozen=True)
class NamedArray:
    """One array as read, with the file and the name (npz key or spec key) that messages give it."""

    path: Path
    name: str
    array: np.ndarray

    def fail(self, problem: str) -> DataError:
        return DataError(f"{self.path}: {self.name} {problem}")


def read_named_arrays(path: str | NpyFiles, data_dir: Path) -> dict[str, NamedArray]:
    """x and y, or the four official-split arrays, by their keys, from the .npz or the .npy files."""
    if isinstance(path, NpyFiles):
        return {key: NamedArray(found, key, read_npy(found)) for key, name in path.files().items() for found in [find_file(data_dir, [name], "numpy")]}
    found = find_file(data_dir, [path], "numpy")
    if file_format(found) == "npy":
        raise DataError(f"{found}: a single .npy array; give the features and labels as path: {{x: {found.name}, y: labels.npy}}")
    members = npz_members(found)
    hold_out, official = all(k in members for k in HOLD_OUT), all(k in members for k in OFFICIAL)
    if hold_out == official:
        problem = "both x/y and x_train/y_train/x_test/y_test; keep one layout" if hold_out else f"no arrays {LAYOUTS}"
        raise DataError(f"{found}: holds {problem} (the file holds {describe_keys(members)})")
    return {key: NamedArray(found, key, npz_array(found, key, members[key])) for key in (HOLD_OUT if hold_out else OFFICIAL)}


def check_features(x: NamedArray, first: NamedArray | None = None) -> None:
    """Examples of numbers with at least one feature axis ([n, d], [n, h, w], ...), shaped like the first part's."""
    array = x.array
    if array.ndim < 2:
        raise x.fail(f"has shape {list(array.shape)}; examples need a feature axis ([n, features, ...]; save one feature as [n, 1])")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.issubdtype(array.dtype, np.complexfloating):
        raise x.fail(f"holds {array.dtype} values; the model takes real numbers (integers, floats or booleans)")
    if len(array) == 0:
        raise x.fail("has no rows")
    if first is not None and array.shape[1:] != first.array.shape[1:]:
        raise x.fail(f"examples have shape {list(array.shape[1:])}, but {first.name}'s ({first.path.name}) have {list(first.array.shape[1:])}")


def labels_of(y: NamedArray, x: NamedArray) -> np.ndarray:
    """y as one label per row ([n], or [n, 1] as keras.datasets gives them), as many as x has rows."""
    labels = y.array
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        hint = " (one-hot? save y.argmax(axis=1))" if labels.ndim == 2 else ""
        raise y.fail(f"has shape {list(labels.shape)}; labels must be one per row, shape [n]{hint}")
    if len(labels) != len(x.array):
        where = "" if y.path == x.path else f" ({x.path.name})"
        raise y.fail(f"has {len(labels)} rows but {x.name}{where} has {len(x.array)}")
    return np.asarray(labels)


def class_ids(parts: list[tuple[NamedArray, np.ndarray]], class_names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """int32 class ids of every part's labels and the class names: label strings, or integer ids
    (whole-number floats too), named by class_names in order, else sorted."""
    kinds = [label_kind(y, labels) for y, labels in parts]
    if len(set(kinds)) > 1:
        raise parts[1][0].fail(f"holds {kinds[1]} labels, but {parts[0][0].name} holds {kinds[0]} labels")
    text = kinds[0] == "text"
    values = [labels.astype(str) if text else labels.astype(np.int64) for _, labels in parts]
    if class_names is None:
        distinct = np.unique(np.concatenate(values)).tolist()
        names = [str(v) for v in distinct]
    else:
        distinct, names = (list(class_names) if text else list(range(len(class_names)))), list(class_names)
    index = {value: i for i, value in enumerate(distinct)}
    ids = [lookup(y, v, index, names, text) for (y, _), v in zip(parts, values)]
    if len(names) < 2:
        raise parts[0][0].fail(f"holds a single class ({names}); need at least two")
    return np.concatenate(ids), names


def label_kind(y: NamedArray, labels: np.ndarray) -> str:
    """text (strings) or integer (ids; floats that are whole numbers count); a DataError for anything else."""
    if labels.dtype.kind in "US":
        return "text"
    if labels.dtype.kind not in "biuf":
        raise y.fail(f"holds {labels.dtype} values; class labels are integer ids or strings")
    if labels.dtype.kind == "f":
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            bad = int(np.argmin(whole))
            raise y.fail(f"row {bad + 1} holds {labels[bad]:g}, not a class id; class labels are integers or strings (numeric targets: set task: regression)")
    return "integer"


def lookup(y: NamedArray, values: np.ndarray, index: dict, names: list[str], text: bool) -> np.ndarray:
    """Each label's class id; a label outside the classes names its 1-based row."""
    ids = np.array([index.get(v, -1) for v in values.tolist()], dtype=np.int32)
    bad = np.flatnonzero(ids < 0)
    if bad.size and text:
        raise y.fail(f"row {bad[0] + 1} has label '{values[bad[0]]}', which is not one of the classes {names}")
    if bad.size:
        raise y.fail(f"row {bad[0] + 1} holds class id {values[bad[0]]}, but class_names names {len(names)} classes (ids 0-{len(names) - 1})")
    return ids


def regression_targets(y: NamedArray, labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind not in "biuf":
        raise y.fail(f"holds {labels.dtype} values; a regression target is a number")
    finite = np.isfinite(labels)
    if not finite.all():
        raise y.fail(f"row {int(np.argmin(finite)) + 1} holds {labels[int(np.argmin(finite))]}; targets must be finite numbers")
    return labels.astype(np.float32)


@dataclass(frozen=True)
class Scaling:
    """What the model's inputs are divided by, what training keeps in memory, and why (for the summary)."""

    divisor: float | None
    compact: str
    note: str


def choose_scaling(scale: str | float, parts: list[NamedArray]) -> Scaling:
    """Integer arrays within 0-255 are pixels: kept as uint8, and divided by 255 under `scale: auto`."""
    dtype = parts[0].array.dtype
    ranges = [value_range(p.path, p.name, p.array) for p in parts]  # also refuses NaN and infinity, naming the row
    integers = all(np.issubdtype(p.array.dtype, np.integer) or p.array.dtype == np.bool_ for p in parts)  # a float x_test is never cast to uint8
    pixels = integers and min(r[0] for r in ranges) >= 0 and max(r[1] for r in ranges) <= 255
    compact = "uint8" if pixels else "float32"
    if scale == "none":
        return Scaling(None, compact, f"none: {dtype} values as stored")
    if scale != "auto":
        return Scaling(float(scale), compact, f"{dtype} values divided by {float(scale):g}")
    if pixels and dtype != np.bool_:
        return Scaling(255.0, compact, f"auto: {dtype} values within 0-255 (pixels) divided by 255")
    return Scaling(None, compact, f"auto: {dtype} values as stored ({'floats' if not integers else 'integers beyond 0-255 or booleans'})")


@dataset("numpy", NumpyOptions)
def load_numpy(options: NumpyOptions, data_dir: Path, seed: int) -> RawData:
    """NumPy arrays of any shape per example: an .npz with x and y (test_fraction held out) or x_train, y_train, x_test, y_test
    (used as is), or .npy files; integer pixels scaled to [0, 1]."""
    arrays = read_named_arrays(options.path, data_dir)
    return arrays_raw_data(arrays, ArraysReading(options.class_names, options.scale, options.add_channel, options.test_fraction,
                                                 options.stratify, options.task))


@dataclass(frozen=True)
class ArraysReading:
    """How arrays become a data set: what the numpy dataset's options (or a plugin's Examples) say."""

    class_names: list[str] | None = None
    scale: str | float = "auto"
    add_channel: bool = False
    test_fraction: float = 0.2
    stratify: bool = True
    task: str = "classification"


def arrays_raw_data(arrays: dict[str, NamedArray], reading: ArraysReading, files: list[Path] | None = None) -> RawData:
    """x and y (a hold-out split) or x_train/y_train/x_test/y_test (their own split) as RawData: checked,
    labelled, scaled; the numpy dataset's reading, and what a plugin's Examples become."""
    official = "x_train" in arrays
    pairs = [(arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])] if official else [(arrays["x"], arrays["y"])]
    for x, _ in pairs:
        check_features(x, pairs[0][0] if x is not pairs[0][0] else None)
    labels = [(y, labels_of(y, x)) for x, y in pairs]
    if reading.task == "regression":
        targets, names = np.concatenate([regression_targets(y, values) for y, values in labels]), []
    else:
        targets, names = class_ids(labels, reading.class_names)
    xs = [x for x, _ in pairs]
    scaling = choose_scaling(reading.scale, xs)
    first = xs[0].array
    return RawData(
        inputs=ArrayRows(tuple(x.array for x in xs)),
        labels=targets,
        class_names=names,
        preprocessor=FittedArrays(list(first.shape[1:]), str(first.dtype), scaling.divisor, reading.add_channel, scaling.compact),
        is_test=np.repeat([False, True], [len(x.array) for x in xs]) if official else None,
        test_fraction=0.0 if official else reading.test_fraction,
        stratify=reading.stratify and reading.task == "classification",
        files=list(dict.fromkeys(a.path for a in arrays.values())) if files is None else files,
        summary={"arrays": "x_train/y_train and x_test/y_test (the data's own split; test_fraction is not used)" if official else "x/y", "scale": scaling.note},
        task=reading.task,
    )


def examples_raw_data(examples: Any, source: Path) -> RawData:
    """A plugin reader's kexp.Examples as RawData, read as the numpy dataset reads arrays; problems name
    `source` (the reader's file) and the Examples field."""
    if (examples.x_test is None) != (examples.y_test is None):
        raise DataError(f"{source}: Examples has {'x_test' if examples.x_test is not None else 'y_test'} without "
                        f"{'y_test' if examples.x_test is not None else 'x_test'}; give both, or neither (then test_fraction is held out)")
    keys = HOLD_OUT if examples.x_test is None else OFFICIAL
    values = {"x": examples.x, "y": examples.y} if examples.x_test is None else \
        {"x_train": examples.x, "y_train": examples.y, "x_test": examples.x_test, "y_test": examples.y_test}
    fields = {"x_train": "x", "y_train": "y"}  # Examples calls the training part x and y in either layout
    arrays = {key: NamedArray(source, f"Examples.{fields.get(key, key)}", np.asarray(values[key])) for key in keys}
    reading = ArraysReading(examples.class_names, examples.scale, False, examples.test_fraction)
    return arrays_raw_data(arrays, reading, [Path(f) for f in examples.files])
