"""Which Keras backend a process computes with: the spec's `backend`, set before Keras is imported.

Keras reads KERAS_BACKEND once, at its import, so the spec's choice must be in the environment
before any `import keras`: kexp.spec.validation calls prefer_backend before a plugin (which may
import Keras) is imported, and training checks with use_backend that it took. The same tf.data
feeds serve both backends: under jax TensorFlow is the input pipeline only, on the CPU.
Nothing here imports Keras, TensorFlow or JAX at module level.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from kexp.errors import KexpError

BACKENDS = ("tensorflow", "jax")
DEFAULT_BACKEND = "tensorflow"


class BackendError(KexpError):
    """The spec's backend is not installed, or Keras already runs another one in this process."""


def prefer_backend(name: Any) -> None:
    """Put `name` in KERAS_BACKEND if Keras is not imported yet (a spec under validation: a bad value is the schema's to report)."""
    if isinstance(name, str) and name in BACKENDS and "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = name


def use_backend(name: str) -> None:
    """Keras computes with `name` in this process: set before its import, or refused in one line."""
    check_installed(name)
    if "keras" not in sys.modules:  # Keras reads it at its import (kexp.train.runtime imports it quietly, without its extras)
        prefer_backend(name)
        return
    running = sys.modules["keras"].backend.backend()
    if running != name:
        raise BackendError(f"backend: {name}: Keras was already imported with backend {running} in this process "
                           f"(KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'unset')}); run kexp in a fresh process")


def check_installed(name: str) -> None:
    if name == "jax" and importlib.util.find_spec("jax") is None:
        raise BackendError("backend: jax needs JAX: pip install 'kexp[jax]' (or jax[cuda12] for NVIDIA GPUs)")


def active_backend() -> str:
    """The backend Keras computes with (importing Keras)."""
    import keras

    return keras.backend.backend()


def backend_versions(name: str) -> dict[str, str]:
    """The versions env.json records for the backend beside TensorFlow's and Keras'."""
    if name != "jax":
        return {}
    import jax
    import jaxlib

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}


def as_model_input(batch):
    """A tf.data batch as the backend's compiled predict takes it: a NumPy array under jax (a TensorFlow tensor is no JAX array)."""
    if active_backend() == "jax" and hasattr(batch, "numpy"):
        return batch.numpy()
    return batch
