"""The `arrays` kind (numpy): NumPy arrays of any shape per example, divided as the run's data were.

Nothing is fitted; the state is {"example_shape", "dtype", "divisor", "add_channel"}: one
example's shape as stored, the dtype training read, what the model's inputs are divided by
(255 for integer pixels under `scale: auto`, the `scale` factor, or None), and whether a
channel axis of 1 is appended (for the cnn). New raw inputs for predict are `.npy` files
(memory-mapped) and `.npz` archives (the array `x`, else `x_test`, else the only array),
read a block at a time, so a file of any size streams.

The `.npy` and `.npz` readers here serve the numpy dataset too: an `.npz` member stored
uncompressed (np.savez) is memory-mapped like a `.npy` file; a compressed one
(np.savez_compressed) is read whole. Pickled objects are never loaded.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kexp.errors import DataError
from kexp.preprocessing.images import load_npy
from kexp.preprocessing.inputs import BATCH_SIZE, Source, Warn
from kexp.preprocessing.kinds import StackedArrays, generic_inputs, preprocessing_kind

# The arrays of an .npz that predict takes, in order of preference, when the file has several.
PREDICT_KEYS = ("x", "x_test")


@dataclass(frozen=True)
class ArrayRows:
    """Examples held in one or more arrays (an official train part, then its test part), indexed as
    one without concatenating them: each stays memory-mapped, and a split reads only its rows."""

    parts: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.parts[0].shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.parts[0].dtype

    def take(self, rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """The given rows, in order, as a new `dtype` array, copied a block at a time (an int64 or
        float64 source never exists in memory at its own width, only the result does)."""
        out = np.empty((len(rows), *self.example_shape), dtype)
        start = 0
        for part in self.parts:
            at = np.flatnonzero((rows >= start) & (rows < start + len(part)))
            for i in range(0, len(at), BATCH_SIZE):
                block = at[i : i + BATCH_SIZE]
                out[block] = part[rows[block] - start]
            start += len(part)
        return out


@preprocessing_kind("arrays")
@dataclass
class FittedArrays(StackedArrays):
    """Arrays of `example_shape` -> float32 model inputs, divided by `divisor` when set."""

    example_shape: list[int]
    dtype: str
    divisor: float | None = None
    add_channel: bool = False
    # What training keeps in memory: uint8 when the data are integers in 0-255 (the reader scanned
    # them), else decided from the dtype alone (compact_dtype). Not saved: it changes no number.
    compact: str | None = field(default=None, compare=False)
    kind: ClassVar[str]
    encodes_in_worker: ClassVar[bool] = False

    def fit(self, inputs: ArrayRows, train_rows: np.ndarray) -> FittedArrays:
        return self  # scaling is decided from the whole array by the reader; nothing to learn

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FittedArrays:
        return cls(**state)

    def state(self) -> dict[str, Any]:
        return {"example_shape": self.example_shape, "dtype": self.dtype, "divisor": self.divisor, "add_channel": self.add_channel}

    def input_shape(self) -> tuple[int, ...]:
        return (*self.example_shape, 1) if self.add_channel else tuple(self.example_shape)

    def compact_dtype(self, stored: np.dtype) -> np.dtype:
        """uint8 and bool stay as stored (cast per batch); other inputs become float32."""
        if self.compact is not None:
            return np.dtype(self.compact)
        return stored if stored in (np.uint8, np.bool_) else np.dtype(np.float32)

    def transform_compact(self, inputs: ArrayRows | np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, float | None]:
        """The rows shaped for the model but kept compact where they can be, and what to divide them by;
        training divides per batch (see Split.divisor), giving the same floats as transform."""
        source = inputs if isinstance(inputs, ArrayRows) else ArrayRows((np.asarray(inputs),))
        if source.example_shape != tuple(self.example_shape):
            raise ValueError(f"expected examples of shape {list(self.example_shape)}, got {list(source.example_shape)}")
        x = source.take(np.arange(len(source)) if rows is None else np.asarray(rows), self.compact_dtype(source.dtype))
        return (x[..., np.newaxis] if self.add_channel else x), self.divisor

    def transform(self, inputs: ArrayRows | np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        x, divisor = self.transform_compact(inputs, rows)
        x = x.astype(np.float32, copy=False)  # take made a new array: dividing in place touches no caller's data
        if divisor is not None:
            x /= divisor
        return x

    def read_examples(self, inputs: Sequence[str], layout: Any, warn: Warn) -> Iterator[tuple[Source, np.ndarray]]:
        return array_examples([Path(i) for i in inputs], tuple(self.example_shape), np.dtype(self.dtype), warn, self.divisor)

    @classmethod
    def sample_inputs(cls, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype, state: dict[str, Any],
                      id_limit: Callable[[int], int]) -> np.ndarray:
        """Rows like the run's inputs, for export's check: in [0, 1] when they were divided (pixels), else standard normal."""
        if state.get("divisor") and not np.issubdtype(dtype, np.integer):
            return rng.uniform(0.0, 1.0, size=shape).astype(dtype)
        return generic_inputs(rng, shape, dtype)


# --- reading .npy and .npz files -----------------------------------------------------------


def npz_members(path: Path) -> dict[str, zipfile.ZipInfo]:
    """The arrays of an .npz archive by name (x for the member x.npy), without reading them."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a NumPy .npz archive ({exc})") from None
    return {info.filename.removesuffix(".npy"): info for info in infos if info.filename.endswith(".npy")}


