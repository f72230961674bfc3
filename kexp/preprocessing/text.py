"""The `text` kind (imdb, sms_spam, text_csv): a vocabulary fitted on the training documents, then
an encoding of each document:

    multi_hot  uint8   1 where a vocabulary word occurs
    count      uint16  occurrences per word
    tfidf      float32 count x idf (idf fitted on train, Keras' formula)
    sequence   int32   word ids padded/truncated to max_length (0 padding, 1 unknown word)

`TextPreprocessor(options).fit(corpus, train_rows)` gives a `FittedText`; its state (the
tokenization options, vocabulary and idf) encodes new raw text exactly as the training text
was encoded, without a Python loop per document or a float64 matrix. New raw inputs for
predict are literal strings, or files of one example per line. Tokenizing is kexp.text's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kexp.errors import DataError
from kexp.preprocessing.inputs import Source, Warn
from kexp.preprocessing.kinds import preprocessing_kind
from kexp.text import UNKNOWN, Corpus, TextOptions, make_tokenizer, tokenize_corpus

# --- vocabulary and encodings ---------------------------------------------------------------


def token_positions(corpus: Corpus, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, position): for each token of the selected documents, its row in `docs` and its index in corpus.ids."""
    docs = np.asarray(docs, dtype=np.int64)
    starts = corpus.offsets[docs]
    lengths = corpus.offsets[docs + 1] - starts
    row = np.repeat(np.arange(len(docs), dtype=np.int32), lengths)
    if len(docs) and np.all(np.diff(docs) == 1):  # a contiguous block (e.g. an official split): no gather needed
        return row, np.arange(starts[0], starts[0] + lengths.sum())
    first_of_row = np.cumsum(lengths) - lengths
    position = np.arange(int(lengths.sum())) + np.repeat(starts - first_of_row, lengths)
    return row, position


def fit_vocabulary(corpus: Corpus, train_docs: np.ndarray, num_words: int) -> list[str]:
    """The num_words most frequent tokens of the training documents (ties: alphabetical)."""
    _, position = token_positions(corpus, train_docs)
    counts = np.bincount(corpus.ids[position], minlength=len(corpus.tokens))
    seen = np.flatnonzero(counts)
    names = np.array(corpus.tokens, dtype=object)[seen]
    order = np.lexsort((names.astype(str), -counts[seen]))
    return [corpus.tokens[i] for i in seen[order[:num_words]]]


def column_lookup(corpus: Corpus, vocabulary: list[str]) -> np.ndarray:
    """For each corpus token id, its vocabulary column, or -1 when out of vocabulary."""
    column = {word: i for i, word in enumerate(vocabulary)}
    return np.array([column.get(t, -1) for t in corpus.tokens], dtype=np.int32)


def fit_idf(corpus: Corpus, train_docs: np.ndarray, columns: np.ndarray, size: int) -> np.ndarray:
    """Keras' TF-IDF weight log(1 + N / (1 + document frequency)), from the training documents."""
    presence = encode_bag(corpus, train_docs, columns, size, "multi_hot")
    df = presence.sum(axis=0, dtype=np.int64)
    return np.log1p(len(train_docs) / (1.0 + df)).astype(np.float32)


def encode_bag(corpus: Corpus, docs: np.ndarray, columns: np.ndarray, size: int, encoding: str, idf: np.ndarray | None = None) -> np.ndarray:
    """Bag-of-words matrix [len(docs), size] for multi_hot, count or tfidf."""
    row, position = token_positions(corpus, docs)
    col = columns[corpus.ids[position]]
    keep = col >= 0
    row, col = row[keep], col[keep]
    if encoding == "multi_hot":
        out = np.zeros((len(docs), size), dtype=np.uint8)
        out[row, col] = 1
        return out
    cells, counts = np.unique(row.astype(np.int64) * size + col, return_counts=True)
    out = np.zeros((len(docs), size), dtype=np.uint16 if encoding == "count" else np.float32)
    out.flat[cells] = np.minimum(counts, np.iinfo(np.uint16).max) if encoding == "count" else counts
    if encoding == "tfidf":
        out *= idf
    return out


