"""TensorFlow start-up, devices, precision, determinism and seeds: what a run sets before a model exists.

start_tensorflow imports TensorFlow (and Keras) without its start-up chatter and sets its
threads and GPU memory growth; select_device answers the spec's `device` as a Placement;
set_precision, set_determinism and set_seed apply train.precision, train.deterministic and a
member's seed.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kexp.errors import DeviceError

# TensorFlow's C++ start-up lines that say nothing actionable (printed before its own
# log level applies, so TF_CPP_MIN_LOG_LEVEL cannot hide them).
STARTUP_NOISE = re.compile(
    r"oneDNN custom operations|cudart_stub|cpu_feature_guard|To enable the following instructions"
    r"|All log messages before absl::InitializeLog|failed call to cuInit|Unable to register cu\w+ factory"
    r"|computation placer already registered|TF-TRT Warning|Created TensorFlow Lite XNNPACK delegate"
    r"|\[Gloo\] Rank \d+ is connected to"
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


class HiddenModules(importlib.abc.MetaPathFinder):
    """An import finder that answers "not installed" for these modules and their submodules."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if any(fullname == name or fullname.startswith(name + ".") for name in self.names):
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden while Keras loads)", name=fullname)
        return None


@contextlib.contextmanager
def hidden_modules(names: tuple[str, ...]) -> Iterator[None]:
    """Imports of these modules (and their submodules) fail as if they were not installed; ones already imported are unaffected."""
    finder = HiddenModules(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def start_tensorflow(threads: int | None = None, backend: str = "tensorflow") -> None:
    """Import TensorFlow, set its CPU threads and GPU memory growth, without its start-up chatter
    (unless TF_CPP_MIN_LOG_LEVEL=0). Settings apply before TensorFlow's runtime starts; in a
    process where it already has (tests, notebooks), the ones it cannot change stay as they were."""
    with quiet_native_stderr():
        with hidden_modules(KERAS_EXTRAS_UNUSED):  # TensorFlow's import loads Keras
            import keras  # noqa: F401
            import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if backend != "tensorflow":  # TensorFlow is only the input pipeline then: the GPUs are the backend's
            with contextlib.suppress(RuntimeError, ValueError):
                tf.config.set_visible_devices([], "GPU")
            gpus = []
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


@dataclass
class Placement:
    """Where a run's model lives: one device, or replicas: TensorFlow's MirroredStrategy (device: all), or under
    jax Keras' DataParallel over the local devices (device: all) or every process's (kexp.train.distributed)."""

    devices: list[str]
    strategy: Any = None  # tf.distribute.MirroredStrategy, or a keras.distribution.Distribution under jax
    backend: str = "tensorflow"
    processes: int = 1
    process_index: int = 0  # this process's number among them
    hosts: list[dict] | None = None  # several processes: each one's host and devices (kexp.train.distributed.process_facts)

    @property
    def on_cpu(self) -> bool:
        return self.devices[0].upper().lstrip("/").startswith("CPU")

    @property
    def name(self) -> str:
        return self.devices[0] if self.strategy is None else f"all ({len(self.devices)}: {', '.join(self.devices)})"

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Build, compile and train inside this; Keras places each replica's share of a batch."""
        if self.strategy is not None:
            with self.strategy.scope():
                yield
        elif self.backend == "jax":
            import keras

            with keras.device(self.devices[0]):
                yield
        else:
            import tensorflow as tf

            with tf.device(self.devices[0]):
                yield


def select_device(device: str) -> Placement:
    """The placement for `auto|cpu|gpu|gpu:N|all` under tensorflow (under jax: distributed.jax_placement); error when a requested GPU is not there.

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


# Under jax, XLA's GPU kernels are made deterministic by this flag, read when JAX starts its GPU client.
JAX_DETERMINISM_FLAG = "--xla_gpu_deterministic_ops=true"


def set_determinism(enabled: bool, backend: str = "tensorflow") -> None:
    """train.deterministic: TensorFlow picks deterministic kernels (slower on GPU; identical runs on one machine);
    under jax also XLA's GPU kernels (JAX on the CPU is deterministic already). tf.data feeds both."""
    if enabled:
        if backend == "jax" and JAX_DETERMINISM_FLAG not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {JAX_DETERMINISM_FLAG}".strip()
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow in one call."""
    import keras

    keras.utils.set_random_seed(seed)
