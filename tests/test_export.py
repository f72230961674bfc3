"""`kexp export`: a checked SavedModel or TFLite file beside its JSON, or one line saying why not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kexp.cli import app
from kexp.errors import RunDirError
from kexp.reuse.export import export_run, sample_inputs
from tests.conftest import smoke_spec, write_spec


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One tiny synthetic run (4 features, 3 classes) shared by the module; tests that change it copy it."""
    from typer.testing import CliRunner

    folder = tmp_path_factory.mktemp("export")
    spec = write_spec(folder / "s.yaml", smoke_spec(train={"epochs": 1, "batch_size": 32}))
    result = CliRunner().invoke(app, ["train", str(spec), "--runs-dir", str(folder / "runs"), "--data-dir", str(folder)])
    assert result.exit_code == 0, result.output
    (run,) = (folder / "runs").iterdir()
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / trained_run.name))


def leftovers(folder: Path) -> list[str]:
    """Everything an export may have left in the run: the export folder and any hidden staging."""
    return sorted(p.name for p in folder.rglob("*") if p.name == "export" or ".tmp" in p.name)


@pytest.mark.slow
@pytest.mark.parametrize("fmt, name", [("saved_model", "saved_model"), ("tflite", "model.tflite")])
def test_export_is_checked_and_described(runner, run_copy, fmt, name):
    result = runner.invoke(app, ["export", str(run_copy), "--format", fmt])
    assert result.exit_code == 0, result.output
    target = run_copy / "export" / name
    info = json.loads((run_copy / "export" / f"{name}.json").read_text())
    assert info["format"] == fmt and info["path"] == str(target.absolute()) and target.exists()
    assert info["input"] == {"shape": [None, 4], "dtype": "float32"}
    assert info["class_names"] == ["class_0", "class_1", "class_2"] and info["task"] == "classification"
    assert info["check"]["rows"] == 8 and 0 <= info["check"]["max_abs_difference"] <= 1e-5
    assert info["versions"]["tensorflow"] and info["versions"]["kexp"]
    assert f"exported {fmt}: {target}" in result.output and "check: matches model.keras on 8 generated rows" in result.output
    assert f"{name}.json" in result.output
    assert not [p for p in (run_copy / "export").iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.slow
def test_saved_model_serves_the_model_predictions(trained_run, tmp_path):
    import tensorflow as tf

    from kexp.models.saving import load_model

    info = export_run(trained_run, "saved_model", tmp_path / "served")
    x = np.random.default_rng(7).normal(size=(5, 4)).astype(np.float32)  # rows the export check did not use
    serve = tf.saved_model.load(str(tmp_path / "served")).signatures["serving_default"]
    served = serve(**{info["signature"]["input"]: tf.constant(x)})[info["signature"]["output"]].numpy()
    expected = load_model(trained_run / "model.keras").predict(x, verbose=0)
    assert served.shape == (5, 3)
    np.testing.assert_allclose(served, expected, atol=1e-6)


@pytest.mark.slow
def test_export_never_overwrites(runner, run_copy, tmp_path):
    target = tmp_path / "out" / "model.tflite"
    assert runner.invoke(app, ["export", str(run_copy), "--format", "tflite", "--output", str(target)]).exit_code == 0
    before = target.read_bytes()
    result = runner.invoke(app, ["export", str(run_copy), "--format", "tflite", "--output", str(target)])
    assert result.exit_code == 1
    assert result.output.strip() == f"kexp: error: {target}: already exists; kexp export never overwrites (remove it, or choose a new path with --output)"
    assert target.read_bytes() == before


@pytest.mark.slow
def test_failed_run_is_refused(runner, run_copy):
    (run_copy / "status.json").write_text(json.dumps({"state": "failed", "error": "loss became nan in epoch 1"}))
    result = runner.invoke(app, ["export", str(run_copy), "--format", "saved_model"])
    assert result.exit_code == 1
    assert "kexp: error:" in result.output and "the run failed (loss became nan in epoch 1)" in result.output
    assert leftovers(run_copy) == []


@pytest.mark.slow
def test_interrupted_run_exports_with_a_warning(runner, run_copy):
    (run_copy / "status.json").write_text(json.dumps({"state": "interrupted", "error": "interrupted by SIGTERM"}))
    result = runner.invoke(app, ["export", str(run_copy), "--format", "saved_model"])
    assert result.exit_code == 0, result.output
    assert "kexp: warning:" in result.output and "was interrupted (interrupted by SIGTERM)" in result.output
    assert json.loads((run_copy / "export" / "saved_model.json").read_text())["warnings"]


@pytest.mark.slow
def test_lambda_layer_is_refused_by_safe_mode(runner, run_copy):
    import keras

    lambda_model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(3)])
    lambda_model.save(run_copy / "model.keras")
    result = runner.invoke(app, ["export", str(run_copy), "--format", "saved_model"])
    assert result.exit_code == 1
    assert result.output.startswith(f"kexp: error: {run_copy / 'model.keras'}: cannot load the model (kexp loads only in Keras safe mode)")
    assert len(result.output.strip().splitlines()) == 1
    assert leftovers(run_copy) == []


