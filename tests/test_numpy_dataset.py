"""The numpy dataset (kexp/datasets/numpy.py) and the arrays preprocessing kind (kexp/preprocessing/arrays.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kexp.cli import app
from kexp.datasets.numpy import NumpyOptions, load_numpy
from kexp.errors import DataError
from kexp.preprocessing.arrays import FittedArrays
from tests.conftest import prepared, smoke_spec, write_spec

RNG = np.random.default_rng(0)


def pixels(n: int, shape=(6, 6), dtype=np.uint8) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, *shape)).astype(dtype)


def load(data_dir: Path, **options):
    return prepared(load_numpy, NumpyOptions(**options), data_dir)


# --- layouts ---------------------------------------------------------------------------------


def test_npz_with_x_and_y_holds_out_a_seeded_stratified_test_part(data_dir):
    np.savez(data_dir / "d.npz", x=pixels(60), y=np.arange(60) % 3)
    data = load(data_dir, path="d.npz")
    assert (len(data.train), len(data.test)) == (48, 12) and data.class_names == ["0", "1", "2"]
    assert np.bincount(data.test.y).tolist() == [4, 4, 4]
    assert data.input_shape == (6, 6) and data.summary["arrays"] == "x/y"
    again = load(data_dir, path="d.npz")
    assert np.array_equal(again.test.x, data.test.x)
    assert (len(load(data_dir, path="d.npz", test_fraction=0.0).train), load(data_dir, path="d.npz", test_fraction=0.0).test) == (60, None)


def test_npz_with_an_official_split_is_used_as_is(data_dir):
    x_train, x_test = pixels(30), pixels(12)
    # y_test [n, 1], as keras.datasets gives CIFAR's labels
    np.savez(data_dir / "d.npz", x_train=x_train, y_train=np.array(["cat", "dog"] * 15), x_test=x_test, y_test=np.array([["dog"], ["cat"]] * 6))
    data = load(data_dir, path=str(data_dir / "d.npz"))  # an absolute path is taken as given
    assert (len(data.train), len(data.test)) == (30, 12) and data.class_names == ["cat", "dog"]
    assert np.array_equal(data.test.x, x_test) and np.array_equal(data.train.x, x_train) and data.test.y.tolist() == [1, 0] * 6
    assert load(data_dir, path="d.npz", class_names=["dog", "cat"]).test.y.tolist() == [0, 1] * 6


def test_a_pair_of_npy_files_is_memory_mapped(data_dir):
    x = RNG.normal(size=(40, 3)).astype(np.float32)
    np.save(data_dir / "features.npy", x)
    np.save(data_dir / "labels.npy", np.where(np.arange(40) % 2, 10, 2))  # ids 2, 10: named by their values, in numeric order
    raw = load_numpy(NumpyOptions(path={"x": "features.npy", "y": "labels.npy"}), data_dir, 0)
    assert isinstance(raw.inputs.parts[0], np.memmap) and raw.class_names == ["2", "10"] and raw.labels.tolist()[:4] == [0, 1, 0, 1]
    assert [Path(f).name for f in raw.files] == ["features.npy", "labels.npy"]
    data = load(data_dir, path={"x": "features.npy", "y": "labels.npy"}, test_fraction=0.0)
    assert np.array_equal(data.train.x, x) and data.train.divisor is None


def test_npz_members_are_memory_mapped_when_stored_and_read_whole_when_compressed(data_dir):
    x = pixels(20)
    np.savez(data_dir / "plain.npz", x=x, y=np.arange(20) % 2)
    np.savez_compressed(data_dir / "small.npz", x=x, y=np.arange(20) % 2)
    plain, small = (load_numpy(NumpyOptions(path=name), data_dir, 0) for name in ("plain.npz", "small.npz"))
    assert isinstance(plain.inputs.parts[0], np.memmap) and not isinstance(small.inputs.parts[0], np.memmap)
    assert np.array_equal(plain.inputs.parts[0], x) and np.array_equal(small.inputs.parts[0], x)


def test_regression_targets_and_a_channel_axis(data_dir):
    np.savez(data_dir / "d.npz", x=pixels(30), y=np.linspace(0, 1, 30))
    data = load(data_dir, path="d.npz", task="regression", add_channel=True)
    assert data.task == "regression" and data.class_names == [] and data.train.y.dtype == np.float32
    assert data.input_shape == (6, 6, 1) and data.train.x.shape[1:] == (6, 6, 1)


# --- scaling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_integer_pixels_stay_uint8_and_the_model_sees_them_in_0_1(data_dir, dtype):
    x = pixels(20, dtype=dtype)
    x[0, 0, 0] = 255
    np.savez(data_dir / "d.npz", x=x, y=np.arange(20) % 2)
    data = load(data_dir, path="d.npz", test_fraction=0.0)
    assert data.train.x.dtype == np.uint8 and data.train.divisor == 255.0  # compact; divided per batch
    seen = data.preprocessing.transform(x)
    assert seen.dtype == np.float32 and seen.min() >= 0 and seen.max() == 1.0
    assert np.allclose(seen, x / 255.0)
    assert data.summary["scale"].startswith("auto: ")


def test_floats_and_wide_integers_are_untouched_none_keeps_pixels_and_a_factor_divides(data_dir):
    floats = RNG.normal(size=(20, 4)) * 100
    np.savez(data_dir / "f.npz", x=floats, y=np.arange(20) % 2)
    data = load(data_dir, path="f.npz", test_fraction=0.0)
    assert data.train.divisor is None and np.allclose(data.train.x, floats.astype(np.float32))
    wide = RNG.integers(0, 1000, size=(20, 4))
    np.savez(data_dir / "w.npz", x=wide, y=np.arange(20) % 2)
    data = load(data_dir, path="w.npz", test_fraction=0.0)
    assert data.train.divisor is None and data.train.x.dtype == np.float32 and np.array_equal(data.train.x, wide)
    np.savez(data_dir / "p.npz", x=pixels(20), y=np.arange(20) % 2)
    data = load(data_dir, path="p.npz", test_fraction=0.0, scale="none")
    assert data.train.divisor is None and data.preprocessing.transform(np.full((1, 6, 6), 200, np.uint8)).max() == 200
    np.savez(data_dir / "mixed.npz", x_train=pixels(20), y_train=np.arange(20) % 2, x_test=pixels(4) + 0.5, y_test=np.arange(4) % 2)
    data = load(data_dir, path="mixed.npz")  # a float part: nothing is cast to uint8, nothing divided
    assert data.test.x.dtype == np.float32 and data.test.divisor is None and (data.test.x % 1 == 0.5).all()
    data = load(data_dir, path="p.npz", test_fraction=0.0, scale=10)
    assert data.train.divisor == 10.0 and data.preprocessing.transform(np.full((1, 6, 6), 200, np.uint8)).max() == 20


def test_saved_state_round_trips_and_export_samples_scaled_rows():
    fitted = FittedArrays([6, 6], "uint8", 255.0, True, "uint8")
    again = FittedArrays.from_state(json.loads(json.dumps(fitted.state())))
    assert again == fitted and again.input_shape() == (6, 6, 1)
    rows = FittedArrays.sample_inputs(np.random.default_rng(0), (8, 6, 6, 1), np.dtype(np.float32), fitted.state(), lambda n: n)
    assert rows.shape == (8, 6, 6, 1) and rows.min() >= 0 and rows.max() <= 1


# --- bad input: one line naming the file -----------------------------------------------------


def bad_npz(data_dir: Path, **arrays) -> str:
    np.savez(data_dir / "bad.npz", **arrays)
    return "bad.npz"


class Touch:
    """Unpickling this creates `marker`: an object array that is ever unpickled leaves the file behind."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


