"""`mnist`: LeCun's four IDX files (gzipped or not), or a Keras `mnist.npz`."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
from pydantic import Field, PositiveInt

from kexp.datasets.base import DATA_DIR_ENV, RawData
from kexp.errors import DataError
from kexp.preprocessing import FittedImages
from kexp.preprocessing.images import IMAGE_MAGIC
from kexp.registry import Options, dataset

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
LABEL_MAGIC = 2049  # an IDX label file; IMAGE_MAGIC belongs to the images kind, which reads IDX images for predict


class MnistOptions(Options):
    flatten: bool = Field(default=True, description="784-vectors for dense models; false gives 28x28x1 images")
    scale: bool = Field(default=True, description="pixels as float32 in [0, 1] instead of 0-255")
    limit_train: PositiveInt | None = Field(default=None, description="use only the first N training images")
    limit_test: PositiveInt | None = None

    def static_num_classes(self) -> int | None:
        return 10


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Decode one IDX file (gzip or raw), checking its header against its size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot decompress: {exc}") from None
    if len(raw) < 8:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: IDX magic number is {found}, expected {magic}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DataError(f"{path}: header promises {'x'.join(map(str, dims))} = {expected} bytes of data, file holds {len(raw) - offset} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _idx_path(data_dir: Path, stem: str) -> Path | None:
    for folder in (data_dir / "mnist", data_dir):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def read_mnist_arrays(data_dir: Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    """The four arrays as uint8, from IDX files if present, else mnist.npz."""
    paths = {key: _idx_path(data_dir, stem) for key, stem in IDX_FILES.items()}
    if all(paths.values()):
        arrays = {key: read_idx(p, IMAGE_MAGIC if key.startswith("x") else LABEL_MAGIC) for key, p in paths.items()}
        return arrays, list(paths.values())
    for npz in (data_dir / "mnist.npz", data_dir / "mnist" / "mnist.npz"):
        if npz.is_file():
            try:
                with np.load(npz) as f:
                    return {key: f[key] for key in IDX_FILES}, [npz]
            except (OSError, ValueError, KeyError, EOFError) as exc:
                raise DataError(f"{npz}: not a Keras mnist.npz ({exc})") from None
    missing = [IDX_FILES[k] + ".gz" for k, p in paths.items() if p is None]
    raise DataError(
        f"mnist: data not found in {data_dir}/mnist or {data_dir} (missing {', '.join(missing)}; no mnist.npz either). "
        f"Point --data-dir or {DATA_DIR_ENV} at the folder holding them, or run `kexp data fetch mnist`."
    )


def check_mnist(arrays: dict[str, np.ndarray], source: str) -> None:
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{source}: {split} images have shape {x.shape}, expected (N, 28, 28)")
        if len(x) != len(y):
            raise DataError(f"{source}: {len(x)} {split} images but {len(y)} labels")
        if y.size and y.max() > 9:
            raise DataError(f"{source}: {split} label {int(y.max())} is outside 0-9")


@dataset("mnist", MnistOptions)
def load_mnist(options: MnistOptions, data_dir: Path, seed: int) -> RawData:
    """MNIST digits: 60,000 train and 10,000 test 28x28 images, 10 classes (official split)."""
    arrays, files = read_mnist_arrays(data_dir)
    source = str(files[0]) if len(files) == 1 else str(data_dir)
    check_mnist(arrays, source)
    n_train, n_test = options.limit_train, options.limit_test
    x_train, y_train = arrays["x_train"][:n_train], arrays["y_train"][:n_train]
    x_test, y_test = arrays["x_test"][:n_test], arrays["y_test"][:n_test]
    # uint8 until the pipeline transforms a part: 55 MB for all 70,000 images instead of 220 MB
    return RawData(
        inputs=np.concatenate([x_train, x_test]),
        labels=np.concatenate([y_train, y_test]).astype(np.int32),
        class_names=[str(d) for d in range(10)],
        preprocessor=FittedImages([28, 28], scale=options.scale, flatten=options.flatten),
        is_test=np.repeat([False, True], [len(y_train), len(y_test)]),
        files=files,
    )
