"""Compile and fit a Keras model from the `train` section of the spec.

Keras runs the loop (`model.fit`); this module decides the loss and output size for
the task, places work on the requested device, feeds the data, chooses how the batches of a
call run (Keras' loop, or an epoch as one XLA-compiled loop: choose_loop), and supplies the
callbacks that show progress, keep history.json and stop on a NaN loss.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import math
import os
import re
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kexp.errors import DeviceError, Diverged, SpecError
from kexp.run.io import write_json
from kexp.spec import TrainSpec, loop_conflicts
from kexp.task import BINARY_ONLY_METRICS, REGRESSION_LOSSES, count_outputs, resolve_loss  # noqa: F401  (training's vocabulary)

# TensorFlow's C++ start-up lines that say nothing actionable (printed before its own
# log level applies, so TF_CPP_MIN_LOG_LEVEL cannot hide them).
STARTUP_NOISE = re.compile(
    r"oneDNN custom operations|cudart_stub|cpu_feature_guard|To enable the following instructions"
    r"|All log messages before absl::InitializeLog|failed call to cuInit|Unable to register cu\w+ factory"
    r"|computation placer already registered|TF-TRT Warning|Created TensorFlow Lite XNNPACK delegate"
)


def quiet_native_stderr():
    """filtered_native_stderr, unless TF_CPP_MIN_LOG_LEVEL=0 asks for TensorFlow's own lines."""
    return contextlib.nullcontext() if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" else filtered_native_stderr()


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


# Keras imports these at its own import when they are installed, for features kexp does not use
# (the scikit-learn wrapper, pandas DataFrames as input, pyplot image galleries, IPython's
# notebook check); each import is guarded, as they are optional. Hidden while Keras loads,
# they cost nothing: 1.4 s of the 4.4 s `import keras` took here. kexp imports matplotlib
# (not pyplot) and scikit-learn itself where it needs them, after training.
KERAS_EXTRAS_UNUSED = ("sklearn", "pandas", "matplotlib.pyplot", "IPython")


@contextlib.contextmanager
def hidden_modules(names: tuple[str, ...]) -> Iterator[None]:
    """Imports of these modules (and their submodules) fail as if they were not installed; ones already imported are unaffected."""

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if any(fullname == name or fullname.startswith(name + ".") for name in names):
                raise ModuleNotFoundError(f"No module named {fullname!r} (hidden while Keras loads)", name=fullname)
            return None

    finder = Hide()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def start_tensorflow(threads: int | None = None) -> None:
    """Import TensorFlow, set its CPU threads and GPU memory growth, without its start-up chatter
    (unless TF_CPP_MIN_LOG_LEVEL=0). Settings apply before TensorFlow's runtime starts; in a
    process where it already has (tests, notebooks), the ones it cannot change stay as they were."""
    with quiet_native_stderr():
        with hidden_modules(KERAS_EXTRAS_UNUSED):  # TensorFlow's import loads Keras
            import keras  # noqa: F401
            import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        with contextlib.suppress(RuntimeError, ValueError):
            for gpu in gpus:  # take GPU memory as needed, so several jobs can share one GPU
                tf.config.experimental.set_memory_growth(gpu, True)
        if threads is not None:
            with contextlib.suppress(RuntimeError):
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))


def thread_settings() -> dict[str, int]:
    """TensorFlow's thread pools as they are (0 = one per core)."""
    import tensorflow as tf

    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


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


