"""`text_csv`: your own corpus as a CSV with a text column and a label column (any number of classes)."""

from __future__ import annotations

import csv as csvlib
from pathlib import Path

import numpy as np
from pydantic import Field

from kexp.datasets.base import Dataset, find_file, split_indices
from kexp.datasets.textdata import build_text_dataset, tokenized_corpus
from kexp.errors import DataError
from kexp.registry import dataset
from kexp.spec import Options
from kexp.text import TextOptions


class TextCsvOptions(Options):
    path: str = Field(description="CSV file, relative to the data directory or absolute")
    text_column: int | str = 0
    label_column: int | str = 1
    header: bool = True
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    class_names: list[str] | None = Field(default=None, description="label values in class-id order; default: sorted")
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    text: TextOptions = Field(default_factory=TextOptions)


def _column(spec: int | str, header: list[str] | None, path: Path) -> int:
    if isinstance(spec, int):
        return spec
    if header is None or spec not in header:
        raise DataError(f"{path}: no column named '{spec}'" + (f"; columns: {', '.join(header)}" if header else " (header: false)"))
    return header.index(spec)


def read_text_csv(path: Path, options: TextCsvOptions) -> tuple[list[str], list[str], list[int]]:
    """(texts, label strings, line numbers)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csvlib.reader(f, delimiter=options.delimiter))
    except (UnicodeDecodeError, csvlib.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from None
    header = [c.strip() for c in rows[0]] if options.header and rows else None
    text_at, label_at = _column(options.text_column, header, path), _column(options.label_column, header, path)
    texts, labels, lines = [], [], []
    for number, row in enumerate(rows, 1):
        if (header is not None and number == 1) or not any(c.strip() for c in row):
            continue
        if max(text_at, label_at) >= len(row):
            raise DataError(f"{path}:{number}: expected at least {max(text_at, label_at) + 1} fields, found {len(row)}")
        texts.append(row[text_at])
        labels.append(row[label_at].strip())
        lines.append(number)
    if not texts:
        raise DataError(f"{path}: no data rows")
    return texts, labels, lines


@dataset("text_csv", TextCsvOptions)
def load_text_csv(options: TextCsvOptions, data_dir: Path, seed: int) -> Dataset:
    """Any labelled text corpus in a CSV file; stratified train/test split."""
    path = find_file(data_dir, [options.path], "text_csv")
    texts, label_strings, lines = read_text_csv(path, options)
    class_names = options.class_names or sorted(set(label_strings))
    index = {name: i for i, name in enumerate(class_names)}
    for label, line in zip(label_strings, lines):
        if label not in index:
            raise DataError(f"{path}:{line}: label '{label}' is not one of the classes {class_names}")
    if len(class_names) < 2:
        raise DataError(f"{path}: found a single class {class_names}; need at least two")
    labels = np.array([index[label] for label in label_strings], dtype=np.int32)
    corpus, _, cached = tokenized_corpus("text_csv", [path], options.text, lambda: (texts, {"labels": labels}))
    train, test = split_indices(labels, options.test_fraction, seed, stratify=True)
    return build_text_dataset(corpus, labels, train, test, options.text, class_names, {"files": [str(path)], "tokens_from_cache": cached})
