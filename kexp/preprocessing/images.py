"""The `images` kind (mnist): uint8 greyscale images, scaled to [0, 1], flattened or with a channel axis.

Nothing is fitted; the state is {"image_shape", "scale", "flatten"}. New raw inputs for
predict are PNG/JPEG files (greyscale, resized with a warning to the run's size), .npy
arrays and IDX files, read a block at a time so a batch of any size streams.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kexp.errors import DataError
from kexp.preprocessing.inputs import BATCH_SIZE, Source, Warn
from kexp.preprocessing.kinds import StackedArrays, generic_inputs, preprocessing_kind, select

# The IDX header of unsigned-byte 3-D data (0x0803), as MNIST's image files open.
IMAGE_MAGIC = 2051  # the IDX images magic number (MNIST's files; predict's .idx inputs)


@preprocessing_kind("images")
@dataclass
class FittedImages(StackedArrays):
    """uint8 greyscale images -> float32 (scaled to [0, 1]), flattened or with a channel axis."""

    image_shape: list[int]
    scale: bool = True
    flatten: bool = True
    kind: ClassVar[str]
    encodes_in_worker: ClassVar[bool] = False

    def fit(self, inputs: np.ndarray, train_rows: np.ndarray) -> FittedImages:
        return self  # pixel scaling has nothing to learn from the data

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FittedImages:
        return cls(**state)

    def state(self) -> dict[str, Any]:
        return {"image_shape": self.image_shape, "scale": self.scale, "flatten": self.flatten}

    def input_shape(self) -> tuple[int, ...]:
        return (int(np.prod(self.image_shape)),) if self.flatten else (*self.image_shape, 1)

    def transform(self, inputs: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        x, divisor = self.transform_compact(inputs, rows)
        x = x.astype(np.float32)
        if divisor is not None:
            x /= divisor
        return x

    def transform_compact(self, inputs: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, float | None]:
        """The images shaped for the model but still uint8 (a quarter of float32's memory), and what
        to divide them by; training divides per batch, giving the same floats as transform."""
        images = select(inputs, rows)
        if tuple(images.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"expected images of {'x'.join(map(str, self.image_shape))} pixels, got shape {images.shape[1:]}")
        x = images.reshape(len(images), -1) if self.flatten else images[..., np.newaxis]
        return x, 255.0 if self.scale else None

    def read_examples(self, inputs: Sequence[str], layout: Any, warn: Warn) -> Iterator[tuple[Source, np.ndarray]]:
        return image_examples([Path(i) for i in inputs], tuple(self.image_shape), warn)

    @classmethod
    def sample_inputs(cls, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype, state: dict[str, Any],
                      id_limit: Callable[[int], int]) -> np.ndarray:
        """Rows like encoded images, for export's check: pixels in [0, 1], as scaled images are."""
        if np.issubdtype(dtype, np.integer):
            return generic_inputs(rng, shape, dtype)
        return rng.uniform(0.0, 1.0, size=shape).astype(dtype)


# --- new raw images for predict ----------------------------------------------------------------


def image_examples(paths: list[Path], shape: tuple[int, ...], warn: Warn) -> Iterator[tuple[Source, np.ndarray]]:
    """(source, uint8 [h, w] image) from each PNG/JPEG, and from each row of .npy and IDX batches
    (its 1-based row as the line), read a block at a time."""
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: not found; an image run predicts from PNG/JPEG, .npy or IDX (*-ubyte[.gz]) files")
    for path in paths:
        if path.suffix == ".npy":
            blocks = npy_blocks(path, shape)
        elif is_idx(path):
            blocks = idx_blocks(path, shape)
        else:
            yield Source(str(path), str(path)), decode_image(path, shape, warn)
            continue
        for start, block in blocks:
            yield from ((Source(str(path), str(path), start + i + 1), image) for i, image in enumerate(block))


def npy_blocks(path: Path, shape: tuple[int, ...]) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, uint8 images) of a .npy batch, memory-mapped: only one block is in memory at a time."""
    images = check_image_shape(path, load_npy(path), shape)
    scale = pixel_scale(path, images)
    for start in range(0, len(images), BATCH_SIZE):
        yield start, pixels_as_uint8(path, images[start : start + BATCH_SIZE], scale)


def idx_blocks(path: Path, shape: tuple[int, ...]) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, images) of an IDX image file (gzip or raw), decompressed a block at a time."""
    import gzip
    import zlib

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or int.from_bytes(head, "big") != IMAGE_MAGIC:
                found = int.from_bytes(head, "big") if len(head) == 4 else None
                raise DataError(f"{path}: not an IDX image file (magic number {found}, expected {IMAGE_MAGIC})")
            dims = [int.from_bytes(f.read(4), "big") for _ in range(head[3])]
            if len(dims) < 2:
                raise DataError(f"{path}: an IDX file of {len(dims)}-dimensional data, not a batch of images")
            count, image = dims[0], dims[1:]
            if len(dims) == 2:  # one image [h, w], as check_image_shape accepts
                count, image = 1, dims
            if tuple(image) != shape:
                raise DataError(f"{path}: images of shape {dims} do not fit the run's {'x'.join(map(str, shape))} images")
            size = int(np.prod(image))
            for start in range(0, count, BATCH_SIZE):
                n = min(BATCH_SIZE, count - start)
                raw = f.read(n * size)
                if len(raw) != n * size:
                    raise DataError(f"{path}: header promises {count} images, the file ends after {start + len(raw) // size} (truncated or corrupt)")
                yield start, np.frombuffer(raw, dtype=np.uint8).reshape(n, *image)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot decompress: {' '.join(str(exc).split())}") from None


