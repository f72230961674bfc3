"""Export a run's model for serving: a TensorFlow SavedModel or a TFLite flatbuffer, checked.

    kexp export RUN_DIR --format saved_model   ->  RUN_DIR/export/saved_model/ + saved_model.json
    kexp export RUN_DIR --format tflite        ->  RUN_DIR/export/model.tflite + model.tflite.json

The model is reopened in Keras safe mode, exported into a hidden folder beside the target,
run on a few generated input rows and compared with `model.keras`; only an artifact that
agrees is renamed into place, so a failed export leaves nothing behind. The JSON beside it
tells a server what the model takes and what its outputs mean (class names, task).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kexp.errors import RunDirError
from kexp.preprocessing.kinds import KINDS, generic_inputs
from kexp.run.files import MODEL, PREPROCESSING_FILE
from kexp.run.io import make_temp_dir, write_json
from kexp.run.saved import RunRecord, open_run

FORMATS = ("saved_model", "tflite")
DEFAULT_NAMES = {"saved_model": "saved_model", "tflite": "model.tflite"}
CHECK_ROWS = 8
CHECK_SEED = 0
TOLERANCE = 1e-5  # float32 kernels may sum in another order (~1e-7 seen); more means a different computation


def export_run(run_dir: Path | str, fmt: str, output: Path | str | None = None, allow_changed_code: bool = False) -> dict[str, Any]:
    """Export the run's model as `fmt`, check it against model.keras, write its JSON; returns that JSON's dict.
    A plugin changed since the run is refused unless `allow_changed_code` (then a warning)."""
    if fmt not in FORMATS:
        raise RunDirError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    from kexp.backends import prefer_backend

    prefer_backend("tensorflow")  # before a plugin of the run imports Keras
    record = open_run(Path(run_dir), allow_changed_code)
    # absolute, so the JSON still says where things are when read from another folder
    target = (Path(output) if output is not None else record.files.export / DEFAULT_NAMES[fmt]).absolute()
    info_path = target.with_name(target.name + ".json")
    for path in (target, info_path):
        if path.exists() or path.is_symlink():
            raise RunDirError(f"{path}: already exists; kexp export never overwrites (remove it, or choose a new path with --output)")

    from kexp.backends import use_backend
    from kexp.models.saving import load_model
    from kexp.train.runtime import start_tensorflow

    use_backend("tensorflow")  # SavedModel and TFLite are TensorFlow's: a model trained under jax exports through it
    start_tensorflow()  # without its start-up chatter, as `kexp train` does
    model = load_model(record.model_path)
    x = sample_inputs(model, record.preprocessing)
    started = time.perf_counter()
    with staging_beside(target) as staged:
        check = write_artifact(model, fmt, staged, x, record.path)
        move_into_place(staged, target)
    info = describe_export(record, fmt, target, model, x, check, time.perf_counter() - started)
    # The model takes preprocessed inputs (standardized features, word counts, scaled pixels);
    # a server must apply the run's preprocessing first, so say so and carry it along.
    info.update(json=str(info_path), warnings=record.warnings,
                inputs=f"preprocessed: apply the run's preprocessing (below, also in {PREPROCESSING_FILE}) to raw inputs first",
                preprocessing=record.preprocessing)
    write_json(info_path, info)
    return info


def write_artifact(model, fmt: str, staged: Path, x: np.ndarray, run: Path) -> dict[str, Any]:
    """Write the artifact at `staged` and compare it with the Keras model on `x`."""
    saved_model = staged if fmt == "saved_model" else staged.with_name(".saved_model")  # TFLite converts from it
    convert(run, fmt, lambda: model.export(str(saved_model), format="tf_saved_model", verbose=False, **input_signature(model, x)))
    if fmt == "tflite":
        staged.write_bytes(convert(run, fmt, lambda: tflite_bytes(saved_model)))
        outputs, signature = run_tflite(staged, x)
    else:
        outputs, signature = run_saved_model(saved_model, x)
    expected = np.asarray(model(x, training=False), dtype=np.float64)
    difference = float(np.max(np.abs(expected - np.asarray(outputs, dtype=np.float64)))) if expected.shape == outputs.shape else float("inf")
    if not difference <= TOLERANCE:  # NaN fails too
        raise RunDirError(
            f"{run}: the {fmt} export disagrees with {MODEL} on {len(x)} generated rows: "
            f"max abs difference {difference:.3g} > {TOLERANCE:g} (outputs {outputs.shape}, expected {expected.shape}); nothing was written"
        )
    return {"rows": len(x), "seed": CHECK_SEED, "max_abs_difference": difference, "tolerance": TOLERANCE, "signature": signature}


def convert(run: Path, fmt: str, step):
    """Run one TensorFlow export step; its failure becomes one line naming the run and TF's reason."""
    try:
        return step()
    except Exception as exc:  # TF raises ConverterError, ValueError, TypeError, ... with pages of detail
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
        raise RunDirError(f"{run}: cannot export as {fmt}: {reason}") from None


def input_signature(model, x: np.ndarray) -> dict[str, Any]:
    """For a subclassed model, the serving signature Keras cannot infer: batches of rows like x."""
    if symbolic_inputs(model) is not None:
        return {}
    import tensorflow as tf

    return {"input_signature": [tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype))]}


def tflite_bytes(saved_model: Path) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert()


