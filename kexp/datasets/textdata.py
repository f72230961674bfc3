"""Shared by the text datasets: tokenize (or reuse the cache), split, fit, encode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from kexp.datasets.base import Dataset, Split
from kexp.text import TEXT_ARTIFACT, Corpus, TextOptions, cache_path, fit_text, load_corpus, make_tokenizer, save_corpus, tokenize_corpus

# A reader returns the raw texts in a fixed order and per-document arrays
# ("labels" at least; imdb adds "is_test"), which are cached with the tokens.
TextReader = Callable[[], tuple[list[str], dict[str, np.ndarray]]]


def tokenized_corpus(kind: str, files: list[Path], options: TextOptions, read: TextReader) -> tuple[Corpus, dict[str, np.ndarray], bool]:
    """(corpus, per-document arrays, came_from_cache); the cache is keyed by the files and tokenization options."""
    cached = cache_path(kind, files, options)
    if cached is not None and cached.is_file():
        corpus, arrays = load_corpus(cached)
        return corpus, arrays, True
    texts, arrays = read()
    corpus = tokenize_corpus(texts, make_tokenizer(options), total=len(texts))
    if cached is not None:
        save_corpus(cached, corpus, **arrays)
    return corpus, arrays, False


def build_text_dataset(
    corpus: Corpus, labels: np.ndarray, train: np.ndarray, test: np.ndarray, options: TextOptions, class_names: list[str], summary: dict
) -> Dataset:
    """Fit the vocabulary on `train` documents only, then encode both splits."""
    fitted = fit_text(corpus, train, options)
    x_train, x_test = fitted.encode_splits(corpus, [train, test])
    lengths = corpus.lengths()
    return Dataset(
        train=Split(x_train, labels[train].astype(np.int32)),
        test=Split(x_test, labels[test].astype(np.int32)) if len(test) else None,
        input_shape=fitted.input_shape(),
        num_classes=len(class_names),
        class_names=class_names,
        artifacts={TEXT_ARTIFACT: {**fitted.to_json(), "class_names": class_names}},
        summary={
            **summary,
            "vocabulary_size": len(fitted.vocabulary),
            "distinct_tokens": len(corpus.tokens),
            "mean_tokens_per_document": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
        },
    )