def compile_model(model, train: TrainSpec, loss: str, num_outputs: int, steps_per_epoch: int, mirrored: bool = False,
                  input_bytes: int = 0, on_cpu: bool = True) -> int:
    """Compile for training; returns the steps_per_execution used (train.steps_per_execution, or auto's choice).

    Mirrored (device: all), Keras 3's multi-step loop fails inside TensorFlow ("You must feed a
    value for placeholder tensor"), so auto is 1 there (a larger value is a spec problem:
    spec.spec_train_problems). model.kexp_loop says which loop runs the batches (choose_loop);
    with xla a call is an epoch.
    """
    spe = train.steps_per_execution
    loop = choose_loop(model, train, steps_per_epoch, mirrored, input_bytes, on_cpu)
    if loop == "xla":
        spe = steps_per_epoch
    elif spe == "auto":
        spe = 1 if mirrored else auto_steps_per_execution(model, train.batch_size, steps_per_epoch)
    else:
        spe = steps_per_call(spe, steps_per_epoch)
    model.compile(
        optimizer=make_optimizer(train),
        loss=loss,
        metrics=make_metrics(train.metrics, num_outputs),
        steps_per_execution=1 if loop == "xla" else spe,  # xla: one Keras step is the whole epoch
        jit_compile=train.jit_compile,
    )
    model.kexp_loop = loop
    # For a fit of little arithmetic the compile is the cost (Pima: 0.4 s instead of 1.0 s with
    # these flags, the same 2-3 ms an epoch); the MNIST MLP ran each batch 4x slower with them.
    quick = loop == "xla" and "XLA_FLAGS" not in os.environ and fit_flops(model, train, steps_per_epoch) < QUICK_COMPILE_FLOPS
    model.kexp_xla_flags = QUICK_COMPILE_FLAGS if quick else os.environ.get("XLA_FLAGS")
    return spe


# train.loop auto picks xla only for what it was measured on: Dense networks (Pima 12-8-1:
# 23 ms -> 3 ms an epoch; MNIST 784-100-10: 1.1 -> 0.3 ms a batch); XLA made the MNIST CNN
# several times slower on this CPU, so convolutions and anything else stay on Keras' loop.
XLA_LOOP_LAYERS = frozenset({"InputLayer", "Dense", "Dropout", "Activation", "Flatten", "Reshape"})
XLA_LOOP_METRICS = frozenset({"accuracy", "mae", "rmse", "mse"})
# An xla call is a whole epoch; above this arithmetic per epoch it would stop answering signals
# for seconds on a slow CPU, so auto keeps Keras' loop.
XLA_EPOCH_FLOPS = 1e11
QUICK_COMPILE_FLOPS = 1e10
QUICK_COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def choose_loop(model, train: TrainSpec, steps_per_epoch: int, mirrored: bool, input_bytes: int, on_cpu: bool) -> str:
    """train.loop resolved: "xla" (a whole epoch per call, compiled) or "keras"; an explicit xla that cannot work is an error."""
    conflicts = loop_conflicts(train, mirrored)
    if steps_per_epoch < 2:
        conflicts.append(f"an epoch of a single batch (under {2 * train.batch_size} training rows)")
    if train.loop == "keras":
        return "keras"
    if train.loop == "xla":
        if conflicts:
            raise SpecError([f"train.loop: xla does not work with {conflicts[0]}; use loop: keras or auto"])
        return "xla"
    layers = {type(layer).__name__ for layer in model.layers} | {"InputLayer"}
    metrics = set(train.metrics or ())
    epoch_flops = steps_per_epoch * batch_flops(model, train.batch_size)
    suited = (on_cpu and layers <= XLA_LOOP_LAYERS and metrics <= XLA_LOOP_METRICS and input_bytes <= COPY_UP_TO_BYTES
              and epoch_flops <= XLA_EPOCH_FLOPS and hasattr(model, "_symbolic_build"))
    return "xla" if suited and not conflicts else "keras"


def fit_flops(model, train: TrainSpec, steps_per_epoch: int) -> float:
    """Arithmetic of the whole fit."""
    return train.epochs * steps_per_epoch * batch_flops(model, train.batch_size)


def batch_flops(model, batch_size: int) -> float:
    """Arithmetic of one training batch: forward + backward ~ 3x forward."""
    return 3 * batch_size * model_flops_per_row(model)