OK_X, OK_Y = RNG.normal(size=(10, 3)), np.arange(10) % 2
BAD_INPUTS = [
    ("missing", lambda d: "nowhere.npz", r"numpy: data file not found \(looked for .*nowhere.npz\)"),
    ("text file", lambda d: (d / "t.npz").write_text("a,b\n") and "t.npz", r"t.npz: not a NumPy .npz or .npy file"),
    ("one npy", lambda d: np.save(d / "one.npy", OK_X) or "one.npy", r"one.npy: a single .npy array; give the features and labels as path: \{x: one.npy"),
    ("keys", lambda d: bad_npz(d, images=OK_X, labels=OK_Y), r"bad.npz: holds no arrays x and y, or x_train, .* \(the file holds images, labels\)"),
    ("both layouts", lambda d: bad_npz(d, x=OK_X, y=OK_Y, x_train=OK_X, y_train=OK_Y, x_test=OK_X, y_test=OK_Y), r"bad.npz: holds both x/y and"),
    ("lengths", lambda d: bad_npz(d, x=OK_X, y=OK_Y[:7]), r"bad.npz: y has 7 rows but x has 10"),
    ("one-hot y", lambda d: bad_npz(d, x=OK_X, y=np.eye(2)[OK_Y]), r"bad.npz: y has shape \[10, 2\]; labels must be one per row, shape \[n\] \(one-hot\?"),
    ("nan", lambda d: bad_npz(d, x=np.where(np.arange(30).reshape(10, 3) == 13, np.nan, OK_X), y=OK_Y), r"bad.npz: x row 5 holds NaN or infinite values"),
    ("1-D x", lambda d: bad_npz(d, x=OK_X[:, 0], y=OK_Y), r"bad.npz: x has shape \[10\]; examples need a feature axis"),
    ("string x", lambda d: bad_npz(d, x=OK_X.astype(str), y=OK_Y), r"bad.npz: x holds <U\d+ values; the model takes real numbers"),
    ("no rows", lambda d: bad_npz(d, x=OK_X[:0], y=OK_Y[:0]), r"bad.npz: x has no rows"),
    ("fractional y", lambda d: bad_npz(d, x=OK_X, y=OK_Y + 0.5), r"bad.npz: y row 1 holds 0.5, not a class id; .* set task: regression"),
    ("one class", lambda d: bad_npz(d, x=OK_X, y=OK_Y * 0), r"bad.npz: y holds a single class \(\['0'\]\); need at least two"),
    ("test shape", lambda d: bad_npz(d, x_train=OK_X, y_train=OK_Y, x_test=OK_X[:, :2], y_test=OK_Y), r"bad.npz: x_test examples have shape \[2\], but x_train's \(bad.npz\) have \[3\]"),
    ("pickle npz", lambda d: bad_npz(d, x=np.array([Touch(d / "unpickled")] * 10, dtype=object), y=OK_Y),
     r"bad.npz: array 'x' holds Python objects, which kexp never unpickles"),
    ("pickle npy", lambda d: np.save(d / "x.npy", np.array([Touch(d / "unpickled")] * 10, dtype=object)) or np.save(d / "y.npy", OK_Y) or {"x": "x.npy", "y": "y.npy"},
     r"x.npy: not a NumPy .npy array \(.*Python objects"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "says"), BAD_INPUTS, ids=[case for case, _, _ in BAD_INPUTS])
