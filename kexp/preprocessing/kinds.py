"""The registry of preprocessing kinds: the name a run's preprocessing.json gives ("table",
"images", "text") -> the class that loads that preprocessing and reads new raw inputs for it.

    @preprocessing_kind("table")
    class FittedTable: ...          # from_state, state, transform, read_examples, stack, encode

A kind is registered once, at import time; a second class under the same name is refused, and
an unknown name is answered with the nearest registered one, as datasets and models are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

from kexp.preprocessing.inputs import Source, Warn
from kexp.registry import NameRegistry


class Fitted(Protocol):
    """Preprocessing fitted on a run's training rows: it encodes training data and new raw inputs
    alike, saves itself as a JSON-able state, and reads new raw inputs for `kexp predict`."""

    kind: ClassVar[str]
    # Whether encoding a batch costs enough (text's tokenizing) to run in a worker while TensorFlow starts.
    encodes_in_worker: ClassVar[bool]

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Fitted: ...

    def state(self) -> dict[str, Any]: ...

    def input_shape(self) -> tuple[int, ...]: ...

    # np.ndarray, or image_files.ImageFiles for a kind whose inputs stream from files (Split.x either way)
    def transform(self, inputs: Any, rows: np.ndarray | None = None) -> Any: ...

    def read_examples(self, inputs: Sequence[str], layout: Any, warn: Warn) -> Iterator[tuple[Source, Any]]: ...

    def stack(self, examples: list[Any]) -> Any: ...

    def encode(self, examples: Any) -> np.ndarray: ...

    @classmethod
    def sample_inputs(cls, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype, state: dict[str, Any],
                      id_limit: Callable[[int], int]) -> np.ndarray: ...


class Preprocessor(Protocol):
    def fit(self, inputs: Any, train_rows: np.ndarray) -> Fitted: ...


K = TypeVar("K", bound=type)


KINDS: NameRegistry[type] = NameRegistry("preprocessing kind")  # filled as the kind modules are imported


def preprocessing_kind(name: str) -> Callable[[K], K]:
    """Register a Fitted class as the preprocessing kind `name` (the "kind" of preprocessing.json)."""

    def decorate(cls: K) -> K:
        KINDS.add(name, cls, cls.__module__)
        cls.kind = name
        return cls

    return decorate


class StackedArrays:
    """For kinds whose new examples are arrays: a batch is their stack, encoded as training rows are."""

    def stack(self, examples: list[np.ndarray]) -> np.ndarray:
        return np.stack(examples)

    def encode(self, examples: np.ndarray) -> np.ndarray:
        return self.transform(examples)


def select(inputs: Any, rows: np.ndarray | None) -> Any:
    return inputs if rows is None else inputs[rows]


def generic_inputs(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Model inputs of no particular kind: 0/1 for an integer input, else standard normal (standardized features)."""
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)