def use_xla_epochs(model, part) -> None:
    """Make model.fit's step a whole epoch (from epoch_feed) run as one XLA-compiled loop over its batches.

    Each batch goes through Keras' own train_step, in the order and with the rows the Keras loop
    would use, so the updates and the logged running means are the same; what goes is the
    executor's cost per op (Pima: about 100 ops a batch, 0.3 ms). Inputs stored compactly are
    cast (and divided by part.divisor) inside the loop, as feed does per batch.
    """
    import tensorflow as tf

    train_step = model.train_step
    compact = np.issubdtype(part.x.dtype, np.integer) or part.x.dtype == np.bool_
    divisor = part.divisor

    def as_inputs(x):
        if compact:
            x = tf.cast(x, tf.float32)
        return x if divisor is None else x / divisor

    @tf.function(jit_compile=True)
    def epoch_step(data):
        (x, y), *tail = data
        logs = train_step((as_inputs(x[0]), y[0]))
        _, logs = tf.while_loop(lambda i, _: i < tf.shape(x)[0], lambda i, _: (i + 1, train_step((as_inputs(x[i]), y[i]))),
                                (tf.constant(1), logs))
        for x_last, y_last in tail:  # the short last batch, after the loop's updates
            with tf.control_dependencies(tf.nest.flatten(logs)):
                logs = train_step((as_inputs(x_last), y_last))
        return logs

    # fit would build the metrics and optimizer from the first element, a whole epoch, and
    # variables cannot be made inside the compiled loop: build them from one batch's shapes now
    model._symbolic_build(data_batch=(np.zeros((1, *part.x.shape[1:]), np.float32), part.y[:1]))
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    # called directly, not through Keras' train function: nesting the compiled loop in Keras'
    # own tf.function cost Pima another second of tracing and graph optimization
    def first_epoch(iterator):
        model.train_function = lambda later: epoch_step(next(later))
        # XLA reads XLA_FLAGS once, at its first compile in the process: set for that alone, so
        # processes started later (sweep trials, tests) do not inherit them
        quick = model.kexp_xla_flags if "XLA_FLAGS" not in os.environ else None
        if quick:
            os.environ["XLA_FLAGS"] = quick
        try:
            return epoch_step(next(iterator))
        finally:
            if quick:
                del os.environ["XLA_FLAGS"]

    model.train_function = first_epoch


def training_feed(model, part, batch_size: int, shuffle: bool, seed: int, first_epoch: int):
    """What model.fit trains on for the model's loop: (dataset, steps_per_epoch). With xla the
    step is made a whole compiled epoch (use_xla_epochs) and each element is an epoch."""
    if model.kexp_loop == "xla":
        use_xla_epochs(model, part)
        return epoch_feed(part, batch_size, shuffle, seed, first_epoch), 1
    return feed(part, batch_size, shuffle, seed, first_epoch), steps(len(part.y), batch_size)


@dataclass
class Placement:
    """Where a run's model lives: one device, or a MirroredStrategy's replicas (device: all)."""

    devices: list[str]
    strategy: Any = None

    @property
    def on_cpu(self) -> bool:
        return self.devices[0].upper().startswith("/CPU")

    @property
    def name(self) -> str:
        return self.devices[0] if self.strategy is None else f"all ({len(self.devices)}: {', '.join(self.devices)})"

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Build, compile and train inside this; Keras places each replica's share of a batch."""
        import tensorflow as tf

        with self.strategy.scope() if self.strategy is not None else tf.device(self.devices[0]):
            yield


def select_device(device: str) -> Placement:
    """The placement for `auto|cpu|gpu|gpu:N|all`; error when a requested GPU is not there.

    `all` mirrors the model on every GPU; on a machine without one, on every logical CPU device
    (one, unless configured otherwise; the tests configure two, so the multi-device path runs in CI).
    """
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if device == "all":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return Placement(devices, tf.distribute.MirroredStrategy(devices))
    if device == "cpu" or (device == "auto" and not gpus):
        return Placement(["/CPU:0"])
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= len(gpus):
        seen = f"sees {len(gpus)} GPU(s)" if gpus else "sees no GPU (is a CUDA build of TensorFlow installed, and a driver?)"
        raise DeviceError(f"device '{device}' was requested but TensorFlow {tf.__version__} {seen}; use device: cpu or auto")
    return Placement([f"/GPU:{index}"])


def set_precision(precision: str) -> None:
    """train.precision as Keras' global dtype policy (layers built afterwards compute in it)."""
    import keras

    keras.mixed_precision.set_global_policy(precision)


