"""`csv`: any numeric CSV with a class label column; `pima`: the tutorial's CSV as a preset."""

from __future__ import annotations

import csv as csvlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from kexp.datasets.base import Dataset, Split, find_file, split_indices
from kexp.errors import DataError
from kexp.registry import dataset
from kexp.spec import Options


class CsvOptions(Options):
    path: str = Field(description="CSV file, relative to the data directory or absolute")
    header: bool | Literal["auto"] = "auto"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    label_column: int | str = Field(default=-1, description="index (negative counts from the end) or header name")
    class_names: list[str] | None = Field(default=None, description="label values in class-id order; default: sorted")
    standardize: bool = Field(default=False, description="scale features to mean 0, std 1 (fitted on train)")
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    stratify: bool = True


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_rows(path: Path, delimiter: str) -> list[tuple[int, list[str]]]:
    """Non-blank rows with their 1-based line numbers."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [(i, row) for i, row in enumerate(csvlib.reader(f, delimiter=delimiter), 1) if any(c.strip() for c in row)]
    except (UnicodeDecodeError, csvlib.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from None


def column_index(column: int | str, header: list[str] | None, width: int, path: Path) -> int:
    """A column given by index (negative counts from the end) or, with a header, by name."""
    if isinstance(column, str):
        if header is None or column not in header:
            names = ", ".join(header) if header else "none (the file has no header)"
            raise DataError(f"{path}: no column named '{column}'; columns: {names}")
        return header.index(column)
    if not -width <= column < width:
        raise DataError(f"{path}: column {column} is out of range for {width} columns")
    return column % width


def class_ids(labels: list[str], lines: list[int], class_names: list[str] | None, path: Path) -> tuple[np.ndarray, list[str]]:
    """Label strings -> class ids, in the given class order or sorted (numerically when all are numbers)."""
    if class_names is None:
        numeric = all(_is_number(v) for v in labels)
        values = sorted(set(labels), key=float) if numeric else sorted(set(labels))
        if numeric:  # "1" and "1.0" are one class
            canon = {v: str(int(float(v))) if float(v).is_integer() else v for v in values}
            labels = [canon[v] for v in labels]
            values = list(dict.fromkeys(canon[v] for v in values))
        class_names = values
    index = {name: i for i, name in enumerate(class_names)}
    for value, line in zip(labels, lines):
        if value not in index:
            raise DataError(f"{path}:{line}: label '{value}' is not one of the classes {class_names}")
    if len(class_names) < 2:
        raise DataError(f"{path}: the label column holds a single class ({class_names}); need at least two")
    return np.array([index[v] for v in labels], dtype=np.int32), list(class_names)


def read_table(path: Path, header: bool | str, delimiter: str, label_column: int | str, class_names: list[str] | None):
    """(features float32 [n, d], class ids int32 [n], class names, feature names) from a CSV file."""
    rows = read_rows(path, delimiter)
    if not rows:
        raise DataError(f"{path}: the file is empty")
    first = rows[0][1]
    has_header = header if isinstance(header, bool) else not all(_is_number(c) for c in first if c.strip())
    names = [c.strip() for c in first] if has_header else None
    body = rows[1:] if has_header else rows
    if not body:
        raise DataError(f"{path}: no data rows")
    width = len(names) if names else len(body[0][1])
    if width < 2:
        raise DataError(f"{path}: need at least one feature column and a label column, found {width} column(s)")
    label_at = column_index(label_column, names, width, path)
    features = np.empty((len(body), width - 1), dtype=np.float32)
    labels, lines = [], []
    for r, (line, row) in enumerate(body):
        if len(row) != width:
            raise DataError(f"{path}:{line}: expected {width} fields, found {len(row)}")
        values = [c.strip() for c in row]
        labels.append(values.pop(label_at))
        lines.append(line)
        try:
            features[r] = [float(v) for v in values]
        except ValueError:
            bad = next(v for v in values if not _is_number(v))
            raise DataError(f"{path}:{line}: feature value '{bad}' is not a number") from None
    if not np.isfinite(features).all():
        line = lines[int(np.argwhere(~np.isfinite(features))[0][0])]
        raise DataError(f"{path}:{line}: feature value is NaN or infinite")
    y, classes = class_ids(labels, lines, class_names, path)
    feature_names = [n for i, n in enumerate(names) if i != label_at] if names else [f"x{i}" for i in range(width - 1)]
    return features, y, classes, feature_names


def fit_standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the training split (std of a constant column is 1)."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 0, std, 1.0).astype(np.float32)


def build_table_dataset(x, y, classes, feature_names, standardize: bool, test_fraction: float, stratify: bool, seed: int, source: Path) -> Dataset:
    train_idx, test_idx = split_indices(y, test_fraction, seed, stratify)
    artifacts = {"features.json": {"feature_names": feature_names, "class_names": classes}}
    if standardize:
        mean, std = fit_standardizer(x[train_idx])
        x = (x - mean) / std
        artifacts["features.json"].update(mean=mean.tolist(), std=std.tolist())
    test = Split(x[test_idx], y[test_idx]) if len(test_idx) else None
    return Dataset(
        train=Split(x[train_idx], y[train_idx]),
        test=test,
        input_shape=(x.shape[1],),
        num_classes=len(classes),
        class_names=classes,
        artifacts=artifacts,
        summary={"files": [str(source)]},
    )


@dataset("csv", CsvOptions)
def load_csv(options: CsvOptions, data_dir: Path, seed: int) -> Dataset:
    """Any CSV of numeric features with a class label column."""
    path = find_file(data_dir, [options.path], "csv")
    x, y, classes, feature_names = read_table(path, options.header, options.delimiter, options.label_column, options.class_names)
    return build_table_dataset(x, y, classes, feature_names, options.standardize, options.test_fraction, options.stratify, seed, path)


PIMA_FILE = "pima-indians-diabetes.data.csv"
PIMA_FEATURES = ["pregnancies", "glucose", "blood_pressure", "skin_thickness", "insulin", "bmi", "pedigree", "age"]


class PimaOptions(Options):
    path: str = PIMA_FILE
    standardize: bool = False
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0, description="0: train and report on all 768 rows, as the tutorial does")


@dataset("pima", PimaOptions)
def load_pima(options: PimaOptions, data_dir: Path, seed: int) -> Dataset:
    """Pima Indians diabetes: 768 rows, 8 numeric features, 0/1 onset of diabetes."""
    path = find_file(data_dir, [options.path], "pima")
    x, y, classes, _ = read_table(path, False, ",", 8, ["0", "1"])
    if x.shape[1] != len(PIMA_FEATURES):
        raise DataError(f"{path}: expected {len(PIMA_FEATURES)} feature columns and the label, found {x.shape[1] + 1} columns")
    return build_table_dataset(x, y, classes, PIMA_FEATURES, options.standardize, options.test_fraction, True, seed, path)
