"""Compile and fit a Keras model from the `train` section of the spec.

Keras runs the loop (`model.fit`); this module decides the loss and output size for
the task, places work on the requested device, and supplies the callbacks that show
progress, rewrite history.json after every epoch and stop on a NaN loss.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kexp.errors import DeviceError, Diverged, SpecError
from kexp.rundir import write_json
from kexp.spec import TrainSpec
from kexp.task import BINARY_ONLY_METRICS, REGRESSION_LOSSES, count_outputs, resolve_loss  # noqa: F401  (training's vocabulary)

# TensorFlow's C++ start-up lines that say nothing actionable (printed before its own
# log level applies, so TF_CPP_MIN_LOG_LEVEL cannot hide them).
STARTUP_NOISE = re.compile(
    r"oneDNN custom operations|cudart_stub|cpu_feature_guard|To enable the following instructions"
    r"|All log messages before absl::InitializeLog|failed call to cuInit|Unable to register cu\w+ factory"
    r"|computation placer already registered|TF-TRT Warning"
)


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Capture file descriptor 2 (C++ writes there too) and replay all but STARTUP_NOISE lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not STARTUP_NOISE.search(line):
                    sys.stderr.write(line)


def start_tensorflow() -> None:
    """Import TensorFlow and probe for GPUs once, without its start-up chatter (unless TF_CPP_MIN_LOG_LEVEL=0)."""
    context = contextlib.nullcontext() if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" else filtered_native_stderr()
    with context:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")


def make_targets(y: np.ndarray, loss: str, num_classes: int) -> np.ndarray:
    """Class ids in the form the loss expects (one-hot for categorical_crossentropy); regression targets as a column."""
    if loss in REGRESSION_LOSSES:
        return y.astype(np.float32).reshape(-1, 1)  # R2Score wants (rows, outputs)
    if loss == "categorical_crossentropy":
        return np.eye(num_classes, dtype=np.float32)[y]
    if loss == "sparse_categorical_crossentropy":
        return y.astype(np.int32)
    return y.astype(np.float32)


def make_metrics(names: list[str], num_outputs: int) -> list[Any]:
    import keras

    builders = {
        "precision": lambda: keras.metrics.Precision(name="precision"),
        "recall": lambda: keras.metrics.Recall(name="recall"),
        "auc": lambda: keras.metrics.AUC(name="auc"),
        "mae": lambda: keras.metrics.MeanAbsoluteError(name="mae"),
        "rmse": lambda: keras.metrics.RootMeanSquaredError(name="rmse"),
        "r2": lambda: keras.metrics.R2Score(name="r2"),
    }
    metrics = []
    for name in names:
        if name in BINARY_ONLY_METRICS and num_outputs != 1:
            raise SpecError([f"train.metrics: '{name}' needs a binary task with one sigmoid output; this one has {num_outputs} outputs"])
        metrics.append(builders[name]() if name in builders else name)
    return metrics


def make_optimizer(train: TrainSpec):
    import keras

    return keras.optimizers.get({"class_name": train.optimizer.name, "config": train.optimizer.kwargs()})


def compile_model(model, train: TrainSpec, loss: str, num_outputs: int) -> None:
    model.compile(
        optimizer=make_optimizer(train),
        loss=loss,
        metrics=make_metrics(train.metrics, num_outputs),
        steps_per_execution=train.steps_per_execution,
    )


def select_device(device: str) -> str:
    """A TensorFlow device name for `auto|cpu|gpu|gpu:N`; error when the GPU is not there."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu" or (device == "auto" and not gpus):
        return "/CPU:0"
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= len(gpus):
        seen = f"it sees {len(gpus)} GPU(s)" if gpus else "it sees no GPU (is a CUDA build of TensorFlow installed, and a driver?)"
        raise DeviceError(f"device '{device}' was requested but TensorFlow {tf.__version__} {seen}; use device: cpu or auto")
    return f"/GPU:{index}"