def run_saved_model(path: Path, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Outputs of the SavedModel's serving signature, loaded as a server would (no Keras)."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    (input_name,) = serve.structured_input_signature[1]
    (output_name,) = serve.structured_outputs
    outputs = serve(**{input_name: tf.constant(x)})[output_name].numpy()
    return outputs, {"name": "serving_default", "input": input_name, "output": output_name}


def run_tflite(path: Path, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Outputs of the TFLite interpreter, resized to the batch of `x`."""
    import tensorflow as tf

    from kexp.train.runtime import quiet_native_stderr

    with warnings.catch_warnings(), quiet_native_stderr():  # TFLite's C++ "INFO: Created ... XNNPACK delegate" line
        # tf.lite.Interpreter warns that it moves to ai_edge_litert; it is what TF 2.21 ships
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=str(path))
        (given,) = interpreter.get_input_details()
        (result,) = interpreter.get_output_details()
        interpreter.resize_tensor_input(given["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(given["index"], x.astype(given["dtype"]))
        interpreter.invoke()
    return interpreter.get_tensor(result["index"]), {"input": given["name"], "output": result["name"]}


def sample_inputs(model, preprocessing: dict[str, Any], rows: int = CHECK_ROWS, seed: int = CHECK_SEED) -> np.ndarray:
    """Deterministic rows like the run's inputs, so export never needs the data directory.

    Each preprocessing kind makes them (images in [0, 1], bag-of-words inputs 0/1, word-id
    sequences inside the vocabulary, tables standard normal), from the saved state alone.
    """
    example, dtype = model_input(model, preprocessing)
    shape = (rows, *example)
    rng = np.random.default_rng(seed)
    kind = preprocessing.get("kind")
    if kind not in KINDS.names():  # a kind this kexp does not know: rows of no particular kind
        return generic_inputs(rng, shape, dtype)
    return KINDS.get(kind).sample_inputs(rng, shape, dtype, preprocessing.get("state") or {}, lambda ids: id_limit(model, ids))


def model_input(model, preprocessing: dict[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    """The shape of one example and the dtype the model takes: its symbolic input's, or for a subclassed
    model (a plugin's, which has none) what the run's preprocessing gives, float32."""
    inputs = symbolic_inputs(model)
    if inputs is None:
        from kexp.preprocessing import from_document

        return tuple(from_document(preprocessing, PREPROCESSING_FILE).input_shape()), np.dtype("float32")
    if len(inputs) != 1:
        raise RunDirError(f"kexp export handles models with one input; this one has {len(inputs)}")
    return tuple(inputs[0].shape[1:]), np.dtype(inputs[0].dtype)


def symbolic_inputs(model) -> list | None:
    try:
        return list(model.inputs)
    except AttributeError:  # a subclassed model: no inputs until it is called
        return None


def output_description(model, x: np.ndarray) -> dict[str, Any]:
    """The output's shape (batch dimension None) and dtype: the symbolic output's, or a subclassed model's on one row."""
    try:
        output = model.outputs[0]
    except AttributeError:  # a subclassed model: no symbolic outputs
        output = model(x[:1])
    dtype = getattr(output.dtype, "as_numpy_dtype", output.dtype)  # a tensor's tf.float32, or a KerasTensor's "float32"
    return {"shape": [None, *output.shape[1:]], "dtype": str(np.dtype(dtype))}


def id_limit(model, vocabulary_ids: int) -> int:
    """Word ids the model can look up: the vocabulary's (+ padding and unknown), within its first Embedding."""
    import keras

    embeddings = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
    return max(1, min([vocabulary_ids, *(layer.input_dim for layer in embeddings[:1])]))


def describe_export(record: RunRecord, fmt: str, target: Path, model, x: np.ndarray, check: dict, seconds: float) -> dict[str, Any]:
    """What a server needs beside the artifact: inputs, what the outputs mean, and how it was checked."""
    import keras
    import tensorflow as tf

    import kexp

    document = record.preprocessing
    return {
        "format": fmt,
        "path": str(target),
        "run": str(record.path.absolute()),
        "input": {"shape": [None, *x.shape[1:]], "dtype": str(x.dtype)},
        "output": output_description(model, x),
        "signature": check.pop("signature"),
        "task": document.get("task"),
        "class_names": document.get("class_names"),
        "positive_class": document.get("positive_class"),
        "check": check,
        "seconds": round(seconds, 3),
        "versions": {"kexp": kexp.__version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    }


@contextlib.contextmanager
def staging_beside(target: Path):
    """A path in a hidden folder next to `target` (same filesystem, so the final rename is atomic), removed afterwards."""
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]  # innermost first
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"{target.parent}: cannot create the export folder: {exc.strerror}; choose another folder with --output") from None
    try:
        folder = make_temp_dir(target.parent, f".{target.name}.", ".tmp")
    except OSError as exc:
        raise RunDirError(f"{target.parent}: cannot write the export there: {exc.strerror}; choose another folder with --output") from None
    try:
        yield folder / target.name
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        for path in created:  # the folders this export made, so a failure leaves none behind
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def move_into_place(staged: Path, target: Path) -> None:
    """Rename the finished artifact to `target`, refusing (not replacing) anything that appeared there meanwhile."""
    try:
        if staged.is_dir():
            os.rename(staged, target)  # fails on an existing non-empty folder
            return
        os.link(staged, target)  # fails on an existing file, unlike os.replace
    except OSError as exc:
        raise RunDirError(f"{target}: cannot write the export: {exc.strerror}") from None
