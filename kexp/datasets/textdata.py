"""Shared by the text readers: tokenize (or reuse the cache), then describe the corpus as RawData."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kexp.datasets.base import RawData
from kexp.preprocessing.text import TextPreprocessor
from kexp.registry import Options
from kexp.text import Corpus, TextOptions, cache_path, load_corpus, make_tokenizer, save_corpus, tokenize_corpus

# A reader returns the raw texts in a fixed order and per-document arrays
# ("labels" at least; imdb adds "is_test"), which are cached with the tokens.
TextReader = Callable[[], tuple[list[str], dict[str, np.ndarray]]]

# Reader options that change neither the tokens nor the documents' order or labels: the file
# (`path`) is keyed by its resolved path, size and mtime, `text` by its tokenization options,
# and the split is made later. Every other option is keyed, so a new one is safe by default.
NOT_TOKEN_OPTIONS = {"path", "text", "split", "test_fraction"}


def reader_key(options: Options) -> dict[str, Any]:
    """The reader's options that decide what each document is, for the token cache key."""
    return options.model_dump(mode="json", exclude=NOT_TOKEN_OPTIONS)


def tokenized_corpus(
    kind: str, files: list[Path], options: TextOptions, read: TextReader, reader: dict[str, Any] | None = None
) -> tuple[Corpus, dict[str, np.ndarray], bool]:
    """(corpus, per-document arrays, came_from_cache); cached by files, `reader` options and tokenization options."""
    cached = cache_path(kind, files, options, reader)
    if cached is not None and cached.is_file():
        corpus, arrays = load_corpus(cached)
        return corpus, arrays, True
    texts, arrays = read()
    corpus = tokenize_corpus(texts, make_tokenizer(options), total=len(texts))
    if cached is not None:
        save_corpus(cached, corpus, **arrays)
    return corpus, arrays, False


def text_data(
    corpus: Corpus, labels: np.ndarray, class_names: list[str], options: TextOptions, files: list[Path], from_cache: bool, **split: Any
) -> RawData:
    """The corpus as RawData with an unfitted TextPreprocessor; `split` is is_test, or test_fraction and stratify."""
    lengths = corpus.lengths()
    return RawData(
        inputs=corpus,
        labels=np.asarray(labels, dtype=np.int32),
        class_names=class_names,
        preprocessor=TextPreprocessor(options),
        files=files,
        test_optional=False,  # every text dataset's test_fraction is > 0
        # Facts about the corpus itself; the vocabulary's size belongs to the fitted preprocessing.
        summary={
            "tokens_from_cache": from_cache,
            "distinct_tokens": len(corpus.tokens),
            "mean_tokens_per_document": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
        },
        **split,
    )
