"""Text preprocessing: tokenize -> filter -> vocabulary (train split only) -> encode.

A corpus is tokenized once into integer ids over its distinct tokens (cached on disk,
keyed by the files, the reader's options and the tokenization options), the vocabulary of the `num_words`
most frequent tokens is fitted on the training documents only, and documents become
model inputs without a Python loop per document or a float64 matrix:

    multi_hot  uint8   1 where a vocabulary word occurs
    count      uint16  occurrences per word
    tfidf      float32 count x idf (idf fitted on train, Keras' formula)
    sequence   int32   word ids padded/truncated to max_length (0 padding, 1 unknown word)

`TextPreprocessor(options).fit(corpus, train_rows)` gives a `FittedText` (the protocol of
kexp/preprocessing.py). Its `state()` is everything needed to encode new raw text the same
way; the run store saves it and rebuilds it with `FittedText.from_state`.
"""

from __future__ import annotations

import array
import hashlib
import html
import json
import os
import re
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveInt

from kexp.errors import DataError
from kexp.registry import Options

CACHE_ENV = "KEXP_CACHE_DIR"
OFFLINE_ENV = "KEXP_OFFLINE"
FOLDED_NUMBER = "<longnum>"
PAD, UNKNOWN = 0, 1  # reserved ids of the `sequence` encoding
TOKEN_PATTERNS = {
    # NLTK's RegexpTokenizer and WordPunctTokenizer patterns, run with the standard library's
    # `re`: NLTK 3.10 runs every pattern through the `regex` engine under a per-call timeout,
    # which took 11.6 s for IMDB's 50,000 reviews against 3.1 s here, and its \w differs from
    # re's (x² is one token here, "x" there), so tokens would depend on the NLTK version.
    "regexp": r"[^\W_]+(?:'[^\W_]+)?",
    "wordpunct": r"\w+|[^\w\s]+",
}


class TextOptions(Options):
    lowercase: bool = True
    strip_html: bool = Field(default=True, description="remove <br /> and other tags, unescape &amp; etc.")
    tokenizer: Literal["regexp", "wordpunct", "treebank"] = "regexp"
    stopwords: bool = Field(default=False, description="drop NLTK's English stop words")
    lemmatize: bool = Field(default=False, description="NLTK WordNetLemmatizer (nouns)")
    stem: Literal["porter", "snowball"] | None = None
    alphabetic_only: bool = Field(default=False, description="keep only alphabetic tokens of 2+ letters")
    fold_numbers: bool = Field(default=False, description=f"runs of 5+ digits become one token {FOLDED_NUMBER} (kept even with alphabetic_only)")
    num_words: PositiveInt = Field(default=10000, description="vocabulary: most frequent tokens of the training split")
    encoding: Literal["multi_hot", "count", "tfidf", "sequence"] = "multi_hot"
    max_length: PositiveInt = Field(default=200, description="tokens per document for the sequence encoding")

    def tokenization_key(self) -> dict[str, Any]:
        """The options that change tokens (not the vocabulary or encoding): the cache key."""
        return self.model_dump(include={"lowercase", "strip_html", "tokenizer", "stopwords", "lemmatize", "stem", "alphabetic_only", "fold_numbers"})


# --- NLTK resources --------------------------------------------------------------------


def require_nltk_corpus(name: str) -> None:
    """Make NLTK corpus `name` available: found, else downloaded (online), else a one-line error."""
    import nltk

    for candidate in (f"corpora/{name}", f"corpora/{name}.zip"):
        try:
            nltk.data.find(candidate)
            return
        except LookupError:
            pass
    if not os.environ.get(OFFLINE_ENV) and _download_nltk(name):
        return
    raise DataError(
        f"NLTK corpus '{name}' not found (looked in {', '.join(nltk.data.path)}); install it with "
        f"`python -m nltk.downloader {name}` or point NLTK_DATA at a folder holding corpora/{name}.zip"
    )


def _download_nltk(name: str) -> bool:
    import nltk

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)  # an offline machine should fail fast, not hang
    try:
        return bool(nltk.download(name, quiet=False, raise_on_error=False))
    except Exception:
        return False
    finally:
        socket.setdefaulttimeout(previous)