def test_bad_input_is_one_line_naming_the_file(data_dir, case, make, says):
    path = make(data_dir)
    with pytest.raises(DataError, match=says) as caught:
        load_numpy(NumpyOptions(path=path), data_dir, 0)
    assert "\n" not in str(caught.value)
    assert not (data_dir / "unpickled").exists()  # allow_pickle stays off: no object is ever built


def test_labels_outside_class_names_name_the_row(data_dir):
    np.savez(data_dir / "ids.npz", x=OK_X, y=np.arange(10) % 4)
    with pytest.raises(DataError, match=r"ids.npz: y row 4 holds class id 3, but class_names names 3 classes \(ids 0-2\)"):
        load_numpy(NumpyOptions(path="ids.npz", class_names=["a", "b", "c"]), data_dir, 0)
    np.savez(data_dir / "names.npz", x_train=OK_X, y_train=np.array(["a", "b"] * 5), x_test=OK_X, y_test=np.array(["a"] * 9 + ["z"]))
    with pytest.raises(DataError, match=r"names.npz: y_test row 10 has label 'z', which is not one of the classes \['a', 'b'\]"):
        load_numpy(NumpyOptions(path="names.npz", class_names=["a", "b"]), data_dir, 0)


def test_validate_checks_the_options(runner, tmp_path):
    ok = write_spec(tmp_path / "ok.yaml", smoke_spec(data={"name": "numpy", "path": {"x": "a.npy", "y": "b.npy"}, "scale": 255}))
    assert runner.invoke(app, ["validate", str(ok)]).exit_code == 0
    for data, says in [({"path": {"x": "a.npy"}}, "give .npy files for x and y, or x_train"), ({"path": "d.npz", "scale": "pixels"}, "data.scale"),
                       ({"path": "d.npz", "task": "regression", "class_names": ["a", "b"]}, "class_names is for classification")]:
        result = runner.invoke(app, ["validate", str(write_spec(tmp_path / "bad.yaml", smoke_spec(data={"name": "numpy", **data})))])
        assert result.exit_code == 2 and says in result.output, result.output


