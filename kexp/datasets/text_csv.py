"""`text_csv`: your own corpus as a CSV with a text column and a label column (any number of classes)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from kexp.datasets.base import RawData, find_file
from kexp.datasets.csv import ClassNames, class_ids, column_index, describe_column, read_rows
from kexp.datasets.textdata import reader_key, text_data, tokenized_corpus
from kexp.errors import DataError
from kexp.registry import Options, dataset
from kexp.text import TextOptions


class TextCsvOptions(Options):
    path: str = Field(description="CSV file, relative to the data directory or absolute")
    text_column: int | str = 0
    label_column: int | str = 1
    header: bool = True
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    class_names: ClassNames | None = Field(default=None, description="label values in class-id order; default: sorted")
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    text: TextOptions = Field(default_factory=TextOptions)

    def static_num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None


def read_text_csv(path: Path, options: TextCsvOptions) -> tuple[list[str], list[str], list[int], str]:
    """(texts, label strings, line numbers, the label column as messages name it)."""
    rows = read_rows(path, options.delimiter)
    if not rows:
        raise DataError(f"{path}: the file is empty")
    header = [c.strip() for c in rows[0][1]] if options.header else None
    body = rows[1:] if options.header else rows
    width = len(header) if header else len(body[0][1]) if body else 0
    text_at, label_at = (column_index(c, header, width, path) for c in (options.text_column, options.label_column))
    texts, labels, lines = [], [], []
    for number, row in body:
        if max(text_at, label_at) >= len(row):
            raise DataError(f"{path}:{number}: expected at least {max(text_at, label_at) + 1} fields, found {len(row)}")
        texts.append(row[text_at])
        labels.append(row[label_at].strip())
        lines.append(number)
    if not texts:
        raise DataError(f"{path}: no data rows")
    return texts, labels, lines, describe_column(label_at, header)


@dataset("text_csv", TextCsvOptions)
def load_text_csv(options: TextCsvOptions, data_dir: Path, seed: int) -> RawData:
    """Any labelled text corpus in a CSV file, to be split stratified by test_fraction."""
    path = find_file(data_dir, [options.path], "text_csv")
    texts, label_strings, lines, label_column = read_text_csv(path, options)
    labels, class_names = class_ids(label_strings, lines, options.class_names, path, label_column)
    # The labels are checked on every read, so only the tokens come from the cache.
    corpus, _, cached = tokenized_corpus("text_csv", [path], options.text, lambda: (texts, {"labels": labels}), reader_key(options))
    return text_data(corpus, labels, class_names, options.text, [path], cached, test_fraction=options.test_fraction, stratify=True)
