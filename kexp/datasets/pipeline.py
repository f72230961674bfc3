"""Data in stages: read -> split -> fit (training part only) -> transform.

    raw = read_data(spec, data_dir)                      # every example, as read
    rows = split_rows(raw, seed, validation_split)       # train / validation / test row indices
    data = prepare_dataset(raw, rows)                    # fit on train rows, transform every part
    data = prepare_dataset(raw, rows, fitted)            # a run's saved preprocessing: transform only

The validation hold-out is taken before fitting, so vocabulary, idf and standardization
never see a validation or test row, and validation metrics are as honest as test metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kexp.datasets.base import Dataset, RawData, Split, check_official_split, check_split, describe_files, split_indices
from kexp.registry import DATASETS


def read_data(spec: Any, data_dir: Path) -> RawData:
    """The `data` section's dataset, read (no split, nothing fitted)."""
    entry = DATASETS.get(spec.data.name)
    raw = entry.fn(entry.options.model_validate(spec.data.options()), data_dir, spec.seed)
    raw.summary.setdefault("files", describe_files(raw.files))
    return raw


def split_rows(raw: RawData, seed: int, validation_split: float = 0.0) -> dict[str, np.ndarray]:
    """Row indices of train, validation and test (empty arrays for absent parts), checked."""
    # Regression splits like one class, unstratified: the checks then only find empty parts.
    classes, names = (raw.labels, raw.class_names) if raw.task == "classification" else (np.zeros(len(raw), np.int32), ["all"])
    stratify = raw.stratify and raw.task == "classification"
    if raw.is_test is not None:
        train, test = np.flatnonzero(~raw.is_test), np.flatnonzero(raw.is_test)
        check_official_split(len(train), len(test), str(raw.files[0]) if raw.files else "data")
    else:
        train, test = split_indices(classes, raw.test_fraction, seed, stratify)
        check_split(classes[train], classes[test], names, "data.test_fraction", raw.test_fraction, stratified=stratify, zero_allowed=raw.test_optional)
    validation = np.array([], dtype=np.int64)
    if validation_split > 0:
        # Stratified, so no class drops out of either part by chance (the test split's rule).
        keep, held = split_indices(classes[train], validation_split, seed, stratify=stratify or raw.task == "classification")
        check_split(classes[train][keep], classes[train][held], names, "train.validation_split", validation_split,
                    part="validation", stratified=raw.task == "classification", zero_allowed=True)
        train, validation = train[keep], train[held]
    return {"train": train, "validation": validation, "test": test}


def prepare_dataset(raw: RawData, rows: dict[str, np.ndarray], fitted: Any = None) -> Dataset:
    """Fit the preprocessing on the training rows (unless given a fitted one) and transform every part."""
    if fitted is None:
        fitted = raw.preprocessor.fit(raw.inputs, rows["train"])
    label_type = np.float32 if raw.task == "regression" else np.int32
    parts = {name: Split(fitted.transform(raw.inputs, idx), raw.labels[idx].astype(label_type)) if len(idx) else None for name, idx in rows.items()}
    return Dataset(
        train=parts["train"],
        validation=parts.get("validation"),
        test=parts.get("test"),
        class_names=raw.class_names,
        preprocessing=fitted,
        rows=rows,
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
    """read -> split -> fit -> transform for a spec, as `kexp train` does."""
    raw = read_data(spec, data_dir)
    return prepare_dataset(raw, split_rows(raw, spec.seed, spec.train.validation_split))