def test_kexp_datasets_lists_numpy_with_its_options(runner):
    result = runner.invoke(app, ["datasets", "--json"])
    rows = {row["name"]: row for row in json.loads(result.output)}
    options = {o["name"]: o for o in rows["numpy"]["options"]}
    assert options["scale"]["default"] == "auto" and options["path"]["required"] and ".npz" in rows["numpy"]["summary"]


# --- a trained run: predict from .npy and .npz rows ------------------------------------------


def train(runs: Path, data_dir: Path, spec: dict) -> Path:
    result = CliRunner().invoke(app, ["train", str(write_spec(data_dir / "spec.yaml", spec)), "--runs-dir", str(runs), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    (run,) = list(runs.iterdir())
    return run


@pytest.fixture(scope="module")
def arrays_run(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A run on 6x6 uint8 'images' whose class is the brighter half; and those images."""
    tmp = tmp_path_factory.mktemp("arrays")
    y = np.arange(80) % 2
    x = (RNG.integers(0, 100, size=(80, 6, 6)) + 150 * y[:, None, None] * (np.arange(6) < 3)).astype(np.uint8)
    np.savez(tmp / "d.npz", x=x, y=y)
    spec = {"name": "arrays", "seed": 0, "data": {"name": "numpy", "path": "d.npz", "class_names": ["dim", "bright"]},
            "model": {"name": "mlp", "hidden_units": [8]}, "train": {"epochs": 3, "batch_size": 16, "optimizer": {"name": "adam", "learning_rate": 0.05}}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KEXP_CACHE_DIR", "none")
        return train(tmp / "runs", tmp, spec), x


@pytest.mark.slow
def test_predict_reads_npy_and_npz_rows_and_names_file_and_row(arrays_run, tmp_path):
    from kexp.models.saving import load_model
    from kexp.reuse.predict import predict_run

    run, x = arrays_run
    expected = ["dim", "bright"] * 5
    np.save(tmp_path / "rows.npy", x[:10])
    rows = predict_run(run, [str(tmp_path / "rows.npy")])
    assert [r["label"] for r in rows] == expected and [(Path(r["file"]).name, r["line"]) for r in rows[:2]] == [("rows.npy", 1), ("rows.npy", 2)]
    model = load_model(run / "model.keras")
    bright = model.predict(x[:10] / 255.0, verbose=0)[:, 0]  # one sigmoid unit: p(bright), the model fed x / 255
    assert np.allclose([r["probability"] for r in rows], np.maximum(bright, 1 - bright), atol=1e-5)
    np.save(tmp_path / "one.npy", x[1])  # one example of the run's shape: a batch of one
    assert [r["label"] for r in predict_run(run, [str(tmp_path / "one.npy")])] == ["bright"]
    for name, arrays in (("x.npz", {"x": x[:10], "y": x[:3]}), ("test.npz", {"x_train": x[:3], "x_test": x[:10]}), ("only.npz", {"images": x[:10]})):
        np.savez_compressed(tmp_path / name, **arrays)
        assert [r["label"] for r in predict_run(run, [str(tmp_path / name)])] == expected, name


@pytest.mark.slow
@pytest.mark.parametrize(("arrays", "says"), [
    ({"a": np.zeros((2, 6, 6)), "b": np.zeros((2, 6, 6))}, r"bad.npz: no array to predict from: expected 'x', 'x_test' or a single array; the file holds a, b"),
    ({"x": np.zeros((2, 5, 6), np.uint8)}, r"bad.npz: x of shape \[2, 5, 6\] does not fit the run's examples of shape \[6, 6\] \(expected \[n, 6, 6\] or \[6, 6\]\)"),
    ({"x": np.where(np.arange(72).reshape(2, 6, 6) == 40, np.nan, 0.5)}, r"bad.npz: x row 2 holds NaN or infinite values"),
    ({"x": np.array([["a"] * 6] * 6)}, r"bad.npz: x holds <U1 values; the model takes numbers"),
])  # fmt: skip
def test_bad_predict_input_is_one_line_naming_the_file(arrays_run, tmp_path, arrays, says):
    run, _ = arrays_run
    np.savez(tmp_path / "bad.npz", **arrays)
    result = CliRunner().invoke(app, ["predict", str(run), str(tmp_path / "bad.npz")])
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("kexp: error:")]
    assert __import__("re").search(says, line), line


@pytest.mark.slow
def test_float_rows_for_a_pixel_run_warn_and_a_png_is_refused(arrays_run, tmp_path):
    from kexp.reuse.predict import predict_run

    run, x = arrays_run
    np.save(tmp_path / "floats.npy", x[:2] / 255.0)
    warnings: list[str] = []
    predict_run(run, [str(tmp_path / "floats.npy")], emit=lambda kind, **f: warnings.append(f.get("message", "")) if kind == "warning" else None)
    assert any("floats.npy: float64 values, but the run trained on uint8" in w for w in warnings)
    (tmp_path / "digit.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(DataError, match=r"digit.png: not a NumPy .npz or .npy file"):
        predict_run(run, [str(tmp_path / "digit.png")])


# --- MNIST as an .npz, through the real CLI -----------------------------------------------------

MNIST_DIR = Path(os.environ.get("KEXP_DATA_DIR", "data"))
needs_mnist = pytest.mark.skipif(not (MNIST_DIR / "mnist" / "train-images-idx3-ubyte.gz").exists(), reason=f"no MNIST IDX files in {MNIST_DIR}")


def mnist_npz(path: Path, n_train: int | None = None, n_test: int | None = None) -> Path:
    from kexp.datasets.mnist import read_mnist_arrays

    arrays, _ = read_mnist_arrays(MNIST_DIR)
    np.savez(path, x_train=arrays["x_train"][:n_train], y_train=arrays["y_train"][:n_train], x_test=arrays["x_test"][:n_test], y_test=arrays["y_test"][:n_test])
    return path


@pytest.mark.slow
@needs_mnist
def test_train_predict_evaluate_an_mnist_slice_given_as_npz(runner, tmp_path, monkeypatch):
    from kexp.datasets.pipeline import load_dataset
    from kexp.spec import load_spec
    from kexp.train.feeds import feed

    monkeypatch.setenv("KEXP_CACHE_DIR", "none")
    mnist_npz(tmp_path / "digits.npz", 1000, 200)
    spec = write_spec(tmp_path / "digits.yaml", {"name": "digits", "seed": 0, "data": {"name": "numpy", "path": "digits.npz"},
                                                 "model": {"name": "mlp", "hidden_units": [32]}, "train": {"epochs": 3, "batch_size": 50}})
    (x, _), *_ = feed(load_dataset(load_spec(spec), tmp_path).train, 1000).take(1)  # what the model is fed
    assert float(x.numpy().min()) == 0.0 and float(x.numpy().max()) == 1.0
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run,) = list((tmp_path / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.6  # chance is 0.1
    np.save(tmp_path / "rows.npy", np.load(tmp_path / "digits.npz")["x_test"][:5])
    result = runner.invoke(app, ["predict", str(run), str(tmp_path / "rows.npy"), "--output", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5] and all(r["label"] in [str(d) for d in range(10)] for r in rows)
    result = runner.invoke(app, ["evaluate", str(run), "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output)["results"]["test"]["metrics"]["accuracy"]
    assert evaluated == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)  # the saved model, re-read data: the same number


@pytest.mark.long
@needs_mnist
def test_full_mnist_as_npz_with_the_config_reaches_095_in_three_epochs(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("KEXP_CACHE_DIR", "none")
    mnist_npz(tmp_path / "mnist_arrays.npz")
    result = runner.invoke(app, ["train", "configs/mnist_npz.yaml", "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run,) = list((tmp_path / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["data"]["train_size"], metrics["data"]["test_size"], metrics["epochs_completed"]) == (60000, 10000, 3)
    assert metrics["test"]["accuracy"] >= 0.95
