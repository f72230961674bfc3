"""Data in stages: read -> split -> fit (training part only) -> transform.

    raw = read_data(spec, data_dir)                      # every example, as read
    rows = split_rows(raw, seed, validation_split)       # train / validation / test row indices
    data = prepare_dataset(raw, rows)                    # fit on train rows, transform every part
    data = prepare_dataset(raw, rows, fitted)            # a run's saved preprocessing: transform only

The validation hold-out is taken before fitting, so vocabulary, idf and standardization
never see a validation or test row, and validation metrics are as honest as test metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kexp.datasets.base import Dataset, RawData, Split, check_official_split, check_split, describe_files, split_indices
from kexp.errors import PluginError, SpecError
from kexp.plugins import call_plugin_code, definition_line, is_plugin_entry
from kexp.registry import DATASETS


def read_data(spec: Any, data_dir: Path) -> RawData:
    """The `data` section's dataset, read (no split, nothing fitted)."""
    fn = DATASETS.get(spec.data.name).fn
    if is_plugin_entry(fn):  # the user's code: what it raises or returns is reported at its file and line
        raw = plugin_raw_data(spec.data.name, fn, call_plugin_code(f"dataset '{spec.data.name}'", fn, spec.data.options, data_dir, spec.split_seed))
    else:
        raw = fn(spec.data.options, data_dir, spec.split_seed)
    raw.summary.setdefault("files", describe_files(raw.files))
    return raw


def plugin_raw_data(name: str, fn: Any, read: Any) -> RawData:
    """A plugin reader's result as RawData: RawData itself, or Examples (arrays kexp splits and preprocesses)."""
    from kexp.datasets.base import Examples
    from kexp.datasets.numpy import examples_raw_data  # read as the numpy dataset reads arrays

    if isinstance(read, Examples):
        return examples_raw_data(read, Path(fn.__code__.co_filename))
    if not isinstance(read, RawData):
        raise PluginError(f"{definition_line(fn)}: dataset '{name}' returned {type(read).__name__}; "
                          "return kexp.Examples(x=..., y=..., class_names=...) (or a kexp RawData)", exit_code=1)
    return read


def split_rows(raw: RawData, seed: int, validation_split: float = 0.0) -> dict[str, np.ndarray]:
    """Row indices of train, validation and test (empty arrays for absent parts), checked."""
    classes, names = class_ids_for_splitting(raw)
    stratify = raw.stratify and raw.task == "classification"
    if raw.is_test is not None:
        train, test = np.flatnonzero(~raw.is_test), np.flatnonzero(raw.is_test)
        check_official_split(len(train), len(test), str(raw.files[0]) if raw.files else "data")
    else:
        train, test = split_indices(classes, raw.test_fraction, seed, stratify)
        check_split(classes[train], classes[test], names, "data.test_fraction", raw.test_fraction, stratified=stratify, zero_allowed=raw.test_optional)
    train, validation = hold_out_validation(raw, train, validation_split, seed)
    return {"train": train, "validation": validation, "test": test}


def class_ids_for_splitting(raw: RawData) -> tuple[np.ndarray, list[str]]:
    """Classification splits by class; regression splits like one class, unstratified, so the checks only find empty parts."""
    if raw.task == "classification":
        return raw.labels, raw.class_names
    return np.zeros(len(raw), np.int32), ["all"]


