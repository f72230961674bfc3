"""New raw inputs as every kind reads them for `kexp predict`: typed sources, in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# Examples per preprocessing + model step: bounds memory (a 10,000-word count matrix of 1,024
# rows is 20 MB) and is the progress bar's step. One model call per step, not one per example.
BATCH_SIZE = 1024

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Source:
    """Where one example came from, as its output row names it: the input whole (a text, a CSV row's
    cells, an image's file), and its file and 1-based line (or .npy/IDX row); None for a literal string."""

    input: str
    file: str | None = None
    line: int | None = None


@dataclass
class RawInputs:
    """A batch of new examples as read: where each came from, and the examples for the preprocessing."""

    sources: list[Source]
    examples: Any  # list[str] (text), float32 [n, d] (table), uint8 [n, h, w] (images)


def batched(examples: Iterator[tuple[Source, Any]], stack: Callable[[list[Any]], Any], size: int = BATCH_SIZE) -> Iterator[RawInputs]:
    """(source, example) pairs gathered into batches of `size`, each batch's examples stacked by its kind."""
    sources: list[Source] = []
    parts: list[Any] = []
    for source, example in examples:
        sources.append(source)
        parts.append(example)
        if len(sources) == size:
            yield RawInputs(sources, stack(parts))
            sources, parts = [], []
    if sources:
        yield RawInputs(sources, stack(parts))
