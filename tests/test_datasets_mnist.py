import gzip
import hashlib

import numpy as np
import pytest

from kexp.datasets.mnist import MnistOptions, load_mnist
from kexp.errors import DataError
from tests.conftest import prepared, write_mnist


def test_reads_idx_files_flat_and_scaled(data_dir):
    write_mnist(data_dir / "mnist", n_train=30, n_test=10)
    data = prepared(load_mnist, MnistOptions(), data_dir, seed=0)
    assert data.train.x.shape == (30, 784) and data.test.x.shape == (10, 784)
    # kept as uint8 (a quarter of the memory); the model sees x / 255, and transform gives those floats
    assert data.train.x.dtype == np.uint8 and data.train.divisor == 255.0
    floats = data.preprocessing.transform(np.zeros((1, 28, 28), np.uint8) + 255)
    assert floats.dtype == np.float32 and floats.shape == (1, 784) and floats.max() == 1.0
    assert list(data.train.y[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert data.num_classes == 10 and data.input_shape == (784,)


def test_images_for_cnn_and_limits(data_dir):
    write_mnist(data_dir, n_train=30, n_test=10)  # also found directly in the data dir
    data = prepared(load_mnist, MnistOptions(flatten=False, limit_train=20, limit_test=5), data_dir, seed=0)
    assert data.train.x.shape == (20, 28, 28, 1) and data.test.x.shape == (5, 28, 28, 1)


def test_reads_keras_npz_when_no_idx_files(data_dir):
    rng = np.random.default_rng(0)
    np.savez(data_dir / "mnist.npz", x_train=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), y_train=np.arange(12) % 10,
             x_test=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), y_test=np.arange(4))
    data = prepared(load_mnist, MnistOptions(), data_dir, seed=0)
    assert len(data.train) == 12 and len(data.test) == 4
    npz = data_dir / "mnist.npz"
    sha = hashlib.sha256(npz.read_bytes()).hexdigest()
    assert data.summary["files"] == [{"path": str(npz.absolute()), "bytes": npz.stat().st_size, "sha256": sha}]


def test_truncated_file_is_named(data_dir):
    folder = write_mnist(data_dir / "mnist")
    path = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: header promises 30x28x28 = 23520 bytes of data, file holds 23420"):
        prepared(load_mnist, MnistOptions(), data_dir, seed=0)


def test_corrupt_gzip_is_named(data_dir):
    folder = write_mnist(data_dir / "mnist")
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: cannot decompress"):
        prepared(load_mnist, MnistOptions(), data_dir, seed=0)


def test_swapped_files_fail_on_magic(data_dir):
    folder = write_mnist(data_dir / "mnist")
    (folder / "train-labels-idx1-ubyte.gz").write_bytes((folder / "train-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match="IDX magic number is 2051, expected 2049"):
        prepared(load_mnist, MnistOptions(), data_dir, seed=0)


def test_label_out_of_range(data_dir):
    from tests.conftest import write_idx

    folder = write_mnist(data_dir / "mnist")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.full(10, 12), 2049)
    with pytest.raises(DataError, match="test label 12 is outside 0-9"):
        prepared(load_mnist, MnistOptions(), data_dir, seed=0)


def test_missing_files_say_where_and_how(data_dir):
    with pytest.raises(DataError) as info:
        prepared(load_mnist, MnistOptions(), data_dir, seed=0)
    assert str(data_dir) in str(info.value) and "kexp data fetch mnist" in str(info.value)


def test_summary_files_are_absolute_with_sizes(data_dir, monkeypatch):
    write_mnist(data_dir / "mnist")
    monkeypatch.chdir(data_dir.parent)
    data = prepared(load_mnist, MnistOptions(), data_dir.relative_to(data_dir.parent), seed=0)
    files = data.summary["files"]
    assert len(files) == 4 and all(f["path"].startswith("/") for f in files)
    assert {f["bytes"] for f in files} == {p.stat().st_size for p in (data_dir / "mnist").iterdir()}
    assert {f["sha256"] for f in files} == {hashlib.sha256(p.read_bytes()).hexdigest() for p in (data_dir / "mnist").iterdir()}


def test_empty_official_split_is_an_error(data_dir):
    from tests.conftest import write_idx

    folder = write_mnist(data_dir / "mnist")
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28)), 2051)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(0), 2049)
    with pytest.raises(DataError, match="the test split has no rows"):
        prepared(load_mnist, MnistOptions(), data_dir, seed=0)