def hold_out_validation(raw: RawData, train: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) rows out of `train`: seeded and, for classification, stratified (no class drops out by chance)."""
    if fraction <= 0:
        return train, np.array([], dtype=np.int64)
    classes, names = class_ids_for_splitting(raw)
    keep, held = split_indices(classes[train], fraction, seed, stratify=raw.task == "classification")
    check_split(classes[train][keep], classes[train][held], names, "train.validation_split", fraction,
                part="validation", stratified=raw.task == "classification", zero_allowed=True)
    return train[keep], train[held]


@dataclass
class Member:
    """One training run inside an experiment: a fold, a repeat, or the only one."""

    name: str | None  # None for a plain single run; fold-0, seed-3, fold-1-seed-3 otherwise
    seed: int  # initialization and shuffling
    rows: dict[str, np.ndarray]


def plan_members(raw: RawData, spec: Any) -> list[Member]:
    """Every member's rows, checked before anything trains, for the spec's evaluation protocol and seeds."""
    evaluation, seeds, fraction = spec.evaluation, spec.member_seeds(), spec.train.validation_split
    if evaluation.protocol == "holdout":
        row_sets = [(None, split_rows(raw, spec.split_seed, fraction))]
    else:
        parts = kfold_parts(raw, evaluation.k, evaluation.repeats, spec.split_seed) if evaluation.protocol == "kfold" else \
            [(None, np.arange(len(raw)), np.array([], dtype=np.int64))]  # protocol train: scored on the rows it trains on
        row_sets = [(name, dict(zip(("train", "validation"), hold_out_validation(raw, train, fraction, spec.split_seed)), test=test))
                    for name, train, test in parts]
    members = []
    for part_name, rows in row_sets:
        for seed in seeds:
            names = [n for n in (part_name, f"seed-{seed}" if len(seeds) > 1 else None) if n]
            members.append(Member("-".join(names) or None, seed, rows))
    return members


def kfold_parts(raw: RawData, k: int, repeats: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, train rows, test rows) of each fold: stratified for classification (scikit-learn's splitters)."""
    from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

    if raw.is_test is None and raw.test_fraction > 0 and raw.test_optional:
        raise SpecError([f"evaluation.protocol: kfold tests on every row in turn, so data.test_fraction must be 0 (it is {raw.test_fraction:g})"])
    if raw.is_test is not None or raw.test_fraction > 0:  # a split the dataset cannot turn off: say it is not used
        raw.summary["kfold_note"] = "every row is a test row once per repeat; the dataset's own split / test_fraction is not used"
    if raw.task == "classification":
        counts = np.bincount(raw.labels, minlength=len(raw.class_names))
        if counts.min() < k:
            small = raw.class_names[int(counts.argmin())]
            fix = f"set evaluation.k to at most {int(counts.min())}" if counts.min() >= 2 else "add rows of that class"
            raise SpecError([f"evaluation.k: class '{small}' has {int(counts.min())} rows, fewer than the {k} folds; {fix}"])
        splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    else:
        if len(raw) < k:
            raise SpecError([f"evaluation.k: {len(raw)} rows cannot make {k} folds; lower evaluation.k"])
        splitter = RepeatedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    folds = splitter.split(np.zeros(len(raw)), raw.labels)
    return [(f"fold-{i}" if repeats == 1 else f"fold-{i // k}-{i % k}", train, test) for i, (train, test) in enumerate(folds)]


def make_split(fitted: Any, inputs: Any, rows: np.ndarray, labels: np.ndarray) -> Split:
    """The rows transformed for the model, kept compact where the preprocessing can (see Split.divisor)."""
    if hasattr(fitted, "transform_compact"):
        x, divisor = fitted.transform_compact(inputs, rows)
        return Split(x, labels, divisor)
    return Split(fitted.transform(inputs, rows), labels)


def prepare_dataset(raw: RawData, rows: dict[str, np.ndarray], fitted: Any = None) -> Dataset:
    """Fit the preprocessing on the training rows (unless given a fitted one) and transform every part."""
    if fitted is None:
        fitted = raw.preprocessor.fit(raw.inputs, rows["train"])
    label_type = np.float32 if raw.task == "regression" else np.int32
    parts = {name: make_split(fitted, raw.inputs, idx, raw.labels[idx].astype(label_type)) if len(idx) else None for name, idx in rows.items()}
    return Dataset(
        train=parts["train"],
        validation=parts.get("validation"),
        test=parts.get("test"),
        class_names=raw.class_names,
        preprocessing=fitted,
        positive_class=raw.class_names[1] if len(raw.class_names) == 2 else None,
        raw_input_unsupported=raw.raw_input_unsupported,
        task=raw.task,
        summary={**raw.summary, **fitted_summary(fitted)},
    )


def fitted_summary(fitted: Any) -> dict[str, Any]:
    """What the fit decided, for metrics.json: the input shape, and a vocabulary's size."""
    summary: dict[str, Any] = {"input_shape": list(fitted.input_shape())}
    if hasattr(fitted, "vocabulary"):
        summary["vocabulary_size"] = len(fitted.vocabulary)
    return summary


def load_dataset(spec: Any, data_dir: Path) -> Dataset:
    """read -> split -> fit -> transform for a spec, as `kexp train` does for its (first) member."""
    raw = read_data(spec, data_dir)
    return prepare_dataset(raw, plan_members(raw, spec)[0].rows)
