"""`synthetic`: Gaussian class clusters generated from the seed; needs no files (smoke tests, demos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field, PositiveInt

from kexp.datasets.base import Dataset, Split, check_split, split_indices
from kexp.registry import dataset
from kexp.spec import Options


class SyntheticOptions(Options):
    samples: PositiveInt = 400
    features: PositiveInt = 8
    classes: int = Field(default=2, ge=2)
    separation: float = Field(default=2.0, gt=0, description="distance between class centres, in noise std units")
    test_fraction: float = Field(default=0.25, ge=0.0, lt=1.0)

    def static_num_classes(self) -> int | None:
        return self.classes


@dataset("synthetic", SyntheticOptions)
def load_synthetic(options: SyntheticOptions, data_dir: Path, seed: int) -> Dataset:
    """Separable Gaussian blobs, one per class, drawn from the experiment seed."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(options.classes, options.features))
    centres *= options.separation / np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, options.classes, size=options.samples).astype(np.int32)
    x = (centres[y] + rng.normal(scale=0.5, size=(options.samples, options.features))).astype(np.float32)
    class_names = [f"class_{i}" for i in range(options.classes)]
    train, test = split_indices(y, options.test_fraction, seed)
    check_split(y[train], y[test], class_names, "data.test_fraction", options.test_fraction, zero_allowed=True)
    return Dataset(
        train=Split(x[train], y[train]),
        test=Split(x[test], y[test]) if len(test) else None,
        input_shape=(options.features,),
        num_classes=options.classes,
        class_names=class_names,
    )
