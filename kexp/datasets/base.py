"""What every dataset loader returns, and the helpers loaders share.

A loader is `fn(options, data_dir, seed) -> Dataset`. It reads files under the data
directory, checks what it read, splits train/test, fits any preprocessing on the
training split only, and returns arrays ready for `model.fit`. Labels are always
integer class ids; training turns them into one-hot vectors when the loss needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kexp.errors import DataError

DATA_DIR_ENV = "KEXP_DATA_DIR"
DEFAULT_DATA_DIR = Path("data")


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    train: Split
    test: Split | None
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]
    # Files written to <run>/preprocessing/ (name -> JSON-able object), so later
    # commands can apply the fitted preprocessing to new raw inputs.
    artifacts: dict[str, Any] = field(default_factory=dict)
    # Facts shown to the user and saved in metrics.json (sizes, class balance, files read).
    summary: dict[str, Any] = field(default_factory=dict)


def resolve_data_dir(cli_value: Path | None = None) -> Path:
    """--data-dir, then $KEXP_DATA_DIR, then ./data."""
    if cli_value is not None:
        return Path(cli_value)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return DEFAULT_DATA_DIR


def find_file(data_dir: Path, candidates: list[str], dataset: str) -> Path:
    """The first candidate that exists under data_dir; else a DataError saying where we looked."""
    for name in candidates:
        path = Path(name) if Path(name).is_absolute() else data_dir / name
        if path.is_file():
            return path
    looked = ", ".join(str(data_dir / c) if not Path(c).is_absolute() else c for c in candidates)
    raise DataError(
        f"{dataset}: data file not found (looked for {looked}). Put it there, point --data-dir or "
        f"{DATA_DIR_ENV} at the folder that holds it, or run `kexp data fetch {dataset}`."
    )


def class_balance(y: np.ndarray, class_names: list[str]) -> dict[str, int]:
    counts = np.bincount(y.astype(np.int64), minlength=len(class_names))
    return {name: int(n) for name, n in zip(class_names, counts)}


def split_indices(
    labels: np.ndarray, test_fraction: float, seed: int, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded shuffled (train, test) index arrays; stratified keeps each class's share."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    if test_fraction <= 0:
        return np.arange(n), np.array([], dtype=np.int64)
    if not stratify:
        order = rng.permutation(n)
        n_test = int(round(n * test_fraction))
        return np.sort(order[n_test:]), np.sort(order[:n_test])
    test_parts = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test_parts.append(members[: int(round(len(members) * test_fraction))])
    test = np.sort(np.concatenate(test_parts))
    train = np.setdiff1d(np.arange(n), test)
    return train, test


def summarize(dataset: Dataset) -> dict[str, Any]:
    """Sizes and class balance of each split, for the console and metrics.json."""
    summary = {"train_size": len(dataset.train), "train_classes": class_balance(dataset.train.y, dataset.class_names)}
    if dataset.test is not None:
        summary["test_size"] = len(dataset.test)
        summary["test_classes"] = class_balance(dataset.test.y, dataset.class_names)
    summary.update(dataset.summary)
    return summary
