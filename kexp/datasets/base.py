"""What every dataset reader returns, and the helpers readers share.

A reader is `fn(options, data_dir, seed) -> RawData`: every example as read (a feature
table, uint8 images or a tokenized corpus), its class id, the class names, the data set's
own train/test split if it has one, and an unfitted preprocessor configured by the
options. It never splits or fits: kexp/datasets/pipeline.py does read -> split -> fit
(training part only) -> transform, so evaluate, predict and fold loops can reuse each step.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kexp.errors import DataError, SpecError
from kexp.preprocessing import Fitted, ImageFiles, Preprocessor
from kexp.run.io import add_file, sha256_file

DATA_DIR_ENV = "KEXP_DATA_DIR"
DEFAULT_DATA_DIR = Path("data")


@dataclass
class RawData:
    """Every example of a data set as read, before any split or fitting."""

    inputs: Any  # np.ndarray (tables, images) or text.Corpus; the preprocessor's transform takes rows of it
    labels: np.ndarray  # int32 class ids
    class_names: list[str]
    preprocessor: Preprocessor  # unfitted: .fit(inputs, train_rows) -> a Fitted one
    # The data set's own split (mnist, imdb official); None: hold out `test_fraction`, seeded.
    is_test: np.ndarray | None = None
    test_fraction: float = 0.0
    # Whether test_fraction may be 0 (no test part): csv yes, the text datasets always hold one out.
    test_optional: bool = True
    stratify: bool = True
    files: list[Path] = field(default_factory=list)
    # Facts shown to the user and saved in metrics.json (sizes, header decision, token cache).
    summary: dict[str, Any] = field(default_factory=dict)
    # Why new raw inputs cannot be encoded like these (e.g. a corpus read as word ids); None: they can.
    raw_input_unsupported: str | None = None
    # "classification": labels are class ids; "regression": labels are float32 targets, no classes.
    task: str = "classification"

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Examples:
    """What a plugin's dataset reader may return: arrays and their labels, as the `numpy` dataset reads
    them; kexp splits them (seeded, stratified), scales integer pixels and keeps the preprocessing."""

    x: np.ndarray  # [n, ...] inputs of any shape
    y: np.ndarray  # [n] class ids (0..k-1) or class-name strings
    class_names: list[str] | None = None  # names of class ids 0..k-1 (default: the ids as text)
    # The data set's own test part; None: hold out `test_fraction` of x, seeded and stratified.
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    test_fraction: float = 0.2
    scale: str | float = "auto"  # auto: integer pixels 0-255 divided by 255; none; or a divisor
    files: list[Path] = field(default_factory=list)  # what was read, fingerprinted in the run


@dataclass
class Split:
    """One part's model inputs and labels. With `divisor`, x is kept compact (uint8 pixels) and the
    model sees float32(x) / divisor, computed per batch in the input pipeline. An ImageFiles x
    (image_folder) holds file paths instead, decoded per batch in the pipeline (streamed)."""

    x: np.ndarray | ImageFiles
    y: np.ndarray
    divisor: float | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def streamed(self) -> bool:
        """Whether x is read from files batch by batch (ImageFiles) rather than held as an array."""
        return isinstance(self.x, ImageFiles)

    @property
    def held_bytes(self) -> int:
        """Bytes of inputs held in memory: the array's, or the file paths' for a streamed part."""
        return self.x.paths.nbytes if isinstance(self.x, ImageFiles) else self.x.nbytes


@dataclass
class Dataset:
    """Model-ready parts of a data set, and what was fitted to make them."""

    train: Split
    validation: Split | None
    test: Split | None
    class_names: list[str]
    preprocessing: Fitted
    positive_class: str | None = None
    raw_input_unsupported: str | None = None
    task: str = "classification"
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.preprocessing.input_shape())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


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
    fetch = f", or run `kexp data fetch {dataset}`" if fetchable(dataset) else ""
    raise DataError(
        f"{dataset}: data file not found (looked for {looked}). Put it there or point --data-dir or "
        f"{DATA_DIR_ENV} at the folder that holds it{fetch}."
    )


def fetchable(dataset: str) -> bool:
    """Whether `kexp data fetch <dataset>` knows a download source (csv and text_csv are the user's own files)."""
    from kexp.fetch import SOURCES  # lazily: fetch.py imports rich, not needed unless a file is missing

    return dataset in SOURCES


def describe_files(paths: list[Path]) -> list[dict[str, Any]]:
    """The data's fingerprint: [{"path": absolute, "bytes": size, "sha256": content hash}] per input.

    SHA-256 because `kexp data fetch` already checks downloads with it (one hash, comparable
    with the published ones) and hashlib runs it at about 1 GB/s here: 0.1 s for the 80 MB
    IMDB archive. A folder (aclImdb/) hashes its files' relative paths and contents in order.
    """
    return [{"path": os.path.abspath(p), "bytes": count_bytes(Path(p)), "sha256": hash_content(Path(p))} for p in paths]


def count_bytes(path: Path) -> int:
    """A file's size, or the total size of the files under a folder (the aclImdb/ tree)."""
    if not path.is_dir():
        return path.stat().st_size
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def hash_content(path: Path) -> str:
    """A file's SHA-256; for a folder, the SHA-256 of its files' relative paths and contents in order."""
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        add_file(digest, file)
    return digest.hexdigest()


def changed_files(recorded: list[dict[str, Any]], current: list[dict[str, Any]]) -> list[str]:
    """One description per input whose size or content differs from what a run recorded (matched by file name)."""
    now = {Path(f["path"]).name: f for f in current}
    changes = []
    for before in recorded:
        name = Path(before["path"]).name
        after = now.get(name)
        if after is None:
            changes.append(f"{name} is no longer read (the run read {before['path']})")
        elif (after["bytes"], after.get("sha256")) != (before["bytes"], before.get("sha256")):
            changes.append(f"{after['path']} differs from what the run read ({before['bytes']:,} bytes, sha256 {str(before.get('sha256'))[:12]}…; now {after['bytes']:,} bytes, {str(after.get('sha256'))[:12]}…)")
    return changes


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


def summarize(dataset: Dataset, sizes: bool = True) -> dict[str, Any]:
    """Sizes and class balance of each part (unless `sizes` is False), for the console and metrics.json."""
    summary: dict[str, Any] = {"task": dataset.task, "class_names": dataset.class_names, "positive_class": dataset.positive_class}
    for name in ("train", "validation", "test") if sizes else ():
        part = getattr(dataset, name)
        if part is not None:
            summary[f"{name}_size"] = len(part)
            if dataset.task == "regression":
                summary[f"{name}_target"] = {"mean": float(part.y.mean()), "std": float(part.y.std())}
            else:
                summary[f"{name}_classes"] = class_balance(part.y, dataset.class_names)
    summary.update(dataset.summary)
    return summary


def check_split(
    y_train: np.ndarray,
    y_held: np.ndarray,
    class_names: list[str],
    option: str,
    value: float,
    *,
    part: str = "test",
    stratified: bool = True,
    zero_allowed: bool = False,
) -> None:
    """SpecError naming `option` when a train/held-out split leaves a part empty or a class out of a part.

    `y_train`/`y_held` are the class ids in each part; `part` names the held-out one. A class
    must keep a training row; with a stratified split it must also have a held-out row, since
    each class gives its own share (a tiny class rounds to 0). Classes in neither part are
    not the split's doing and are left to the loader.
    """
    if value <= 0:
        return
    counts = np.stack([np.bincount(y.astype(np.int64), minlength=len(class_names)) for y in (y_train, y_held)])
    off = f"0 for no {part} split" if zero_allowed else ""
    problem = find_empty_part(counts, value, part, stratified, off) or find_missing_class(counts, class_names, value, part, stratified, off)
    if problem:
        raise SpecError([f"{option}: {problem}"])


def find_empty_part(counts: np.ndarray, value: float, part: str, stratified: bool, off: str) -> str | None:
    """An empty train or held-out part, with the nearest fraction that fills it."""
    totals = counts.sum(axis=0)
    # Stratified, each class is split on its own, so the smallest class sets the bound.
    bound = int(totals[totals > 0].min()) if stratified else int(totals.sum())
    if bound < 2:
        return None  # a 1-row class: find_missing_class says why no fraction helps
    rows = f"{value:g} of {int(totals.sum())} rows"
    if not counts[0].any():
        return f"{rows} leaves the train split empty; use at most {most_kept(bound)}"
    if not counts[1].any():
        return f"{rows} leaves the {part} split empty; use at least {least_held(bound)}{', or ' + off if off else ''}"
    return None


def find_missing_class(counts: np.ndarray, class_names: list[str], value: float, part: str, stratified: bool, off: str) -> str | None:
    """The first class without a training row (or, stratified, without a held-out row), as a message."""
    totals = counts.sum(axis=0)
    if stratified and (totals == 1).any():  # first, since no fraction can fix it
        name = class_names[int(np.flatnonzero(totals == 1)[0])]
        return f"class '{name}' (1 row) cannot be in both the train and the {part} split; add rows{' or use ' + off if off else ''}"
    for cls, name in enumerate(class_names):
        train, held = int(counts[0, cls]), int(counts[1, cls])
        rows = f"class '{name}' ({train + held} row{'' if train + held == 1 else 's'})"
        if held and not train:
            fix = f"use at most {most_kept(held)}" if stratified else "use a smaller value or stratify: true"
            return f"{rows} has no row in the train split at {value:g}; {fix}"
        if train and stratified and not held:
            return f"{rows} has no row in the {part} split at {value:g}; use at least {least_held(train)}{', or ' + off if off else ''}"
    return None


# A part of n rows gets round(n * fraction) rows, so n * fraction >= 1 holds out at least one
# and n * fraction <= n - 1 keeps at least one; suggestions are rounded to 3 decimals inward.
def least_held(n: int) -> str:
    return f"{math.ceil(1000 / n) / 1000:g}"


def most_kept(n: int) -> str:
    return f"{1000 * (n - 1) // n / 1000:g}"


def check_official_split(train_size: int, test_size: int, source: str) -> None:
    """A data set's own train/test split must have rows in both parts."""
    for part, size in (("train", train_size), ("test", test_size)):
        if size == 0:
            raise DataError(f"{source}: the {part} split has no rows")
