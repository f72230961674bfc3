"""`synthetic`: Gaussian class clusters generated from the seed; needs no files (smoke tests, demos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from kexp.datasets.base import RawData
from kexp.preprocessing import TablePreprocessor
from kexp.registry import Options, dataset


class SyntheticOptions(Options):
    # bounded so a typo cannot ask for tens of GB: 10 million x 1,000 features is already 40 GB
    samples: int = Field(default=400, ge=1, le=10_000_000)
    features: int = Field(default=8, ge=1, le=1_000)
    classes: int = Field(default=2, ge=2)
    separation: float = Field(default=2.0, gt=0, description="distance between class centres, in noise std units")
    test_fraction: float = Field(default=0.25, ge=0.0, lt=1.0)

    def static_num_classes(self) -> int | None:
        return self.classes


@dataset("synthetic", SyntheticOptions)
def load_synthetic(options: SyntheticOptions, data_dir: Path, seed: int) -> RawData:
    """Separable Gaussian blobs, one per class, drawn from the experiment seed."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(options.classes, options.features))
    centres *= options.separation / np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, options.classes, size=options.samples).astype(np.int32)
    x = (centres[y] + rng.normal(scale=0.5, size=(options.samples, options.features))).astype(np.float32)
    return RawData(
        inputs=x,
        labels=y,
        class_names=[f"class_{i}" for i in range(options.classes)],
        preprocessor=TablePreprocessor([f"x{i}" for i in range(options.features)]),
        test_fraction=options.test_fraction,
    )