def is_idx(path: Path) -> bool:
    return path.name.endswith("-ubyte") or path.suffix in (".gz", ".idx")


def load_npy(path: Path) -> np.ndarray:
    """The array of a .npy file, memory-mapped where the format allows (pages are read as they are used)."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a NumPy .npy array ({' '.join(str(exc).split())})") from None


def pixel_scale(path: Path, array: np.ndarray) -> float:
    """What turns the whole array's pixels into 0-255: 1, or 255 for floats in [0, 1]; checked a block at a time."""
    if array.dtype == np.uint8:
        return 1.0
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{path}: pixels of type {array.dtype}; expected uint8 (0-255) or floats in [0, 1]")
    if array.size == 0:
        return 1.0
    low, high = math.inf, -math.inf
    for start in range(0, len(array), BATCH_SIZE):
        block = np.asarray(array[start : start + BATCH_SIZE])
        if np.issubdtype(block.dtype, np.floating) and not np.isfinite(block).all():
            raise DataError(f"{path}: pixels include NaN or infinite values")
        low, high = min(low, float(block.min())), max(high, float(block.max()))
    if low < 0 or high > 255:
        raise DataError(f"{path}: pixel values run from {low:g} to {high:g}; expected 0-255 (uint8) or floats in [0, 1]")
    return 255.0 if np.issubdtype(array.dtype, np.floating) and high <= 1.0 else 1.0


def pixels_as_uint8(path: Path, array: np.ndarray, scale: float | None = None) -> np.ndarray:
    """uint8 pixels from integers in 0-255, or floats in [0, 1] (scaled back to 0-255) or 0-255."""
    scale = pixel_scale(path, array) if scale is None else scale
    if array.dtype == np.uint8:
        return np.asarray(array)
    return np.rint(np.asarray(array) * scale).astype(np.uint8)


def check_image_shape(path: Path, images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """[n, h, w] images of the run's shape (one [h, w] image is a batch of one), else a DataError with both shapes.

    Arrays shaped as the model takes them are accepted too: [n, h*w] (flattened) and [n, h, w, 1].
    """
    pixels = int(np.prod(shape))
    if images.ndim == 2 and images.shape[1] == pixels and tuple(images.shape) != shape:
        images = images.reshape(len(images), *shape)
    elif images.ndim == len(shape) + 2 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim == len(shape):
        images = images[np.newaxis]
    if images.ndim != len(shape) + 1 or tuple(images.shape[1:]) != shape:
        wanted = "x".join(map(str, shape))
        raise DataError(f"{path}: images of shape {list(images.shape)} do not fit the run's {wanted} images (expected [n, {', '.join(map(str, shape))}] or [{', '.join(map(str, shape))}])")
    return images


def decode_image(path: Path, shape: tuple[int, ...], warn: Warn) -> np.ndarray:
    """A PNG/JPEG as a uint8 greyscale [h, w] array, resized (with a warning) to the run's size."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns (above MAX_IMAGE_PIXELS) before it refuses (twice that): both are one line here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)  # phone photos are stored sideways with a rotation tag
                grey = flatten_alpha(image).convert("L")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DataError(f"{path}: too large to decode safely (more than Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} pixels, "
                        "a possible decompression bomb); resize it first") from None
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not an image Pillow can read ({type(exc).__name__}); use PNG/JPEG, .npy or IDX files") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot decode the image ({' '.join(str(exc).split())})") from None
    height, width = shape
    if grey.size != (width, height):
        stretched = grey.size[0] * height != grey.size[1] * width
        warn(f"{path}: {grey.size[0]}x{grey.size[1]} image resized to the run's {width}x{height}{' (stretched: aspect ratio not kept)' if stretched else ''}")
        grey = grey.resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.uint8)
    if pixels.mean() > 127:
        # MNIST digits are white on black; inverting silently would hide a real mismatch.
        warn(f"{path}: mostly light pixels, but MNIST-style images are light strokes on a dark background; invert it if it is dark ink on white (kexp does not)")
    return pixels


def flatten_alpha(image: Any) -> Any:
    """Transparent pixels become black, the background of the training images."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba)
    return image

