"""Shared fixtures: tiny generated data files and a CLI runner. No test reads ../shared."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def smoke_spec(**changes) -> dict:
    spec = {
        "name": "smoke",
        "seed": 0,
        "data": {"name": "synthetic", "samples": 120, "features": 4, "classes": 3},
        "model": {"name": "mlp", "hidden_units": [8]},
        "train": {"epochs": 2, "batch_size": 16, "validation_split": 0.2, "optimizer": {"name": "adam", "learning_rate": 0.05}},
    }
    spec.update(changes)
    return spec


def write_pima_csv(path: Path, rows: int = 60, seed: int = 0) -> Path:
    """A Pima-shaped CSV: 8 numeric features, 0/1 label last, no header."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8)).round(3)
    y = (x[:, 1] > 0).astype(int)
    lines = [",".join(f"{v:g}" for v in row) + f",{label}" for row, label in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_idx(path: Path, array: np.ndarray, magic: int) -> Path:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return path


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)), 2051)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10, 2049)
    return folder


def prepared(loader, options, data_dir: Path, seed: int = 0, validation_split: float = 0.0):
    """A dataset reader's RawData through the pipeline's split, fit and transform (as `kexp train` does)."""
    from kexp.datasets.base import describe_files
    from kexp.datasets.pipeline import prepare_dataset, split_rows

    raw = loader(options, data_dir, seed)
    raw.summary.setdefault("files", describe_files(raw.files))
    return prepare_dataset(raw, split_rows(raw, seed, validation_split))
