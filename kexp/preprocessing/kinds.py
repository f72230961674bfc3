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
from kexp.registry import closest


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

    def transform(self, inputs: Any, rows: np.ndarray | None = None) -> np.ndarray: ...

    def read_examples(self, inputs: Sequence[str], layout: Any, warn: Warn) -> Iterator[tuple[Source, Any]]: ...

    def stack(self, examples: list[Any]) -> Any: ...

    def encode(self, examples: Any) -> np.ndarray: ...

    @classmethod
    def sample_inputs(cls, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype, state: dict[str, Any],
                      id_limit: Callable[[int], int]) -> np.ndarray: ...


class Preprocessor(Protocol):
    def fit(self, inputs: Any, train_rows: np.ndarray) -> Fitted: ...


K = TypeVar("K", bound=type)


class KindRegistry:
    """name -> Fitted class; filled by @preprocessing_kind as the kind modules are imported."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[K], K]:
        def decorate(cls: K) -> K:
            if name in self._classes:
                raise ValueError(f"preprocessing kind '{name}' is already registered by {self._classes[name].__module__}")
            cls.kind = name
            self._classes[name] = cls
            return cls

        return decorate

    def get(self, name: str) -> type:
        if name not in self._classes:
            raise KeyError(self.unknown_name_message(name))
        return self._classes[name]

    def names(self) -> list[str]:
        return sorted(self._classes)

    def unknown_name_message(self, name: str) -> str:
        close = closest(name, self.names())
        hint = f" Did you mean '{close}'?" if close else ""
        return f"Unknown preprocessing kind {name!r}.{hint} Available: {', '.join(self.names())}"


KINDS = KindRegistry()


def preprocessing_kind(name: str) -> Callable[[K], K]:
    """Register a Fitted class as the preprocessing kind `name` (the "kind" of preprocessing.json)."""
    return KINDS.register(name)


def select(inputs: Any, rows: np.ndarray | None) -> Any:
    return inputs if rows is None else inputs[rows]


def generic_inputs(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Model inputs of no particular kind: 0/1 for an integer input, else standard normal (standardized features)."""
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)
