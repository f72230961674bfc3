"""`csv`: any numeric CSV with a class label column; `pima`: the tutorial's CSV as a preset."""

from __future__ import annotations

import csv as csvlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from kexp.datasets.base import RawData, find_file
from kexp.errors import DataError
from kexp.preprocessing.table import TablePreprocessor, header_columns, is_number
from kexp.registry import Options, TableLayout, dataset

# pandas' default NA strings (STR_NA_VALUES), and "?", the UCI repository's missing marker
# (adult, mushroom, breast-cancer...): a label spelled like one of these is a missing value,
# not a class of its own, unless the user lists it in class_names.
MISSING_LABELS = frozenset(
    {"", "?", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
     "nan", "null"}
)


def numbers_as_strings(value: Any) -> Any:
    """`class_names: [0, 1]` in YAML holds numbers; labels are matched as the file's text, and strict options refuse ints for str."""
    if isinstance(value, list):
        return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
    return value


def distinct_names(names: list[str]) -> list[str]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"class_names lists {', '.join(map(repr, repeated))} more than once; each class once, in class-id order")
    return names


ClassNames = Annotated[list[str], BeforeValidator(numbers_as_strings), AfterValidator(distinct_names)]


class CsvOptions(Options):
    path: str = Field(description="CSV file, relative to the data directory or absolute")
    header: bool | Literal["auto"] = Field(default="auto", description="auto: a header when the first row's feature columns (not the label) hold text")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    label_column: int | str = Field(default=-1, description="index (negative counts from the end) or header name")
    class_names: ClassNames | None = Field(default=None, description="label values in class-id order; default: sorted")
    standardize: bool = Field(default=False, description="scale features to mean 0, std 1 (fitted on train)")
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    stratify: bool = Field(default=True, description="keep each class's share in the test split (classification only)")
    task: Literal["classification", "regression"] = Field(default="classification", description="regression: a numeric target, one linear output")

    @model_validator(mode="after")
    def _regression_has_no_classes(self) -> CsvOptions:
        if self.task == "regression" and self.class_names is not None:
            raise ValueError("class_names is for classification; a regression target is a number (remove class_names or set task: classification)")
        return self

    def static_num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None

    def static_task(self) -> str:
        return self.task


@dataclass
class Table:
    """A numeric CSV as read: features, class ids, and how its first row was taken."""

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    feature_names: list[str]
    header: dict[str, Any]  # {"option", "detected", "reason"}: kept in the summary, since auto can guess wrong