def encode_sequences(corpus: Corpus, docs: np.ndarray, columns: np.ndarray, max_length: int) -> np.ndarray:
    """Word ids (column + 2; 1 for unknown words, 0 padding) of each document's first max_length tokens."""
    row, position = token_positions(corpus, docs)
    first = np.repeat(corpus.offsets[docs], corpus.lengths()[docs])
    slot = position - first
    keep = slot < max_length
    out = np.zeros((len(docs), max_length), dtype=np.int32)
    col = columns[corpus.ids[position[keep]]]
    out[row[keep], slot[keep]] = np.where(col >= 0, col + 2, UNKNOWN)
    return out


@dataclass
class TextPreprocessor:
    """Unfitted text preprocessing: the options; `fit` learns the vocabulary (and idf) from training documents."""

    options: TextOptions

    def fit(self, corpus: Corpus, train_rows: np.ndarray) -> FittedText:
        return fit_text(corpus, train_rows, self.options)


@preprocessing_kind("text")
@dataclass
class FittedText:
    """What a run saves to encode new text exactly as its training data was encoded."""

    options: TextOptions
    vocabulary: list[str]
    idf: list[float] | None = None
    kind: ClassVar[str]
    # NLTK, WordNet and tokenizing take seconds: a worker does them while TensorFlow starts (kexp.reuse.predict)
    encodes_in_worker: ClassVar[bool] = True

    def input_shape(self) -> tuple[int, ...]:
        return (self.options.max_length,) if self.options.encoding == "sequence" else (len(self.vocabulary),)

    def transform(self, corpus: Corpus, rows: np.ndarray | None = None) -> np.ndarray:
        """Model inputs for the documents `rows` of a tokenized corpus (None: all of them)."""
        docs = np.arange(len(corpus)) if rows is None else np.asarray(rows, dtype=np.int64)
        columns = column_lookup(corpus, self.vocabulary)
        if self.options.encoding == "sequence":
            return encode_sequences(corpus, docs, columns, self.options.max_length)
        idf = np.array(self.idf, dtype=np.float32) if self.idf is not None else None
        return encode_bag(corpus, docs, columns, len(self.vocabulary), self.options.encoding, idf)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Raw strings -> model inputs, with the saved options and vocabulary."""
        return self.transform(tokenize_corpus(texts, make_tokenizer(self.options), progress=False))

    def read_examples(self, inputs: Sequence[str], layout: Any, warn: Warn) -> Iterator[tuple[Source, str]]:
        return text_examples(inputs, warn)

    def stack(self, examples: list[str]) -> list[str]:
        return examples

    def encode(self, examples: list[str]) -> np.ndarray:
        return self.encode_texts(list(examples))

    @classmethod
    def sample_inputs(cls, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype, state: dict[str, Any],
                      id_limit: Callable[[int], int]) -> np.ndarray:
        """Rows like encoded text, for export's check: word ids the model can look up (`id_limit` of the
        vocabulary's ids) for sequences, else 0/1 bags of words."""
        if (state.get("options") or {}).get("encoding") == "sequence":
            return rng.integers(0, id_limit(len(state.get("vocabulary", [])) + 2), size=shape).astype(dtype)
        return rng.integers(0, 2, size=shape).astype(dtype)

    def state(self) -> dict[str, Any]:
        return {"options": self.options.model_dump(mode="json"), "vocabulary": self.vocabulary, "idf": self.idf}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FittedText:
        """Rebuild from `state()`; ValueError (pydantic's included) names what is missing or inconsistent."""
        missing = [key for key in ("options", "vocabulary") if key not in state]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        options = TextOptions.model_validate(state["options"])
        vocabulary, idf = state["vocabulary"], state.get("idf")
        if not isinstance(vocabulary, list) or not all(isinstance(word, str) for word in vocabulary):
            raise ValueError("vocabulary must be a list of strings")
        if options.encoding == "tfidf" and (not isinstance(idf, list) or len(idf) != len(vocabulary)):
            raise ValueError(f"tfidf needs one idf weight per vocabulary word ({len(vocabulary)})")
        return cls(options, vocabulary, idf)


def fit_text(corpus: Corpus, train_docs: np.ndarray, options: TextOptions) -> FittedText:
    """Vocabulary (and idf) from the training documents only."""
    vocabulary = fit_vocabulary(corpus, train_docs, options.num_words)
    idf = None
    if options.encoding == "tfidf":
        idf = fit_idf(corpus, train_docs, column_lookup(corpus, vocabulary), len(vocabulary)).tolist()
    return FittedText(options, vocabulary, idf)


# --- new raw text for predict -------------------------------------------------------------------

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

