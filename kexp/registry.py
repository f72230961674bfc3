"""Name -> component registries, filled by decorators at import time.

A YAML spec says `data: {name: imdb}`; `DATASETS.get("imdb")` returns the loader
registered with `@dataset("imdb")` together with the pydantic model of its options.
Nothing here imports TensorFlow, so listing and validating stay fast.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    """Base for every registry entry's options: unknown keys are errors, and types are strict
    (`epochs: true` is not 1, `units: 2.5` is not 2), because a coerced value is a silent change."""

    model_config = ConfigDict(extra="forbid", strict=True)

    def static_num_classes(self) -> int | None:
        """The class count these options imply before any data is read (None: only the data can say)."""
        return None

    def static_task(self) -> str:
        """classification, or regression (csv's `task` option): known from the spec alone."""
        return "classification"

    def streams_from_files(self) -> bool:
        """Whether the model's inputs are read from files batch by batch (image_folder), not held as arrays."""
        return False

    # A dataset's hold-out share and CSV layout are read by name (test_fraction, delimiter,
    # label_column) here and only here: built-ins and plugins spell those options so, and a
    # dataset that spells or fixes them otherwise overrides these methods (pima does).
    def held_out_fraction(self) -> float:
        """The share of rows the `test_fraction` option holds out for testing (0 for a dataset without one)."""
        return float(getattr(self, "test_fraction", 0.0) or 0.0)

    def table_layout(self) -> TableLayout:
        """How this dataset's CSV files place their columns, so new rows for `kexp predict` are read the same way."""
        return TableLayout(getattr(self, "delimiter", ","), getattr(self, "label_column", -1))


@dataclass(frozen=True)
class TableLayout:
    """A CSV's delimiter and label column (an index, negative from the end, or a header name)."""

    delimiter: str = ","
    label_column: int | str = -1


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable
    options: type[BaseModel]
    summary: str


T = TypeVar("T")


class NameRegistry(Generic[T]):
    """name -> item, each name registered once (a second use is a bug, named with the module that
    registered it first); an unknown name is answered with the nearest registered one."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._modules: dict[str, str] = {}

    def add(self, name: str, item: T, module: str) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered by {self._modules[name]}")
        self._items[name], self._modules[name] = item, module

    def get(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(self.unknown_name_message(name))
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def module_of(self, name: str) -> str:
        """The module that registered `name`."""
        return self._modules[name]

    def forget_module(self, module: str) -> None:
        """Unregister what `module` registered: a plugin whose source changed is imported afresh."""
        for name in [n for n, m in self._modules.items() if m == module]:
            del self._items[name], self._modules[name]

    def unknown_name_message(self, name: str) -> str:
        close = closest(name, self.names())
        hint = f" Did you mean '{close}'?" if close else ""
        # a dataset or model of the user's own comes from a plugin the spec lists, or an installed one
        plugin = " (one of your own? list its file or module under plugins:, or install its package)" if self.kind in ("dataset", "model") else ""
        return f"Unknown {self.kind} '{name}'.{hint} Available: {', '.join(self.names())}{plugin}"


class Registry(NameRegistry[Entry]):
    """Datasets or models: a builder function and its options model under each name."""

    def register(self, name: str, options: type[BaseModel]) -> Callable[[Callable], Callable]:
        """Decorator: register `fn` under `name`; a second use of a name is a bug."""

        def decorate(fn: Callable) -> Callable:
            summary = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())  # the docstring's first paragraph
            self.add(name, Entry(name, fn, options, summary), fn.__module__)
            return fn

        return decorate

    def entries(self) -> list[Entry]:
        return [self.get(n) for n in self.names()]


def closest(name: str, choices) -> str | None:
    """The choice most like `name` (difflib), or None when nothing is close: every did-you-mean uses it."""
    close = difflib.get_close_matches(str(name), sorted(str(c) for c in choices), n=1)
    return close[0] if close else None


DATASETS = Registry("dataset")
MODELS = Registry("model")


def dataset(name: str, options: type[BaseModel]) -> Callable[[Callable], Callable]:
    """Register a dataset reader: `fn(options, data_dir, seed) -> RawData` (read only; kexp/datasets/pipeline.py splits and fits)."""
    return DATASETS.register(name, options)


def model(name: str, options: type[BaseModel]) -> Callable[[Callable], Callable]:
    """Register a model builder: `fn(options, input_shape, num_outputs, task) -> keras.Model` (uncompiled)."""
    return MODELS.register(name, options)


def load_components() -> None:
    """Import every dataset and model module so their decorators run, then the installed plugins (entry points)."""
    import kexp.datasets
    import kexp.models  # noqa: F401
    from kexp.plugins import load_entry_points  # kexp.plugins imports nothing of this module at import time

    load_entry_points()