def set_determinism(enabled: bool) -> None:
    """train.deterministic: TensorFlow picks deterministic kernels (slower on GPU; identical runs on one machine)."""
    if enabled:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow in one call."""
    import keras

    keras.utils.set_random_seed(seed)


# Keras copies whole numpy inputs into TensorFlow tensors (and again for evaluation);
# above this size batches are sliced from the numpy arrays on demand instead.
STREAM_ABOVE_BYTES = 64 * 2**20


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False, seed: int = 0) -> dict[str, Any]:
    """fit/evaluate keyword arguments: the arrays themselves, or a batch feeder when they are large.

    `shuffle` and `seed` apply to the feeder; for plain arrays fit's own `shuffle` does the job.
    """
    if x.nbytes <= STREAM_ABOVE_BYTES:
        return {"x": x, "y": y, "batch_size": batch_size}
    import keras

    class ArrayBatches(keras.utils.PyDataset):
        """Batches sliced from in-memory arrays, reshuffled (seeded) after every epoch."""

        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(y)) if shuffle else np.arange(len(y))

        def __len__(self) -> int:
            return -(-len(y) // batch_size)

        def __getitem__(self, i: int):
            idx = np.sort(self.order[i * batch_size : (i + 1) * batch_size])
            return x[idx], y[idx]

        def on_epoch_end(self):
            if shuffle:
                self.order = self.rng.permutation(len(y))

    return {"x": ArrayBatches()}


def validation_batches(x: np.ndarray, y: np.ndarray, batch_size: int):
    """validation_data for fit: an (x, y) tuple, or a batch feeder when the arrays are large."""
    feed = batches(x, y, max(batch_size, 256))
    return (feed["x"], feed["y"]) if "y" in feed else feed["x"]


def plain(logs: dict | None) -> dict[str, float]:
    return {k: float(v) for k, v in (logs or {}).items()}


def make_callbacks(run_dir: Path, train: TrainSpec, steps_per_epoch: int, console, resume=None, on_checkpoint=None) -> list:
    """kexp's callbacks for model.fit; the last one is the Checkpointer (kexp.checkpoint).

    `resume` (a kexp.checkpoint.Checkpoint) continues history and early stopping where it ended.
    """
    import keras

    from kexp.checkpoint import make_checkpointer

    class HistoryFile(keras.callbacks.Callback):
        """history.json holds one value per finished epoch, rewritten atomically each epoch."""

        def __init__(self):
            super().__init__()
            previous = resume.state if resume is not None and resume.arrays else {}
            self.history: dict[str, list[float]] = {k: list(v) for k, v in (previous.get("history") or {}).items()}
            self.epoch_seconds: list[float] = list(previous.get("epoch_seconds") or [])

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            for key, value in plain(logs).items():
                self.history.setdefault(key, []).append(value)
            self.epoch_seconds.append(time.perf_counter() - self._start)
            write_json(run_dir / "history.json", {"epochs": len(self.epoch_seconds), "epoch_seconds": self.epoch_seconds, **self.history})

    class NanGuard(keras.callbacks.Callback):
        """Stop as `diverged` when the loss stops being a number (checked per epoch: no per-batch sync).

        It raises before the Checkpointer sees the epoch, so the last checkpoint stays a good one.
        """

        def on_epoch_end(self, epoch, logs=None):
            loss = plain(logs).get("loss")
            if loss is not None and not math.isfinite(loss):
                raise Diverged(f"loss became {loss} in epoch {epoch + 1}; lower train.optimizer.learning_rate or check the data")

    history = HistoryFile()
    callbacks = [history, NanGuard(), make_progress(train.epochs, steps_per_epoch, console)]
    early_stopping = None
    if train.early_stopping:
        es = train.early_stopping
        early_stopping = keras.callbacks.EarlyStopping(
            monitor=es.monitor, patience=es.patience, min_delta=es.min_delta, mode=es.mode, restore_best_weights=es.restore_best_weights
        )
        callbacks.append(early_stopping)
    callbacks.append(make_checkpointer(run_dir, train.checkpoint_every, history, early_stopping, resume, on_checkpoint or (lambda c: None)))
    return callbacks


def make_progress(epochs: int, steps_per_epoch: int, console):
    """A live rich bar (epoch, step, loss, metrics) on a terminal; one line per epoch otherwise."""
    import keras

    def describe(logs: dict[str, float]) -> str:
        return "  ".join(f"{k} {v:.4f}" for k, v in logs.items())

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.live = console.is_terminal
            if self.live:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                    TextColumn("{task.fields[logs]}"), console=console, transient=False)
                self.bar.start()
                self.task = self.bar.add_task("", total=steps_per_epoch, logs="")
                self._shown = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1
            self._start = time.perf_counter()
            if self.live:
                self.bar.reset(self.task, total=steps_per_epoch, description=f"epoch {self.epoch}/{epochs}", logs="")

        def on_train_batch_end(self, batch, logs=None):
            # Reading logs forces a device sync, so refresh at most ten times a second.
            if self.live and time.perf_counter() - self._shown > 0.1:
                self._shown = time.perf_counter()
                self.bar.update(self.task, completed=batch + 1, logs=describe(plain(logs)))

        def on_epoch_end(self, epoch, logs=None):
            text = describe(plain(logs))
            seconds = time.perf_counter() - self._start
            if self.live:
                self.bar.update(self.task, completed=steps_per_epoch, logs=text)
            console.print(f"epoch {self.epoch}/{epochs}  {seconds:.1f}s  {text}", highlight=False, soft_wrap=True)

        def on_train_end(self, logs=None):
            if self.live:
                self.bar.stop()

    return Progress()


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """`balanced`: n / (classes x count) per class, scikit-learn's and Keras' usual weighting."""
    counts = np.bincount(y.astype(np.int64), minlength=num_classes)
    return {c: float(len(y) / (num_classes * n)) if n else 0.0 for c, n in enumerate(counts)}


def class_report(model, data, splits: dict[str, tuple | None], batch_size: int) -> dict[str, Any]:
    """Per-class precision/recall/F1/support, confusion matrix and balanced accuracy of the test part (else train)."""
    from kexp.reports import classification_report, to_classes

    part = "test" if splits.get("test") is not None else "train"
    outputs = predict_outputs(model, *splits[part], max(batch_size, 256))
    return {"part": part, **classification_report(getattr(data, part).y, to_classes(outputs), data.class_names)}


def predict_outputs(model, x: np.ndarray, targets: np.ndarray, batch_size: int) -> np.ndarray:
    """Model outputs [rows, units], fed as evaluate feeds them (batch by batch from numpy when the inputs are large)."""
    feed = batches(x, targets, batch_size)
    return np.asarray(model.predict(feed["x"], batch_size=feed.get("batch_size"), verbose=0)).reshape(len(x), -1)


def evaluate_splits(model, splits: dict[str, tuple | None], batch_size: int, callbacks: list = ()) -> dict[str, dict[str, float] | None]:
    """Keras metrics of the final model on each split (dropout off), as plain floats."""
    results = {}
    for name, split in splits.items():
        if split is None:
            results[name] = None
            continue
        results[name] = plain(model.evaluate(**batches(*split, max(batch_size, 256)), verbose=0, return_dict=True, callbacks=list(callbacks)))
    return results
