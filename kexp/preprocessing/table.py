"""The `table` kind (csv, pima, synthetic): numeric features, standardized when asked.

Fitted on the training rows (mean and std), saved as {"feature_names", "mean", "std"}. New
raw inputs for predict are CSV files of the feature columns: a header row is matched to the
run's feature names (case and punctuation ignored, as the csv reader matches them), a
header-less file gives the features in order, optionally with the label column where the
run's own files had it (its TableLayout).
"""

from __future__ import annotations

import csv as csvlib
import itertools
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kexp.errors import DataError
from kexp.preprocessing.inputs import Source, Warn
from kexp.preprocessing.kinds import StackedArrays, generic_inputs, preprocessing_kind, select
from kexp.registry import TableLayout  # the layout a dataset's options declare (Options.table_layout)


@dataclass
class TablePreprocessor:
    feature_names: list[str]
    standardize: bool = False

    def fit(self, inputs: np.ndarray, train_rows: np.ndarray) -> FittedTable:
        if not self.standardize:
            return FittedTable(self.feature_names)
        mean, std = fit_standardizer(inputs[train_rows])
        return FittedTable(self.feature_names, mean.tolist(), std.tolist())


def fit_standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the training rows (std of a constant column is 1)."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 0, std, 1.0).astype(np.float32)


@preprocessing_kind("table")
@dataclass
class FittedTable(StackedArrays):
    feature_names: list[str]
    mean: list[float] | None = None
    std: list[float] | None = None
    kind: ClassVar[str]
    encodes_in_worker: ClassVar[bool] = False

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FittedTable:
        return cls(**state)

    def state(self) -> dict[str, Any]:
        return {"feature_names": self.feature_names, "mean": self.mean, "std": self.std}

    def input_shape(self) -> tuple[int, ...]:
        return (len(self.feature_names),)

    def transform(self, inputs: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(select(inputs, rows), dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"expected rows of {len(self.feature_names)} features ({', '.join(self.feature_names)}), got shape {x.shape}")
        if self.mean is None:
            return x
        return ((x - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)).astype(np.float32)

    def read_examples(self, inputs: Sequence[str], layout: TableLayout, warn: Warn) -> Iterator[tuple[Source, np.ndarray]]:
        return table_examples([Path(i) for i in inputs], self.feature_names, layout)

    @classmethod
    def sample_inputs(cls, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype, state: dict[str, Any],
                      id_limit: Callable[[int], int]) -> np.ndarray:
        """Rows like encoded features, for export's check: standard normal, as standardized features are."""
        return generic_inputs(rng, shape, dtype)


# --- column names, as the csv reader and predict both match them ----------------------------

# Other spellings of kexp's feature names in well-known copies of a data set (Kaggle's Pima CSV).
FEATURE_ALIASES = {"pedigree": ("DiabetesPedigreeFunction",)}


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def name_key(name: str) -> str:
    """A column name as headers are matched: case, spaces and punctuation ignored (BloodPressure = blood_pressure)."""
    return re.sub(r"[\W_]+", "", name.casefold())


def header_columns(cells: list[str], names: list[str]) -> list[int | None]:
    """For each of `names`, the header cell that spells it (or a FEATURE_ALIASES spelling), else None."""
    at: dict[str, int] = {}
    for i, cell in enumerate(cells):
        at.setdefault(name_key(cell), i)
    return [next((at[name_key(s)] for s in (name, *FEATURE_ALIASES.get(name, ())) if name_key(s) in at), None) for name in names]


# --- new raw rows for predict ----------------------------------------------------------------


def table_examples(paths: list[Path], feature_names: list[str], layout: TableLayout) -> Iterator[tuple[Source, np.ndarray]]:
    """(source, float32 features) for each data row of each CSV file, read a row at a time; the
    source's input is the row's cells as written."""
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: not found; a table run predicts from CSV files of its feature columns ({', '.join(feature_names)})")
    for path in paths:
        rows = csv_rows(path, layout.delimiter)
        first = next(rows, None)
        if first is None:
            continue
        columns, header = table_columns(path, first, feature_names, layout)
        for line, row in rows if header else itertools.chain([first], rows):
            yield Source(layout.delimiter.join(row), str(path), line), parse_row(path, line, row, columns, feature_names)


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


def table_columns(path: Path, first: tuple[int, list[str]], feature_names: list[str], layout: TableLayout) -> tuple[list[int], bool]:
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
    return positional_columns(path, len(cells), feature_names, layout), False


def positional_columns(path: Path, width: int, feature_names: list[str], layout: TableLayout) -> list[int]:
    """Feature columns of a header-less file: all of them, or all but the label column the run's layout placed."""
    d = len(feature_names)
    if width == d:
        return list(range(d))
    if width != d + 1:
        raise DataError(
            f"{path}: {width} columns and no header naming the features; the run expects {d} feature columns "
            f"({', '.join(feature_names)}), optionally with its label column"
        )
    label = layout.label_column
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
