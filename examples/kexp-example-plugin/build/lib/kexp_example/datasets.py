"""`spirals`: two interleaved spirals in the plane, generated from the seed (a dataset that needs no files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

import kexp


class SpiralsOptions(kexp.Options):
    samples: int = Field(default=1000, ge=10, le=1_000_000, description="points, half per spiral")
    turns: float = Field(default=1.5, gt=0, le=10, description="turns of each spiral")
    noise: float = Field(default=0.1, ge=0, description="standard deviation of the noise added to each point")
    test_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)

    def static_num_classes(self) -> int | None:
        return 2


@kexp.dataset("spirals", SpiralsOptions)
def read_spirals(options: SpiralsOptions, data_dir: Path, seed: int) -> kexp.Examples:
    """Two interleaved spirals (x, y coordinates), one class each; kexp splits and scales them."""
    rng = np.random.default_rng(seed)
    labels = np.arange(options.samples) % 2
    angle = np.sqrt(rng.uniform(0, 1, options.samples)) * options.turns * 2 * np.pi
    radius = angle / (options.turns * 2 * np.pi)
    sign = np.where(labels == 0, 1.0, -1.0)
    points = np.stack([sign * radius * np.cos(angle), sign * radius * np.sin(angle)], axis=1)
    points += rng.normal(scale=options.noise * 0.1, size=points.shape)
    return kexp.Examples(x=points.astype(np.float32), y=labels.astype(np.int64), class_names=["spiral_a", "spiral_b"],
                         test_fraction=options.test_fraction)