@pytest.mark.slow
def test_conversion_failure_is_one_line_and_leaves_nothing(runner, run_copy, monkeypatch):
    def fail(saved_model):
        raise ValueError("Could not translate MLIR to FlatBuffer.\n<pages of MLIR>\nmore detail")

    monkeypatch.setattr("kexp.reuse.export.tflite_bytes", fail)
    result = runner.invoke(app, ["export", str(run_copy), "--format", "tflite"])
    assert result.exit_code == 1
    assert result.output.strip() == f"kexp: error: {run_copy}: cannot export as tflite: Could not translate MLIR to FlatBuffer."
    assert leftovers(run_copy) == []


@pytest.mark.slow
def test_export_that_disagrees_with_the_model_fails_with_the_numbers(run_copy, monkeypatch):
    import kexp.reuse.export

    real = kexp.reuse.export.run_saved_model
    monkeypatch.setattr("kexp.reuse.export.run_saved_model", lambda path, x: (lambda out, sig: (out + 1e-3, sig))(*real(path, x)))
    with pytest.raises(RunDirError, match=r"disagrees with model.keras on 8 generated rows: max abs difference 0.001 > 1e-05"):
        export_run(run_copy, "saved_model")
    assert leftovers(run_copy) == []


def input_model(shape, dtype="float32", embedding=None):
    import keras

    inputs = keras.Input(shape=shape, dtype=dtype)
    outputs = keras.layers.Embedding(embedding, 2)(inputs) if embedding else inputs
    return keras.Model(inputs, outputs)


def test_sample_inputs_look_like_each_kind_of_input():
    images = sample_inputs(input_model((784,)), {"kind": "images", "state": {}})
    assert images.shape == (8, 784) and images.dtype == np.float32 and 0 <= images.min() and images.max() <= 1
    np.testing.assert_array_equal(images, sample_inputs(input_model((784,)), {"kind": "images"}))  # seeded
    bag = sample_inputs(input_model((50,)), {"kind": "text", "state": {"options": {"encoding": "multi_hot"}}})
    assert set(np.unique(bag)) == {0.0, 1.0}
    ids = sample_inputs(input_model((20,), embedding=30), {"kind": "text", "state": {"options": {"encoding": "sequence"}, "vocabulary": ["w"] * 100}})
    assert ids.shape == (8, 20) and 0 <= ids.min() and ids.max() < 30  # within the Embedding, not the larger vocabulary
    table = sample_inputs(input_model((4,)), {"kind": "table"})
    assert table.dtype == np.float32 and table.min() < 0 < table.max()


def test_unknown_format_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "onnx"])
    assert result.exit_code == 2 and "'onnx' is not one of saved_model, tflite" in result.output
