"""Fitted preprocessing: fitted on the training part only, reapplied to anything later.

A dataset's reader returns an unfitted preprocessor with its raw data. The pipeline calls
`fit(inputs, train_rows)`, which returns a fitted preprocessor; its `transform(inputs, rows)`
turns raw inputs (a float32 feature table, uint8 images, or a tokenized text Corpus) into
arrays for Keras. A fitted preprocessor is saved as data, never by opening files itself:
`state()` gives a JSON-able dict and `from_document` rebuilds it from what the run store
read back, so `kexp evaluate` and `kexp predict` transform without refitting.

    table   FittedTable   feature names; mean and std when standardize (fitted on train)
    images  FittedImages  image shape, scale to [0, 1], flatten (nothing to fit)
    text    kexp.text.FittedText   tokenization options, vocabulary, idf (fitted on train)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kexp.errors import RunDirError

# Bumped when the saved layout changes; a run saved by a newer kexp is refused, not misread.
FORMAT_VERSION = 1


class Fitted(Protocol):
    kind: str

    def input_shape(self) -> tuple[int, ...]: ...

    def transform(self, inputs: Any, rows: np.ndarray | None = None) -> np.ndarray: ...

    def state(self) -> dict[str, Any]: ...


class Preprocessor(Protocol):
    def fit(self, inputs: Any, train_rows: np.ndarray) -> Fitted: ...


def select(inputs: Any, rows: np.ndarray | None) -> Any:
    return inputs if rows is None else inputs[rows]


# --- tables (csv, pima, synthetic) -------------------------------------------------------


@dataclass
class TablePreprocessor:
    feature_names: list[str]
    standardize: bool = False

    def fit(self, inputs: np.ndarray, train_rows: np.ndarray) -> FittedTable:
        if not self.standardize:
            return FittedTable(self.feature_names)
        mean, std = fit_standardizer(inputs[train_rows])
        return FittedTable(self.feature_names, mean.tolist(), std.tolist())


def fit_standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the training rows (std of a constant column is 1)."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 0, std, 1.0).astype(np.float32)


@dataclass
class FittedTable:
    feature_names: list[str]
    mean: list[float] | None = None
    std: list[float] | None = None
    kind: str = "table"

    def input_shape(self) -> tuple[int, ...]:
        return (len(self.feature_names),)

    def transform(self, inputs: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(select(inputs, rows), dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"expected rows of {len(self.feature_names)} features ({', '.join(self.feature_names)}), got shape {x.shape}")
        if self.mean is None:
            return x
        return ((x - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)).astype(np.float32)

    def state(self) -> dict[str, Any]:
        return {"feature_names": self.feature_names, "mean": self.mean, "std": self.std}


# --- images (mnist) ------------------------------------------------------------------------


@dataclass
class FittedImages:
    """uint8 greyscale images -> float32 (scaled to [0, 1]), flattened or with a channel axis."""

    image_shape: list[int]
    scale: bool = True
    flatten: bool = True
    kind: str = "images"

    def fit(self, inputs: np.ndarray, train_rows: np.ndarray) -> FittedImages:
        return self  # pixel scaling has nothing to learn from the data

    def input_shape(self) -> tuple[int, ...]:
        return (int(np.prod(self.image_shape)),) if self.flatten else (*self.image_shape, 1)

    def transform(self, inputs: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        x, divisor = self.transform_compact(inputs, rows)
        x = x.astype(np.float32)
        if divisor is not None:
            x /= divisor
        return x

    def transform_compact(self, inputs: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, float | None]:
        """The images shaped for the model but still uint8 (a quarter of float32's memory), and what
        to divide them by; training divides per batch, giving the same floats as transform."""
        images = select(inputs, rows)
        if tuple(images.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"expected images of {'x'.join(map(str, self.image_shape))} pixels, got shape {images.shape[1:]}")
        x = images.reshape(len(images), -1) if self.flatten else images[..., np.newaxis]
        return x, 255.0 if self.scale else None

    def state(self) -> dict[str, Any]:
        return {"image_shape": self.image_shape, "scale": self.scale, "flatten": self.flatten}


# --- saving and loading, as data -----------------------------------------------------------


def to_document(fitted: Fitted, task: str, class_names: list[str], positive_class: str | None, raw_input: str | None) -> dict[str, Any]:
    """Everything a later command needs to turn raw inputs into model inputs and outputs into labels."""
    return {
        "format": FORMAT_VERSION,
        "kind": fitted.kind,
        "task": task,
        # class ids in order: output unit i (softmax), or the sigmoid's 0 and 1, is class_names[i]
        "class_names": class_names,
        "positive_class": positive_class,
        # why new raw inputs cannot be encoded (a corpus read as ids, not text); None: they can
        "raw_input_unsupported": raw_input,
        "state": fitted.state(),
    }


def from_document(document: dict[str, Any], source: str) -> Fitted:
    """The fitted preprocessor a run saved; `source` names the file in errors."""
    version = document.get("format")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RunDirError(f"{source}: preprocessing format {version!r} is newer than this kexp reads ({FORMAT_VERSION}); upgrade kexp")
    kind, state = document.get("kind"), document.get("state") or {}
    try:
        if kind == "table":
            return FittedTable(**state)
        if kind == "images":
            return FittedImages(**state)
        if kind == "text":
            from kexp.text import FittedText

            return FittedText.from_state(state)
    except (TypeError, ValueError) as exc:
        raise RunDirError(f"{source}: damaged {kind} preprocessing ({exc})") from None
    raise RunDirError(f"{source}: unknown preprocessing kind {kind!r}")