def set_determinism(enabled: bool) -> None:
    """train.deterministic: TensorFlow picks deterministic kernels (slower on GPU; identical runs on one machine)."""
    if enabled:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow in one call."""
    import keras

    keras.utils.set_random_seed(seed)


def feed(part, batch_size: int, shuffle: bool = False, seed: int = 0, first_epoch: int | None = None):
    """A tf.data pipeline of (inputs, targets) batches of `part` (a Split whose y holds the
    targets in the loss's form), all of it in TensorFlow's graph.

    The arrays become tensors once and each batch is a gather of row indices, so no Python
    runs per batch (Keras' own numpy path copies the arrays again for every fit and evaluate
    call, and a Python batch feeder costs a round trip per batch). Inputs stored compactly
    (uint8 pixels, 0/1 word presence) are cast to float32 per batch (and divided by
    part.divisor: the same floats the preprocessing would have stored).

    For training (`first_epoch` given) it is an endless stream of epochs from that one on,
    each shuffled by (seed, epoch) alone and ending with its own short batch: fit takes it
    with steps_per_epoch, keeps one iterator for the whole fit (one per epoch cost Pima 25 ms
    an epoch), and a resumed run sees the batches an uninterrupted one would have. Keras'
    last call of an epoch runs its full steps_per_execution, so that must divide the epoch
    (see steps_per_call).
    """
    import tensorflow as tf

    take_rows, targets, divisor = row_gatherer(part.x), as_tensor(part.y), part.divisor
    if first_epoch is None:
        batches = tf.data.Dataset.range(len(part.y)).batch(batch_size)
    else:
        batches = epoch_batches(len(part.y), batch_size, shuffle, seed, first_epoch)
    compact = np.issubdtype(part.x.dtype, np.integer) or part.x.dtype == np.bool_

    def gather(index):
        batch = take_rows(index)
        if compact:
            batch = tf.cast(batch, tf.float32)
        if divisor is not None:
            batch = batch / divisor
        return batch, tf.gather(targets, index)

    # a bounded number of batches in flight: AUTOTUNE held hundreds of MB of IMDB's float batches
    return untuned(batches.map(gather, num_parallel_calls=2).prefetch(2))


def untuned(dataset):
    """The pipeline, deterministic and without tf.data's autotuner: its parallelism is fixed,
    and the autotuner's thread made deleting the iterator at the end of fit wait for its next
    wake-up (25 s after the MNIST CNN's 3 epochs, fit 82.9 s instead of 51.9 s)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    return dataset.with_options(options)


def epoch_batches(rows: int, batch_size: int, shuffle: bool, seed: int, first_epoch: int):
    """Row-index batches of epoch first_epoch, first_epoch + 1, ...; an epoch's order depends on (seed, epoch) only."""
    import tensorflow as tf

    def one_epoch(epoch):
        return tf.data.Dataset.from_tensor_slices(epoch_order(rows, shuffle, seed, epoch)).batch(batch_size)

    return tf.data.Dataset.range(first_epoch, 2**62).flat_map(one_epoch)


def epoch_order(rows: int, shuffle: bool, seed: int, epoch):
    """The row indices of one epoch, shuffled by (seed, epoch) alone."""
    import tensorflow as tf

    order = tf.range(rows, dtype=tf.int64)
    if shuffle:
        order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    return order


def epoch_feed(part, batch_size: int, shuffle: bool, seed: int, first_epoch: int):
    """For train.loop xla: an endless stream of whole epochs from first_epoch on, each one element
    ((x, y) of its full batches stacked [batches, batch_size, ...], then (x, y) of the short last
    batch if there is one), with the rows feed would give batch by batch. Inputs stay as stored."""
    import tensorflow as tf

    take_rows, targets = row_gatherer(part.x), as_tensor(part.y)
    rows = len(part.y)
    full = rows // batch_size

    def one_epoch(epoch):
        order = epoch_order(rows, shuffle, seed, epoch)
        head = order[: full * batch_size]
        stacked = (tf.reshape(take_rows(head), (full, batch_size, *part.x.shape[1:])),
                   tf.reshape(tf.gather(targets, head), (full, batch_size, *part.y.shape[1:])))
        if full * batch_size == rows:
            return (stacked,)
        last = order[full * batch_size:]
        return stacked, (take_rows(last), tf.gather(targets, last))

    return untuned(tf.data.Dataset.range(first_epoch, 2**62).map(one_epoch).prefetch(1))


def steps_per_call(requested: int, steps_per_epoch: int) -> int:
    """The largest divisor of the epoch's batches not above `requested`: a call never runs into the next epoch."""
    return max(d for d in range(1, min(requested, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


# Above this size the inputs stay a NumPy array that each batch is gathered from (one Python
# call per batch), instead of becoming a tensor: TensorFlow copies the array, and IMDB's 25,000
# x 10,000 presence matrix would then be held twice.
COPY_UP_TO_BYTES = 64 * 2**20


def row_gatherer(x: np.ndarray):
    """A graph function from row indices to those rows of x (a tensor for small x, NumPy for large)."""
    import tensorflow as tf

    if x.nbytes <= COPY_UP_TO_BYTES:
        inputs = as_tensor(x)
        return lambda index: tf.gather(inputs, index)
    dtype, shape = tf.as_dtype(x.dtype), (None, *x.shape[1:])

    def take_rows(index):
        batch = tf.numpy_function(lambda i: x[i], [index], dtype, stateful=False)
        batch.set_shape(shape)
        return batch

    return take_rows


# Tensors made from arrays still alive, by id: training, evaluation and the report read the same
# arrays, and each copy of MNIST's training images is 188 MB.
_TENSORS: dict[int, tuple[weakref.ref, Any]] = {}


def as_tensor(array: np.ndarray):
    """The array as a TensorFlow tensor in host memory, made once while the array lives."""
    import tensorflow as tf

    for key in [k for k, (ref, _) in _TENSORS.items() if ref() is None]:
        del _TENSORS[key]
    held = _TENSORS.get(id(array))
    if held is not None and held[0]() is array:
        return held[1]
    with tf.device("/CPU:0"):  # the data stays in host memory whatever device trains
        tensor = tf.convert_to_tensor(array)
    _TENSORS[id(array)] = (weakref.ref(array), tensor)
    return tensor


def steps(rows: int, batch_size: int) -> int:
    """Batches per epoch, the last one possibly short."""
    return -(-rows // batch_size)


# What one TensorFlow call should cost when steps_per_execution is auto: enough work to hide
# the ~1 ms of Python and dispatch per call, little enough that a call ends within a couple
# of seconds on a slow CPU (signals are acted on between calls; the live bar moves per call).
AUTO_CALL_FLOPS = 1e10


def auto_steps_per_execution(model, batch_size: int, steps_per_epoch: int) -> int:
    """Batches per call from the model's arithmetic per batch: the divisor of the epoch's batches nearest that.

    Pima's 221-parameter MLP gets its whole epoch per call, the MNIST MLP a few hundred
    batches, the MNIST CNN one (its batches are costly enough on their own).
    """
    per_batch = max(1.0, batch_flops(model, batch_size))
    wanted = max(1, min(steps_per_epoch, int(AUTO_CALL_FLOPS // per_batch)))
    divisors = [d for d in range(1, steps_per_epoch + 1) if steps_per_epoch % d == 0]  # see feed
    return min(divisors, key=lambda d: abs(math.log(d / wanted)))


def model_flops_per_row(model) -> float:
    """Multiply-adds of one row's forward pass: each kernel once per output position (dense: once)."""
    total = 0.0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        try:
            positions = [d for d in layer.output.shape[1:-1] if d is not None]
        except (AttributeError, ValueError):  # a layer used twice has no single output
            positions = []
        total += float(np.prod(kernel.shape)) * float(np.prod(positions))
    return 2 * total


def plain(logs: dict | None) -> dict[str, float]:
    return {k: float(v) for k, v in (logs or {}).items()}


# history.json is rewritten after an epoch at most this often (see HistoryFile)
HISTORY_SECONDS = 0.5


def make_callbacks(run_dir: Path, train: TrainSpec, steps_per_epoch: int, emit, resume=None, on_checkpoint=None, member: str | None = None) -> list:
    """kexp's callbacks for model.fit; the last one is the Checkpointer (kexp.checkpoint).

    `resume` (a kexp.checkpoint.Checkpoint) continues history and early stopping where it ended.
    """
    import keras

    from kexp.checkpoint import make_checkpointer

    class HistoryFile(keras.callbacks.Callback):
        """history.json holds one value per finished epoch, rewritten atomically after an epoch:
        every epoch that ends HISTORY_SECONDS or more after the last write, the first and the
        last, and on a stop (write). Each write is two fsyncs, 1.6 ms here; Pima's epochs take 3."""

        def __init__(self):
            super().__init__()
            previous = resume.state if resume is not None and resume.arrays else {}
            self.history: dict[str, list[float]] = {k: list(v) for k, v in (previous.get("history") or {}).items()}
            self.epoch_seconds: list[float] = list(previous.get("epoch_seconds") or [])
            self._written = (len(self.epoch_seconds), -math.inf)  # (epochs, when)

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            for key, value in plain(logs).items():
                self.history.setdefault(key, []).append(value)
            self.epoch_seconds.append(time.perf_counter() - self._start)
            if time.perf_counter() - self._written[1] >= HISTORY_SECONDS or epoch + 1 >= train.epochs:
                self.write()

        def on_train_end(self, logs=None):
            self.write()

        def write(self) -> None:
            """history.json with every finished epoch (nothing to do when it has them already)."""
            if self._written[0] != len(self.epoch_seconds) or not (run_dir / "history.json").exists():
                write_json(run_dir / "history.json", {"epochs": len(self.epoch_seconds), "epoch_seconds": self.epoch_seconds, **self.history})
            self._written = (len(self.epoch_seconds), time.perf_counter())

    class NanGuard(keras.callbacks.Callback):
        """Stop as `diverged` when the loss stops being a number (checked per epoch: no per-batch sync).

        It raises before the Checkpointer sees the epoch, so the last checkpoint stays a good one.
        """

        def on_epoch_end(self, epoch, logs=None):
            logs = plain(logs)
            for key in ("loss", "val_loss"):  # an overflowing validation loss is divergence too, however the training loss looks
                loss = logs.get(key)
                if loss is not None and not math.isfinite(loss):
                    what = "loss" if key == "loss" else "validation loss"
                    raise Diverged(f"{what} became {loss} in epoch {epoch + 1}; lower train.optimizer.learning_rate or check the data")

    history = HistoryFile()
    callbacks = [history, NanGuard(), make_progress(train.epochs, steps_per_epoch, emit, member)]
    early_stopping = None
    if train.early_stopping:
        es = train.early_stopping
        early_stopping = keras.callbacks.EarlyStopping(
            monitor=es.monitor, patience=es.patience, min_delta=es.min_delta, mode=es.mode, restore_best_weights=es.restore_best_weights
        )
        callbacks.append(early_stopping)
    callbacks.append(make_checkpointer(run_dir, train.checkpoint_every, history, early_stopping, resume, on_checkpoint or (lambda c: None)))
    return callbacks


def make_progress(epochs: int, steps_per_epoch: int, emit, member: str | None = None):
    """Events for displays: train_started, batch (at most ten a second) and epoch_end with its metrics."""
    import keras

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self._shown = 0.0
            emit("train_started", epochs=epochs, steps_per_epoch=steps_per_epoch, member=member)

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            # reading logs waits for the device, so not after every batch
            if time.perf_counter() - self._shown > 0.1:
                self._shown = time.perf_counter()
                emit("batch", step=batch + 1, steps=steps_per_epoch, metrics=plain(logs))

        def on_epoch_end(self, epoch, logs=None):
            emit("epoch_end", epoch=epoch + 1, epochs=epochs, seconds=round(time.perf_counter() - self._start, 3), metrics=plain(logs),
                 member=member)

    return Progress()


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """`balanced`: n / (classes x count) per class, scikit-learn's and Keras' usual weighting."""
    counts = np.bincount(y.astype(np.int64), minlength=num_classes)
    return {c: float(len(y) / (num_classes * n)) if n else 0.0 for c, n in enumerate(counts)}


def report_part(splits: dict[str, Any]) -> str:
    """The part a classification report describes: the test part, else the training rows."""
    return "test" if splits.get("test") is not None else "train"


def class_report(data, part: str, outputs: np.ndarray) -> dict[str, Any]:
    """Per-class precision/recall/F1/support, confusion matrix and balanced accuracy of the model's outputs on `part`."""
    from kexp.reports import classification_report, to_classes

    return {"part": part, **classification_report(getattr(data, part).y, to_classes(outputs), data.class_names)}


def evaluation_batch_size(batch_size: int) -> int:
    """The batch that scoring passes use: at least 256 rows, since no gradients are kept (one rule for
    the validation feed, evaluate_splits and `kexp evaluate`)."""
    return max(batch_size, 256)


def predict_outputs(model, part, batch_size: int, check: Callable[[], None] = lambda: None) -> np.ndarray:
    """Model outputs [rows, units] for a Split, fed as evaluate feeds it, one batch per call
    (model.predict with several steps per call held ~600 MB more for IMDB's test part);
    `check` runs after every batch (a pending signal raises there)."""
    import tensorflow as tf

    outputs = []
    for x, _ in feed(part, batch_size):
        rows = int(x.shape[0])
        if rows < batch_size:
            # the short last batch padded to full size: one traced predict step per model serves
            # every part (a shape of its own retraced it for each part and each k-fold member)
            x = tf.pad(x, [[0, batch_size - rows]] + [[0, 0]] * (len(x.shape) - 1))
        outputs.append(np.asarray(model.predict_on_batch(x))[:rows])
        check()
    return np.concatenate(outputs).reshape(len(part), -1)


def evaluate_splits(model, splits: dict[str, Any], batch_size: int, check: Callable[[], None] = lambda: None,
                    keep: str | None = None) -> tuple[dict[str, dict[str, float] | None], np.ndarray | None]:
    """Keras' compiled loss and metrics of the final model on each split (dropout off), as plain
    floats, and the model's outputs on split `keep` (for its report; None if not asked).

    One prediction pass per split serves both: the compiled loss and metrics are applied to all
    the outputs at once, as model.evaluate's test_step applies them batch by batch (its running
    sums and batch-weighted mean loss come to the same numbers), so no part goes through the
    model twice. Where the loss needs more than the outputs (activity regularizers) or the
    model is mirrored, model.evaluate scores it.
    """
    import tensorflow as tf

    direct = not tf.distribute.has_strategy() and not any(getattr(layer, "activity_regularizer", None) is not None
                                                          for layer in model._flatten_layers())
    results, kept, size = {}, None, evaluation_batch_size(batch_size)
    for name, split in splits.items():
        if split is None:
            results[name] = None
            continue
        outputs = predict_outputs(model, split, size, check) if direct or name == keep else None
        if direct:
            results[name] = metrics_of_outputs(model, split.y, outputs)
        else:
            results[name] = plain(model.evaluate(feed(split, size), verbose=0, return_dict=True, callbacks=[evaluate_check(check)]))
        if name == keep:
            kept = outputs
    return results, kept


def metrics_of_outputs(model, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """The model's compiled loss (with its weight penalties) and metrics of `outputs` against `targets`, as plain floats."""
    model.reset_metrics()
    loss = model.compute_loss(y=targets, y_pred=outputs, training=False)
    metrics = plain(model.compute_metrics(None, targets, outputs, None))
    model.reset_metrics()
    metrics["loss"] = float(loss)
    if "r2" in metrics and not (math.isfinite(metrics["loss"]) and np.isfinite(outputs).all()):
        # Keras' R2Score turns the -inf of overflowing float32 predictions into 0.0 (its force_finite),
        # which would read as "no better than the mean": computed in float64 instead, and null
        # (listed under non_finite) where even that overflows
        from kexp.reports import r_squared

        r2 = r_squared(np.asarray(targets, np.float64).reshape(-1), np.asarray(targets, np.float64).reshape(-1) - np.asarray(outputs, np.float64).reshape(-1))
        metrics["r2"] = r2 if math.isfinite(r2) else float("nan")
    return dict(sorted(metrics.items()))  # evaluate's order (its compiled step returns the names sorted)


def diverged_parts(results: dict[str, dict[str, float] | None]) -> str | None:
    """'test loss inf (mae 1.96e+19)' for the scored parts whose loss is not a number, else None."""
    found = []
    for name, metrics in results.items():
        loss = (metrics or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            others = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items() if k != "loss" and v is not None)
            found.append(f"{name} loss {loss}" + (f" ({others})" if others else ""))
    return "; ".join(found) or None


def evaluate_check(check: Callable[[], None]):
    import keras

    return keras.callbacks.LambdaCallback(on_test_batch_end=lambda batch, logs: check())
