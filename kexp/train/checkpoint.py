"""Resumable training state, as it was at the end of an epoch.

    <member dir>/checkpoints/epoch-0007/state.npz   every model and optimizer variable (the dropout
                                                    RNG state included), early stopping's best weights
                                        state.json  epoch, history so far, early-stopping and NumPy/Python
                                                    RNG state, the SHA-256 of state.npz

Why not Keras' BackupAndRestore: its weights file leaves out the dropout RNG state, a
truncated metadata file makes resume fail outright, early stopping's state is lost, and
after TerminateOnNaN it deletes its backup of a diverged run.

The state at the end of every epoch is kept in memory (a copy of the variables: a few
MB for these models), so a signal mid-epoch saves the last whole epoch and a resumed run
continues exactly where that epoch ended: no epoch is trained twice or skipped. A
checkpoint appears by one rename when complete and the previous one is kept until then,
so `kill -9` at any moment leaves at least one whole checkpoint (or none yet).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kexp.run.files import CHECKPOINT_ARRAYS, CHECKPOINT_STATE, CHECKPOINTS
from kexp.run.io import finite_or_none, make_temp_dir, replace_durably, sha256_file
from kexp.run.lifecycle import pause_for_tests

KEEP = 2
# train.checkpoint_every: auto writes at an epoch end once this long has passed since the last write.
AUTO_SECONDS = 30.0
_NAME = re.compile(r"^epoch-(\d{4,})(-done)?$")


@dataclass
class Checkpoint:
    epoch: int  # epochs completed
    arrays: dict[str, np.ndarray]
    state: dict[str, Any]  # history, epoch_seconds, fit_seconds, fit_done, early_stopping, rng
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)


def capture(model, epoch: int, state: dict[str, Any], best_weights: list | None = None) -> Checkpoint:
    """A copy of the model's and optimizer's variables now, with the state that goes with them."""
    arrays = {f"model/{i}": np.array(v.numpy()) for i, v in enumerate(model.variables)}
    if model.optimizer is not None and model.optimizer.built:
        arrays.update({f"optimizer/{i}": np.array(v.numpy()) for i, v in enumerate(model.optimizer.variables)})
    for i, w in enumerate(best_weights or ()):
        arrays[f"best/{i}"] = np.array(w)
    numpy_rng = np.random.get_state()
    arrays["rng/numpy"] = numpy_rng[1]
    rng = {"numpy": [numpy_rng[0], int(numpy_rng[2]), int(numpy_rng[3]), float(numpy_rng[4])], "python": random.getstate()}
    return Checkpoint(epoch, arrays, {**state, "epoch": epoch, "rng": rng})


def restore(model, checkpoint: Checkpoint) -> list | None:
    """Put the variables back (optimizer too, building it if needed); returns early stopping's best weights."""
    arrays = checkpoint.arrays
    assign(model.variables, arrays, "model")
    if any(key.startswith("optimizer/") for key in arrays) and model.optimizer is not None:
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        assign(model.optimizer.variables, arrays, "optimizer")
    rng = checkpoint.state.get("rng") or {}
    if "numpy" in rng and "rng/numpy" in arrays:
        kind, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((kind, arrays["rng/numpy"], pos, has_gauss, cached))
    if "python" in rng:
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
    best = sorted((int(k.split("/")[1]), v) for k, v in arrays.items() if k.startswith("best/"))
    return [v for _, v in best] or None


def assign(variables, arrays: dict[str, np.ndarray], prefix: str) -> None:
    saved = sum(1 for key in arrays if key.startswith(prefix + "/"))
    if saved != len(variables):
        raise ValueError(f"the checkpoint has {saved} {prefix} variables, the {prefix} has {len(variables)}")
    for i, variable in enumerate(variables):
        value = arrays[f"{prefix}/{i}"]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{prefix} variable {variable.path}: checkpoint shape {value.shape}, model shape {tuple(variable.shape)}")
        variable.assign(value)


def checkpoint_name(checkpoint: Checkpoint) -> str:
    return f"epoch-{checkpoint.epoch:04d}" + ("-done" if checkpoint.state.get("fit_done") else "")


def write_checkpoint(folder: Path, checkpoint: Checkpoint) -> Path:
    """checkpoints/epoch-NNNN/ written in a temp folder, fsynced, renamed; then all but the newest KEEP removed."""
    root = folder / CHECKPOINTS
    root.mkdir(exist_ok=True)
    final = root / checkpoint_name(checkpoint)
    if final.exists():
        try:
            read_checkpoint(final)
            checkpoint.path = final
            return final  # this very state is already on disk
        except (ValueError, OSError, KeyError):
            shutil.rmtree(final)  # a damaged copy of this epoch: replaced below
    tmp = make_temp_dir(root, ".tmp-")
    try:
        np.savez(tmp / CHECKPOINT_ARRAYS, **checkpoint.arrays)
        state = {**checkpoint.state, "epoch": checkpoint.epoch, "npz_sha256": sha256_file(tmp / CHECKPOINT_ARRAYS), "saved": time.time()}
        (tmp / CHECKPOINT_STATE).write_text(json.dumps(finite_or_none(state), indent=1) + "\n", encoding="utf-8")
        pause_for_tests("checkpoint")
        replace_durably(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(folder)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # left by a process killed mid-write (we hold the run's lock)
        shutil.rmtree(stale, ignore_errors=True)
    checkpoint.path = final
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint folders, newest first (a fit that finished sorts after its last epoch)."""
    root = folder / CHECKPOINTS
    found = [(int(m[1]), bool(m[2]), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()] if root.is_dir() else []
    return [p for *_, p in sorted(found, reverse=True)]


def read_checkpoint(path: Path) -> Checkpoint:
    """One checkpoint folder, checked against its recorded SHA-256; ValueError saying what is wrong."""
    try:
        state = json.loads((path / CHECKPOINT_STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{CHECKPOINT_STATE} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{CHECKPOINT_STATE} is damaged ({exc})") from None
    npz = path / CHECKPOINT_ARRAYS
    if not npz.is_file() or sha256_file(npz) != state.get("npz_sha256"):
        raise ValueError(f"{CHECKPOINT_ARRAYS} is missing or does not match its recorded SHA-256")
    with np.load(npz, allow_pickle=False) as loaded:
        arrays = {key: loaded[key] for key in loaded.files}
    return Checkpoint(int(state["epoch"]), arrays, state, path)


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest checkpoint that reads back whole; damaged newer ones are skipped, with a warning each."""
    warnings = []
    for path in list_checkpoints(folder):
        try:
            checkpoint = read_checkpoint(path)
        except (ValueError, OSError, KeyError) as exc:
            warnings.append(f"{path}: {exc}; using an older checkpoint")
            continue
        checkpoint.warnings = warnings
        return checkpoint
    if warnings:
        return Checkpoint(0, {}, {}, None, warnings + [f"{folder}: no usable checkpoint; this part starts again from epoch 1"])
    return None