def npz_array(path: Path, name: str, info: zipfile.ZipInfo) -> np.ndarray:
    """One member of an .npz: memory-mapped when stored uncompressed (np.savez), else read whole (np.savez_compressed)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(member)
            refuse_objects(path, name, dtype)
            order = "F" if fortran else "C"
            count = int(np.prod(shape))
            if info.compress_type == zipfile.ZIP_STORED and count:
                offset = member_data_offset(path, info) + member.tell()
                return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)
            data = member.read()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: array '{name}' is not a readable NumPy array ({' '.join(str(exc).split())})") from None
    if len(data) != count * dtype.itemsize:
        raise DataError(f"{path}: array '{name}' promises {count * dtype.itemsize} bytes of data, holds {len(data)} (truncated or corrupt)")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order)


def member_data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes begin: after its local header (30 bytes, then its name and extra field)."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    return info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")


def refuse_objects(path: Path, name: str, dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise DataError(f"{path}: array '{name}' holds Python objects, which kexp never unpickles; save numbers or strings instead")


def file_format(path: Path) -> str:
    """npz or npy, from the file's first bytes (not its name); a DataError for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    if head.startswith(b"PK"):
        return "npz"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    raise DataError(f"{path}: not a NumPy .npz or .npy file (it starts with {head!r})")


def read_npy(path: Path) -> np.ndarray:
    """A .npy file's array, memory-mapped; Python objects are refused, never unpickled."""
    if file_format(path) != "npy":
        raise DataError(f"{path}: an .npz archive where a single .npy array was expected")
    return load_npy(path)


def check_finite(path: Path, name: str, block: np.ndarray, first_row: int) -> None:
    """NaN or infinity in a block of float rows is named by its 1-based row."""
    if np.issubdtype(block.dtype, np.floating) or np.issubdtype(block.dtype, np.complexfloating):
        bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
        if bad.any():
            where = f"{name} row" if name else "row"  # a .npy file's array has no name of its own
            raise DataError(f"{path}: {where} {first_row + int(np.argmax(bad)) + 1} holds NaN or infinite values")


def value_range(path: Path, name: str, array: np.ndarray) -> tuple[float, float]:
    """(lowest, highest) value of an array of numbers, read a block at a time; NaN or infinity names its row."""
    low, high = np.inf, -np.inf
    for start in range(0, len(array), BATCH_SIZE):
        block = np.asarray(array[start : start + BATCH_SIZE])
        check_finite(path, name, block, start)
        if block.size:
            low, high = min(low, float(block.min())), max(high, float(block.max()))
    return low, high


# --- new raw rows for predict ----------------------------------------------------------------


def array_examples(paths: list[Path], shape: tuple[int, ...], trained: np.dtype, warn: Warn,
                   divisor: float | None = None) -> Iterator[tuple[Source, np.ndarray]]:
    """(source, example) for each row of each .npy/.npz file (its 1-based row as the line), read a block at a time."""
    wanted = f"rows shaped [n, {', '.join(map(str, shape))}]"
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: not found; a numpy run predicts from .npy or .npz files of {wanted}")
    for path in paths:
        name, array = predict_array(path)
        rows = rows_of_shape(path, name, array, shape)
        if np.issubdtype(rows.dtype, np.floating) != np.issubdtype(trained, np.floating):
            scaled = f"they are divided by {divisor:g} as the training rows were" if divisor else "they are used as stored, as the training rows were"
            warn(f"{path}: {rows.dtype} values, but the run trained on {trained}; {scaled}, so give values of the same kind "
                 f"(e.g. pixels 0-255, not already scaled to [0, 1]) or the predictions mean nothing")
        for start in range(0, len(rows), BATCH_SIZE):
            block = np.asarray(rows[start : start + BATCH_SIZE])
            check_finite(path, name, block, start)
            yield from ((Source(str(path), str(path), start + i + 1), row) for i, row in enumerate(block))


def predict_array(path: Path) -> tuple[str, np.ndarray]:
    """(name, array) of the rows a predict input holds: a .npy file's array, or an .npz's x, else x_test, else its only array."""
    if file_format(path) == "npy":
        name, array = "", load_npy(path)
    else:
        members = npz_members(path)
        name = next((key for key in PREDICT_KEYS if key in members), next(iter(members)) if len(members) == 1 else None)
        if name is None:
            raise DataError(f"{path}: no array to predict from: expected 'x', 'x_test' or a single array; the file holds {describe_keys(members)}")
        array = npz_array(path, name, members[name])
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(f"{path}: {name or 'the array'} holds {array.dtype} values; the model takes numbers")
    return name, array


def describe_keys(members: dict[str, Any]) -> str:
    return ", ".join(sorted(members)) if members else "no arrays"


def rows_of_shape(path: Path, name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """[n, *shape] rows (one example of the run's shape alone is a batch of one), else a DataError with both shapes."""
    if tuple(array.shape) == shape:
        return array[np.newaxis]
    if array.ndim == len(shape) + 1 and tuple(array.shape[1:]) == shape:
        return array
    dims = ", ".join(map(str, shape))
    raise DataError(f"{path}: {name or 'an array'} of shape {list(array.shape)} does not fit the run's examples of shape {list(shape)} (expected [n, {dims}] or [{dims}])")
