"""Text for the text datasets: tokenize -> a corpus of token ids, cached on disk.

A corpus is tokenized once into integer ids over its distinct tokens (cached on disk,
keyed by the files, the reader's options and the tokenization options), so the text kind
(kexp/preprocessing/text.py) fits its vocabulary and encodes documents from ids, without a
Python loop per document. NLTK is imported only for the options that need it. Progress goes
out as `progress` events (kexp.events.report), never to a console of its own.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveInt

from kexp.errors import DataError
from kexp.events import report
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
    """Tokenize every text into one Corpus; with `progress`, reported as "tokenizing" progress events."""
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
    report("progress", task="tokenizing", done=0, total=total)
    try:
        for i, item in enumerate(items, 1):
            yield item
            if i % 500 == 0:
                report("progress", task="tokenizing", done=i, total=total)
    finally:
        report("progress_end", task="tokenizing")


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