def make_tokenizer(options: TextOptions) -> Callable[[str], list[str]]:
    """A function raw text -> tokens, applying every tokenization option in order."""
    if options.tokenizer == "treebank":
        import nltk

        split = nltk.tokenize.TreebankWordTokenizer().tokenize
    else:
        split = re.compile(TOKEN_PATTERNS[options.tokenizer]).findall
    stop: frozenset[str] = frozenset()
    if options.stopwords:
        import nltk  # 1.2 s to import: only for the options that need it

        require_nltk_corpus("stopwords")
        stop = frozenset(nltk.corpus.stopwords.words("english"))
    normalize = make_normalizer(options)
    tag = re.compile(r"<[^>]+>")
    long_number = re.compile(r"\d{5,}")

    def keep(token: str) -> bool:
        if token in stop:
            return False
        return not options.alphabetic_only or token == FOLDED_NUMBER or (token.isalpha() and len(token) > 1)

    filtered = bool(stop) or options.alphabetic_only or options.lemmatize or options.stem is not None

    def tokenize(text: str) -> list[str]:
        if options.strip_html:
            text = html.unescape(tag.sub(" ", text))
        if options.lowercase:
            text = text.lower()
        tokens = split(text)
        if options.fold_numbers:
            tokens = [FOLDED_NUMBER if long_number.fullmatch(t) else t for t in tokens]
        # a pass per token costs seconds over IMDB's 11.5 million tokens: only when it changes something
        return [normalize(t) for t in tokens if keep(t)] if filtered else tokens

    return tokenize


def make_normalizer(options: TextOptions) -> Callable[[str], str]:
    """Lemmatizer and/or stemmer, memoized per distinct word (WordNet look-ups are slow)."""
    if not options.lemmatize and options.stem is None:
        return lambda token: token
    import nltk

    steps = []
    if options.lemmatize:
        require_nltk_corpus("wordnet")
        steps.append(nltk.stem.WordNetLemmatizer().lemmatize)
    if options.stem == "porter":
        steps.append(nltk.stem.PorterStemmer().stem)
    elif options.stem == "snowball":
        steps.append(nltk.stem.SnowballStemmer("english").stem)
    memo: dict[str, str] = {FOLDED_NUMBER: FOLDED_NUMBER}

    def normalize(token: str) -> str:
        if token not in memo:
            out = token
            for step in steps:
                out = step(out)
            memo[token] = out
        return memo[token]

    return normalize


# --- tokenized corpus --------------------------------------------------------------------


@dataclass
class Corpus:
    """Documents as token ids: doc i is ids[offsets[i]:offsets[i+1]], ids index `tokens`."""

    tokens: list[str]
    ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def tokenize_corpus(texts: Iterable[str], tokenize: Callable[[str], list[str]], total: int | None = None, progress: bool = True) -> Corpus:
    """Tokenize every text into one Corpus, showing progress on stderr."""
    index: defaultdict[str, int] = defaultdict()
    index.default_factory = index.__len__  # a new token gets the next id, looked up in C, not Python
    ids = array.array("i")  # 4 bytes a token; a list of ints would take ~36
    offsets = array.array("q", [0])
    for text in _with_progress(texts, total, progress):
        ids.extend(map(index.__getitem__, tokenize(text)))
        offsets.append(len(ids))
    return Corpus(list(index), np.frombuffer(ids, dtype=np.int32).copy(), np.frombuffer(offsets, dtype=np.int64).copy())


def _with_progress(items: Iterable[str], total: int | None, show: bool) -> Iterable[str]:
    if not show:
        yield from items
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("tokenizing", total=total)
        for i, item in enumerate(items, 1):
            yield item
            if i % 500 == 0:
                bar.update(task, completed=i)


def file_identity(path: Path) -> tuple[str, int, int]:
    """(path, size, newest mtime) of a file, or of the files in a folder: a folder's own mtime
    does not change when a file inside it is edited (aclImdb/), so its own stat is no key."""
    if not path.is_dir():
        stat = path.stat()
        return str(path.resolve()), stat.st_size, stat.st_mtime_ns
    stats = [os.stat(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names]
    return str(path.resolve()), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


def cache_path(kind: str, files: list[Path], options: TextOptions, reader_key: dict[str, Any] | None = None) -> Path | None:
    """Where a tokenized corpus is cached; None when caching is off.

    The key is everything that changes the tokens or the documents' order and labels: the
    files (path, size, mtime), the tokenization options, and `reader_key`, the reader's own
    options that decide what a document is (text_csv's text column, delimiter, header...).
    """
    root = os.environ.get(CACHE_ENV, str(Path.home() / ".cache" / "kexp"))
    if root.lower() in {"", "none", "off"}:
        return None
    identity = [file_identity(f) for f in files]
    key = json.dumps(
        {"kind": kind, "files": identity, "options": options.tokenization_key(), "reader": reader_key or {}, "format": 3}, sort_keys=True
    )
    return Path(root) / "tokens" / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def save_corpus(path: Path, corpus: Corpus, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, ids=corpus.ids, offsets=corpus.offsets, tokens=np.array(corpus.tokens, dtype=object).astype(str), **arrays)
    os.replace(tmp, path)


def load_corpus(path: Path) -> tuple[Corpus, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    corpus = Corpus(arrays.pop("tokens").tolist(), arrays.pop("ids"), arrays.pop("offsets"))
    return corpus, arrays


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


@dataclass
class FittedText:
    """What a run saves to encode new text exactly as its training data was encoded."""

    options: TextOptions
    vocabulary: list[str]
    idf: list[float] | None = None
    kind: str = field(default="text", init=False)

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
