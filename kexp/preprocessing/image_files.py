"""The `image_files` kind (image_folder): image files decoded, resized and scaled in the input pipeline.

Nothing is fitted; the state is {"image_size", "color_mode", "scale"}. A part's inputs are an
ImageFiles (the files' paths and how to decode them), not pixels: kexp.train.image_feeds reads
and decodes them batch by batch, so a folder of any size trains in bounded memory. Training,
scoring and predict decode a file with one function (decode_pixels), so a file gives the same
pixels in each. New raw inputs for predict are image files and folders of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from kexp.errors import DataError
from kexp.preprocessing.inputs import Source, Warn
from kexp.preprocessing.kinds import generic_inputs, preprocessing_kind, select
from kexp.registry import Options

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
CHANNELS = {"grayscale": 1, "rgb": 3}


class AugmentOptions(Options):
    """Random changes to training batches (Keras preprocessing layers, seeded by the run's seed); all off by default."""

    flip: Literal["horizontal", "vertical", "horizontal_and_vertical"] | None = Field(default=None, description="keras.layers.RandomFlip's mode")
    rotation: float = Field(default=0.0, ge=0.0, le=1.0, description="keras.layers.RandomRotation's factor: up to this fraction of a full turn either way")
    zoom: float = Field(default=0.0, ge=0.0, lt=1.0, description="keras.layers.RandomZoom's factor: zoom in or out by up to this fraction")
    contrast: float = Field(default=0.0, ge=0.0, le=1.0, description="keras.layers.RandomContrast's factor")

    def active(self) -> bool:
        return self.flip is not None or any(v > 0 for v in (self.rotation, self.zoom, self.contrast))


@dataclass(frozen=True)
class ImageDecoding:
    """How a file becomes model inputs: [height, width, channels] float32, resized bilinearly, scaled to [0, 1] or 0-255."""

    image_size: tuple[int, int]
    channels: int
    scale: bool


@dataclass(frozen=True)
class ImageFiles:
    """A part's inputs as image files, read and decoded batch by batch in the input pipeline.

    `augment` is applied by the training stream only (kexp.train.image_feeds), never when scoring or predicting.
    """

    paths: np.ndarray  # bytes (np.bytes_), one file per row: 100,000 paths are a few MB
    decoding: ImageDecoding
    augment: AugmentOptions | None = None

    def __len__(self) -> int:
        return len(self.paths)


@preprocessing_kind("image_files")
@dataclass
class FittedImageFiles:
    """Image file paths -> ImageFiles parts (decoded in the pipeline); new files -> float32 [n, h, w, c] for predict."""

    image_size: list[int]
    color_mode: str = "rgb"
    scale: bool = True
    # the training stream's augmentation: a dataset option, not saved (evaluate and predict never augment)
    augment: AugmentOptions | None = None
    kind: ClassVar[str]
    encodes_in_worker: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.color_mode not in CHANNELS or len(self.image_size) != 2:
            raise ValueError(f"image_size {self.image_size} / color_mode {self.color_mode!r}: expected [height, width] and grayscale or rgb")

    def fit(self, inputs: np.ndarray, train_rows: np.ndarray) -> FittedImageFiles:
        return self  # decoding has nothing to learn from the data

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FittedImageFiles:
        return cls(**state)

    def state(self) -> dict[str, Any]:
        return {"image_size": list(self.image_size), "color_mode": self.color_mode, "scale": self.scale}

    @property
    def decoding(self) -> ImageDecoding:
        return ImageDecoding((int(self.image_size[0]), int(self.image_size[1])), CHANNELS[self.color_mode], self.scale)

    def input_shape(self) -> tuple[int, ...]:
        return (*self.decoding.image_size, self.decoding.channels)

    def transform(self, inputs: np.ndarray, rows: np.ndarray | None = None) -> ImageFiles:
        """The rows' files, to be decoded in the input pipeline (Split.x of a streamed part)."""
        return ImageFiles(np.asarray(select(inputs, rows)), self.decoding, self.augment)

    def read_examples(self, inputs: Sequence[str], layout: Any, warn: Warn) -> Iterator[tuple[Source, str]]:
        """Each image file, and each image file under a folder (sorted, recursively), named by its path."""
        for path in expand_inputs([Path(i) for i in inputs]):
            problem = image_file_problem(path)
            if problem:
                raise DataError(f"{path}: {problem}")
            yield Source(str(path), str(path)), str(path)

    def stack(self, examples: list[str]) -> list[str]:
        return examples

    def encode(self, examples: list[str]) -> np.ndarray:
        """The files decoded as training decodes them (decode_pixels), stacked; DataError names a file that fails."""
        return np.stack([decode_file(Path(p), self.decoding) for p in examples])

    @classmethod
    def sample_inputs(cls, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype, state: dict[str, Any],
                      id_limit: Callable[[int], int]) -> np.ndarray:
        """Rows like decoded images, for export's check: pixels in [0, 1], or 0-255 unscaled."""
        if np.issubdtype(dtype, np.integer):
            return generic_inputs(rng, shape, dtype)
        return rng.uniform(0.0, 1.0 if state.get("scale", True) else 255.0, size=shape).astype(dtype)


def expand_inputs(paths: list[Path]) -> Iterator[Path]:
    """Files as given; a folder's image files (sorted, recursively; hidden files left out); a missing path is a DataError."""
    for path in paths:
        if path.is_dir():
            yield from list_image_files(path)
        elif path.is_file():
            yield path
        else:
            raise DataError(f"{path}: not found; an image_folder run predicts from image files ({', '.join(IMAGE_SUFFIXES)}) and folders of them")


def list_image_files(folder: Path) -> list[Path]:
    """Every image file under `folder`, sorted by path (deterministic); hidden files and folders are left out."""
    files = [p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES)


# --- cheap checks before anything is decoded -------------------------------------------------

# A truncated file is the common damage: each format's end marker is looked for in its last bytes
# (a window, not the very end: some cameras and editors append data that decoders ignore).
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
TAIL_BYTES = 1024


def image_file_problem(path: Path) -> str | None:
    """Why `path` is not a whole PNG/JPEG/BMP/GIF file (name, magic bytes, end marker), or None.

    Two small reads per file, so a folder of 100,000 images is checked in seconds before
    training starts; damage inside a file is only found by decoding (see decode_failure).
    """
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (expected {', '.join(IMAGE_SUFFIXES)})"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return format_problem(head, tail, size)


def format_problem(head: bytes, tail: bytes, size: int) -> str | None:
    """The problem of a file with these first and last bytes, or None when it looks like a whole image."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None if PNG_END in tail else "a truncated PNG (no IEND chunk at its end)"
    if head.startswith(b"\xff\xd8\xff"):
        return None if b"\xff\xd9" in tail else "a truncated JPEG (no end-of-image marker)"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return None if tail.rstrip(b"\x00").endswith(b";") else "a truncated GIF (no trailer byte)"  # 0x3B ends it
    if head.startswith(b"BM"):
        declared = int.from_bytes(head[2:6], "little")
        return None if declared <= size else f"a truncated BMP ({size} bytes, its header says {declared})"
    if size == 0:
        return "an empty file"
    return "not a PNG, JPEG, BMP or GIF image (its first bytes are none of theirs)"


# --- decoding: the one function training, scoring and predict use -----------------------------


def decode_pixels(contents, decoding: ImageDecoding):
    """A file's bytes -> float32 [h, w, channels]: first frame of a GIF, alpha dropped, resized
    bilinearly (as Keras' image_dataset_from_directory), divided by 255 when scaled.

    Decoded with the file's own channels and converted here, because TensorFlow's BMP and GIF
    decoders refuse channels=1; a greyscale file read as rgb repeats its one channel exactly.
    """
    import tensorflow as tf

    image = tf.io.decode_image(contents, channels=0, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, None])
    colour = tf.shape(image)[-1] >= 3
    if decoding.channels == 1:
        image = tf.cond(colour, lambda: tf.image.rgb_to_grayscale(image[..., :3]), lambda: image[..., :1])
    else:
        image = tf.cond(colour, lambda: image[..., :3], lambda: tf.repeat(image[..., :1], 3, axis=-1))
    image.set_shape([None, None, decoding.channels])
    pixels = tf.image.resize(image, decoding.image_size)
    return pixels / 255.0 if decoding.scale else pixels


def decode_file(path: Path, decoding: ImageDecoding) -> np.ndarray:
    """One file decoded eagerly by decode_pixels (predict's way), or a DataError naming it."""
    import tensorflow as tf

    problem = image_file_problem(path)
    if problem:
        raise DataError(f"{path}: {problem}")
    try:
        return decode_pixels(tf.io.read_file(str(path)), decoding).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
        raise DataError(f"{path}: {undecodable(exc)}") from None


def undecodable(exc: Exception) -> str:
    """TensorFlow's reason for not decoding a file, on one line."""
    return f"cannot decode the image ({' '.join(str(getattr(exc, 'message', exc)).split())})"


def decode_failure(path: Path, decoding: ImageDecoding) -> str | None:
    """Why `path` does not decode, or None when it does."""
    try:
        decode_file(path, decoding)
    except DataError as exc:
        return str(exc).removeprefix(f"{path}: ")
    return None


def first_undecodable(files: ImageFiles) -> tuple[Path, str] | None:
    """The first of `files` that fails to decode and why, or None: looked for only after the input
    pipeline failed, since TensorFlow's error there does not say which file it was reading."""
    for raw in files.paths:
        path = Path(os.fsdecode(raw))
        problem = decode_failure(path, files.decoding)
        if problem:
            return path, problem
    return None