def read_rows(path: Path, delimiter: str) -> list[tuple[int, list[str]]]:
    """Non-blank rows with their 1-based line numbers."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [(i, row) for i, row in enumerate(csvlib.reader(f, delimiter=delimiter), 1) if any(c.strip() for c in row)]
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save the file as UTF-8") from None
    except csvlib.Error as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from None


def column_index(column: int | str, header: list[str] | None, width: int, path: Path) -> int:
    """A column given by index (negative counts from the end) or, with a header, by name (case and punctuation ignored)."""
    if isinstance(column, str):
        (found,) = header_columns(header or [], [column])
        if found is None:
            names = ", ".join(header) if header else "none (the file has no header)"
            raise DataError(f"{path}: no column named '{column}'; columns: {names}")
        return found
    if not -width <= column < width:
        raise DataError(f"{path}: column {column} is out of range for {width} columns")
    return column % width


def describe_column(at: int, names: list[str] | None) -> str:
    """A column as the user knows it: its header name, else its index."""
    return f"'{names[at]}'" if names else str(at)


def check_labels_present(labels: list[str], lines: list[int], class_names: list[str] | None, path: Path, column: str) -> None:
    """A missing label ('', 'nan', 'NA', ... as pandas reads them) is an error, not a class, unless class_names lists it."""
    allowed = set(class_names or ())
    for value, line in zip(labels, lines):
        if value in MISSING_LABELS and value not in allowed:
            raise DataError(f"{path}:{line}: missing label ({value!r}) in column {column}; fix the file or drop the row"
                            f"{' (or list it in class_names if it is a class)' if value.strip() else ''}")


def class_ids(labels: list[str], lines: list[int], class_names: list[str] | None, path: Path, column: str) -> tuple[np.ndarray, list[str]]:
    """Label strings -> class ids, in the given class order or sorted (numerically when all are numbers).

    `column` names the label column in messages (see describe_column).
    """
    check_labels_present(labels, lines, class_names, path, column)
    if class_names is None:
        numeric = all(is_number(v) for v in labels)
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


def detect_header(header: bool | str, first: list[str], label_column: int | str) -> dict[str, Any]:
    """Whether the first row is a header, and why, for `header: true|false|auto`."""
    if isinstance(header, bool):
        return {"option": header, "detected": header, "reason": "set by the header option"}
    if isinstance(label_column, str):
        return {"option": "auto", "detected": True, "reason": f"label_column '{label_column}' is a column name"}
    # Only the feature columns count: a text label (Iris-setosa) in a header-less file is data.
    label_at = label_column % len(first) if -len(first) <= label_column < len(first) else None
    text = [c.strip() for i, c in enumerate(first) if i != label_at and c.strip() and not is_number(c)]
    if text:
        return {"option": "auto", "detected": True, "reason": f"first row's feature columns hold text ('{text[0]}')"}
    return {"option": "auto", "detected": False, "reason": "first row's feature columns are all numbers"}


def read_table(
    path: Path, header: bool | str, delimiter: str, label_column: int | str, class_names: list[str] | None, task: str = "classification"
) -> Table:
    """Features float32 [n, d], class ids int32 [n] (float32 targets for regression), class and feature names."""
    rows = read_rows(path, delimiter)
    if not rows:
        raise DataError(f"{path}: the file is empty")
    first = rows[0][1]
    decided = detect_header(header, first, label_column)
    names = [c.strip() for c in first] if decided["detected"] else None
    body = rows[1:] if decided["detected"] else rows
    if not body:
        raise DataError(f"{path}: no data rows")
    width = len(names) if names else len(body[0][1])
    if width < 2:
        guess = next((d for d in ";\t|" if d in first[0]), None) if first else None
        hint = f"; is the delimiter {guess!r}? set data.delimiter" if guess else ""
        raise DataError(f"{path}: need at least one feature column and a label column, found {width} column(s){hint}")
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
            bad = next(v for v in values if not is_number(v))
            raise DataError(f"{path}:{line}: feature value '{bad}' is not a number") from None
    if not np.isfinite(features).all():
        line = lines[int(np.argwhere(~np.isfinite(features))[0][0])]
        raise DataError(f"{path}:{line}: feature value is NaN or infinite")
    column = describe_column(label_at, names)
    y, classes = regression_targets(labels, lines, path, column) if task == "regression" else class_ids(labels, lines, class_names, path, column)
    feature_names = [n for i, n in enumerate(names) if i != label_at] if names else [f"x{i}" for i in range(width - 1)]
    return Table(features, y, classes, feature_names, decided)


def regression_targets(labels: list[str], lines: list[int], path: Path, column: str) -> tuple[np.ndarray, list[str]]:
    """Numeric targets (float32) and no class names; a missing or non-numeric target names its line."""
    check_labels_present(labels, lines, None, path, column)
    targets = np.empty(len(labels), dtype=np.float32)
    for i, (value, line) in enumerate(zip(labels, lines)):
        if not is_number(value) or not np.isfinite(float(value)):
            raise DataError(f"{path}:{line}: target '{value}' in column {column} is not a finite number (task: regression)")
        targets[i] = float(value)
    return targets, []


def table_data(table: Table, standardize: bool, test_fraction: float, stratify: bool, source: Path, task: str = "classification") -> RawData:
    """The table as raw data; the standardizer (when asked for) is fitted later, on training rows only."""
    return RawData(
        inputs=table.x,
        labels=table.y,
        class_names=table.class_names,
        preprocessor=TablePreprocessor(table.feature_names, standardize),
        test_fraction=test_fraction,
        stratify=stratify and task == "classification",
        files=[source],
        task=task,
    )


@dataset("csv", CsvOptions)
def load_csv(options: CsvOptions, data_dir: Path, seed: int) -> RawData:
    """Any CSV of numeric features with a class label column (or, task: regression, a numeric target)."""
    path = find_file(data_dir, [options.path], "csv")
    table = read_table(path, options.header, options.delimiter, options.label_column, options.class_names, options.task)
    raw = table_data(table, options.standardize, options.test_fraction, options.stratify, path, options.task)
    raw.summary["header"] = table.header
    return raw


PIMA_FILE = "pima-indians-diabetes.data.csv"
PIMA_LABEL_COLUMN = 8  # the 0/1 onset, after the 8 features
PIMA_FEATURES = ["pregnancies", "glucose", "blood_pressure", "skin_thickness", "insulin", "bmi", "pedigree", "age"]


def pima_header_order(path: Path, header: list[str]) -> list[int]:
    """The column of each Pima feature in a file's header (any order; case and punctuation ignored)."""
    found = header_columns(header, PIMA_FEATURES)
    if None in found:
        missing = [name for name, at in zip(PIMA_FEATURES, found) if at is None]
        raise DataError(f"{path}:1: the header names no column for {', '.join(missing)}; expected the features {', '.join(PIMA_FEATURES)} "
                        "(case and punctuation ignored) and the label last, or no header")
    return [int(at) for at in found]


class PimaOptions(Options):
    path: str = PIMA_FILE
    standardize: bool = False
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0, description="0: train and report on all 768 rows, as the tutorial does")

    def static_num_classes(self) -> int | None:
        return 2

    def table_layout(self) -> TableLayout:
        return TableLayout(",", PIMA_LABEL_COLUMN)


@dataset("pima", PimaOptions)
def load_pima(options: PimaOptions, data_dir: Path, seed: int) -> RawData:
    """Pima Indians diabetes: 768 rows, 8 numeric features (pregnancies, glucose, blood_pressure, skin_thickness,
    insulin, bmi, pedigree, age), then the 0/1 onset; a header row is optional (Kaggle's Pregnancies,...,Outcome is matched by name)."""
    path = find_file(data_dir, [options.path], "pima")
    table = read_table(path, "auto", ",", PIMA_LABEL_COLUMN, ["0", "1"])
    if table.x.shape[1] != len(PIMA_FEATURES):
        raise DataError(f"{path}: expected {len(PIMA_FEATURES)} feature columns and the label, found {table.x.shape[1] + 1} columns")
    if table.header["detected"]:
        table.x = table.x[:, pima_header_order(path, table.feature_names)]
    table.feature_names = PIMA_FEATURES
    return table_data(table, options.standardize, options.test_fraction, True, path)
