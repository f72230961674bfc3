"""image_folder: a folder of class subfolders read as paths, decoded and streamed in the input pipeline."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kexp.cli import app
from kexp.errors import DataError
from kexp.registry import DATASETS
from tests.conftest import write_spec

DIGITS = ("zero", "one", "two")


@functools.lru_cache(maxsize=1)
def mnist_digits() -> dict[int, np.ndarray]:
    """The first 400 training images of each digit 0, 1 and 2 (28x28 uint8), from the shared MNIST files."""
    from kexp.datasets.mnist import read_mnist_arrays

    arrays, _ = read_mnist_arrays(Path(os.environ["KEXP_DATA_DIR"]))
    return {d: arrays["x_train"][arrays["y_train"] == d][:400] for d in range(3)}


def write_digits(root: Path, per_class: int, start: int = 0, fmt: str = "png") -> Path:
    """root/<zero|one|two>/NNN.png: MNIST digits as greyscale image files."""
    from PIL import Image

    for digit, name in enumerate(DIGITS):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, pixels in enumerate(mnist_digits()[digit][start : start + per_class]):
            Image.fromarray(pixels).save(root / name / f"{start + i:03d}.{fmt}")
    return root


def spec_for(path: Path, **options) -> dict:
    return {
        "name": "digits", "seed": 0,
        "data": {"name": "image_folder", "path": str(path), "image_size": [28, 28], "color_mode": "grayscale", **options},
        "model": {"name": "mlp", "hidden_units": [16]},
        "train": {"epochs": 1, "batch_size": 16, "optimizer": {"name": "adam", "learning_rate": 0.01}},
    }  # fmt: skip


def read(path: Path, **options):
    from kexp.datasets.image_folder import ImageFolderOptions

    return DATASETS.get("image_folder").fn(ImageFolderOptions(path=str(path), image_size=[28, 28], **options), path.parent, 0)


def dataset(path: Path, **options):
    from kexp.datasets.pipeline import prepare_dataset, split_rows

    raw = read(path, **options)
    return prepare_dataset(raw, split_rows(raw, 0))


def pixels(part, batch_size: int = 64, **feed) -> np.ndarray:
    from kexp.train.feeds import feed as make_feed

    batches = make_feed(part, batch_size, **feed)
    if feed.get("first_epoch") is not None:
        batches = batches.take(-(-len(part) // batch_size))
    return np.concatenate([x.numpy() for x, _ in batches])


def train(tmp_path: Path, spec: dict, *extra: str):
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    return CliRunner().invoke(app, ["train", str(spec_path), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path), *extra])


def one_error_line(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("kexp: error:")]
    assert len(lines) == 1, result.output
    return lines[0]


# --- reading the folder ---------------------------------------------------------------------


def test_class_folders_are_sorted_class_names_and_a_stratified_test_part_is_held_out(tmp_path):
    root = write_digits(tmp_path / "digits", 10)
    raw = read(root, test_fraction=0.2)
    assert raw.class_names == ["one", "two", "zero"]  # sorted folder names, as Keras
    assert raw.is_test is None and np.bincount(raw.labels).tolist() == [10, 10, 10]
    assert raw.inputs[0].decode().endswith("one/000.png")
    data = dataset(root, test_fraction=0.2)
    assert len(data.train) == 24 and np.bincount(data.test.y).tolist() == [2, 2, 2]
    assert data.train.streamed and data.input_shape == (28, 28, 3)  # rgb unless told


def test_train_and_test_folders_are_the_official_split(tmp_path):
    write_digits(tmp_path / "digits" / "train", 8)
    write_digits(tmp_path / "digits" / "test", 3, start=8)
    data = dataset(tmp_path / "digits")
    assert (len(data.train), len(data.test)) == (24, 9)
    assert data.summary["layout"] == "train/ and test/ folders"
    (tmp_path / "digits" / "test" / "zero").rename(tmp_path / "digits" / "test" / "nought")
    with pytest.raises(DataError, match="test: its class folders"):
        read(tmp_path / "digits")


def test_grayscale_gives_the_files_pixels_and_rgb_repeats_them_and_image_size_resizes(tmp_path):
    root = write_digits(tmp_path / "digits", 2)
    grey = pixels(dataset(root, color_mode="grayscale", test_fraction=0.0).train)
    first = mnist_digits()[1][0]  # class "one" sorts first
    assert grey.shape == (6, 28, 28, 1) and np.array_equal(grey[0, ..., 0], first / np.float32(255))
    rgb = pixels(dataset(root, color_mode="rgb", test_fraction=0.0).train)
    assert rgb.shape == (6, 28, 28, 3) and np.array_equal(rgb[..., 0], rgb[..., 2]) and np.array_equal(rgb[..., :1], grey)
    from kexp.datasets.image_folder import ImageFolderOptions
    from kexp.datasets.pipeline import prepare_dataset, split_rows

    raw = DATASETS.get("image_folder").fn(ImageFolderOptions(path=str(root), image_size=[14, 7], test_fraction=0.0, scale=False), tmp_path, 0)
    small = pixels(prepare_dataset(raw, split_rows(raw, 0)).train)
    assert small.shape == (6, 14, 7, 3) and small.max() > 1.5  # unscaled: 0-255


def test_jpeg_bmp_and_gif_decode_among_pngs(tmp_path):
    root = write_digits(tmp_path / "digits", 3)
    for fmt, name in (("jpeg", "zero"), ("bmp", "one"), ("gif", "two")):
        write_digits(tmp_path / "other", 1, start=3, fmt=fmt)
        os.replace(tmp_path / "other" / name / f"003.{fmt}", root / name / f"003.{fmt}")
    data = dataset(root, color_mode="grayscale", test_fraction=0.0)
    got = pixels(data.train)
    assert got.shape == (12, 28, 28, 1)
    files = [Path(p.decode()).name for p in data.train.x.paths]
    bmp = got[files.index("003.bmp")][..., 0]  # lossless formats give the digit's own pixels
    assert np.array_equal(bmp, mnist_digits()[1][3] / np.float32(255))
    jpeg = got[len(files) - 1 - files[::-1].index("003.jpeg")][..., 0]
    assert np.abs(jpeg - mnist_digits()[0][3] / 255).mean() < 0.05  # lossy


def test_a_non_image_file_is_one_line_naming_it_and_skip_mode_counts_it(tmp_path):
    root = write_digits(tmp_path / "digits", 6)
    (root / "two" / "notes.txt").write_text("not a digit")
    (root / "one" / "fake.png").write_text("not a png either")
    (root / ".DS_Store").write_text("hidden files are ignored")
    line = one_error_line(train(tmp_path, spec_for(root)))
    assert "one/fake.png: not a PNG, JPEG, BMP or GIF image" in line and "two/notes.txt: not an image file" in line  # both at once
    assert line.endswith("-- remove them, or set data.on_bad_file: skip to leave bad files out")  # the key as the spec writes it
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    result = train(tmp_path, spec_for(root, on_bad_file="skip"))
    assert result.exit_code == 0, result.output
    assert "2 bad file(s) skipped" in result.output
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "metrics.json").read_text())["data"]
    assert summary["skipped_files"] == 2 and summary["images"] == 18
    assert any("notes.txt: not an image file" in s for s in summary["skipped"])


def test_a_truncated_png_is_named_before_training(tmp_path):
    root = write_digits(tmp_path / "digits", 4)
    png = root / "zero" / "001.png"
    png.write_bytes(png.read_bytes()[:-30])
    line = one_error_line(train(tmp_path, spec_for(root)))
    assert "zero/001.png: a truncated PNG" in line


@pytest.mark.parametrize("fmt", ["png", "jpeg", "bmp", "gif"])
def test_each_format_is_checked_whole_and_truncated_from_its_first_and_last_bytes(tmp_path, fmt):
    from kexp.preprocessing.image_files import image_file_problem

    path = write_digits(tmp_path / "digits", 1, fmt=fmt) / "zero" / f"000.{fmt}"
    assert image_file_problem(path) is None
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert image_file_problem(path).startswith("a truncated")


def test_a_png_that_only_fails_to_decode_is_one_line_naming_it(tmp_path):
    root = write_digits(tmp_path / "digits", 4)
    png = root / "two" / "002.png"
    data = bytearray(png.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start : start + 40] = b"\x00" * 40  # the compressed pixels destroyed, the end marker intact
    png.write_bytes(bytes(data))
    line = one_error_line(train(tmp_path, spec_for(root)))
    assert "two/002.png: cannot decode the image" in line


# --- augmentation, loop ---------------------------------------------------------------------


def test_augmentation_changes_training_batches_only(tmp_path):
    root = write_digits(tmp_path / "digits", 10)
    augment = {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1, "contrast": 0.2}
    plain, augmented = dataset(root, test_fraction=0.3), dataset(root, test_fraction=0.3, augment=augment)
    assert augmented.train.x.augment is not None
    assert np.array_equal(pixels(plain.test), pixels(augmented.test))
    assert np.array_equal(pixels(plain.train), pixels(augmented.train))  # scoring the train part: not augmented
    stream = {"shuffle": True, "seed": 3, "first_epoch": 0}
    assert np.array_equal(pixels(plain.train, **stream), pixels(plain.train, **stream))
    assert not np.allclose(pixels(plain.train, **stream), pixels(augmented.train, **stream))


def test_an_epochs_augmentation_depends_on_the_seed_and_epoch_alone_so_a_resumed_run_sees_the_same_batches(tmp_path):
    from kexp.train.feeds import feed as make_feed

    root = write_digits(tmp_path / "digits", 10)
    augmented = dataset(root, test_fraction=0.3, augment={"flip": "horizontal", "rotation": 0.2, "zoom": 0.2, "contrast": 0.3})
    steps = -(-len(augmented.train) // 8)

    def epochs(first: int, count: int) -> list[np.ndarray]:
        stream = list(make_feed(augmented.train, 8, shuffle=True, seed=3, first_epoch=first).take(steps * count))
        return [np.concatenate([x.numpy() for x, _ in stream[i * steps:(i + 1) * steps]]) for i in range(count)]

    uninterrupted, resumed = epochs(0, 3), epochs(2, 1)  # a resumed run's feed starts at its next epoch
    assert np.array_equal(uninterrupted[2], resumed[0])
    assert not np.allclose(uninterrupted[1], uninterrupted[2])  # yet each epoch is augmented anew
    other_seed = list(make_feed(augmented.train, 8, shuffle=True, seed=4, first_epoch=2).take(steps))
    assert not np.allclose(resumed[0], np.concatenate([x.numpy() for x, _ in other_seed]))


def test_the_training_stream_shuffles_each_epoch_by_seed_and_epoch_alone(tmp_path):
    from kexp.train.feeds import feed

    part = dataset(write_digits(tmp_path / "digits", 10), test_fraction=0.0).train
    def epochs(first: int, count: int) -> list[np.ndarray]:
        batches = [x.numpy() for x, _ in feed(part, 8, shuffle=True, seed=5, first_epoch=first).take(4 * count)]
        return [np.concatenate(batches[i : i + 4]) for i in range(0, len(batches), 4)]
    zero, one = epochs(0, 2)
    (resumed,) = epochs(1, 1)
    assert len(zero) == 30 and np.array_equal(one, resumed) and not np.array_equal(zero, one)  # each epoch its own short batch
    assert np.array_equal(np.sort(zero.reshape(30, -1), axis=0), np.sort(pixels(part).reshape(30, -1), axis=0))


def test_a_streamed_part_never_takes_the_xla_loop(tmp_path):
    import keras

    from kexp.errors import SpecError
    from kexp.spec import TrainSpec
    from kexp.train.loop import plan_loop

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert plan_loop(model, TrainSpec(loop="auto"), 10).loop == "xla"
    assert plan_loop(model, TrainSpec(loop="auto"), 10, streamed=True).loop == "keras"
    with pytest.raises(SpecError, match="streamed from image files"):
        plan_loop(model, TrainSpec(loop="xla"), 10, streamed=True)
    spec = write_spec(tmp_path / "xla.yaml", {**spec_for(tmp_path / "anywhere"), "train": {"loop": "xla"}})
    refused = CliRunner().invoke(app, ["validate", str(spec)])  # before any file is read
    assert refused.exit_code == 2 and f"{spec}:" in refused.output and "train.loop: xla does not work with image_folder's inputs streamed" in refused.output


# --- the CLI: datasets, validate, train, predict, evaluate -----------------------------------


def test_datasets_lists_it_and_validate_checks_its_options(tmp_path):
    result = CliRunner().invoke(app, ["datasets"])
    assert result.exit_code == 0 and "image_folder" in result.output
    bad = write_spec(tmp_path / "bad.yaml", spec_for(tmp_path, color_mode="rgba", augment={"flop": "horizontal"}))
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and "color_mode" in result.output and "flop" in result.output


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("digits")
    root = write_digits(tmp / "digits", 30)
    result = train(tmp, {**spec_for(root, test_fraction=0.2), "train": {**spec_for(root)["train"], "epochs": 3}})
    assert result.exit_code == 0, result.output
    (run,) = (tmp / "runs").iterdir()
    return run


def test_predict_takes_a_png_and_a_folder_with_the_pixels_training_saw(digits_run, tmp_path):
    from kexp.reuse.predict import predict_run

    folder = write_digits(tmp_path / "new", 2, start=300)
    result = CliRunner().invoke(app, ["predict", str(digits_run), str(folder / "zero" / "300.png"), str(folder), "--output", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and rows[0]["file"].endswith("zero/300.png") and rows[1]["file"].endswith("one/300.png")
    assert sum(row["label"] == Path(row["file"]).parent.name for row in rows) >= 5
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    assert "bad.png: not a PNG, JPEG" in one_error_line(CliRunner().invoke(app, ["predict", str(digits_run), str(bad)]))
    assert predict_run(digits_run, [str(folder / "zero" / "300.png")])[0]["probability"] > 0


def test_evaluate_rereads_the_folder_and_matches_the_recorded_test_metrics(digits_run):
    result = CliRunner().invoke(app, ["evaluate", str(digits_run), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    recorded = json.loads((digits_run / "metrics.json").read_text())
    (evaluation,) = (digits_run / "evaluations").glob("*.json")
    scored = json.loads(evaluation.read_text())["results"]["test"]["metrics"]
    assert scored["accuracy"] == pytest.approx(recorded["test"]["accuracy"], abs=1e-6)


def test_export_checks_the_model_on_rows_like_decoded_images(digits_run):
    result = CliRunner().invoke(app, ["export", str(digits_run), "--format", "tflite"])
    assert result.exit_code == 0, result.output
    info = json.loads(next((digits_run / "export").glob("*.json")).read_text())
    assert info["preprocessing"]["kind"] == "image_files"
    assert info["preprocessing"]["state"] == {"image_size": [28, 28], "color_mode": "grayscale", "scale": True}


@pytest.mark.long
def test_600_digit_pngs_train_to_090_and_predict_a_png(tmp_path):
    root = write_digits(tmp_path / "digits", 200)
    spec = {**spec_for(root, test_fraction=0.2), "model": {"name": "mlp", "hidden_units": [64]},
            "train": {"epochs": 5, "batch_size": 32, "optimizer": {"name": "adam", "learning_rate": 0.003}}}
    result = train(tmp_path, spec)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.9
    one = write_digits(tmp_path / "new", 1, start=350)
    result = CliRunner().invoke(app, ["predict", str(run), str(one / "two" / "350.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["label"] == "two"
