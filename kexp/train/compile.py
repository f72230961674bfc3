"""Build and compile a model from the spec: the registered builder, then targets in the loss's form,
metrics, optimizer and class weights from the `train` section.

The loss and the number of outputs come from kexp.task (resolve_loss, count_outputs), the
loop and steps per call from the LoopPlan (kexp.train.loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kexp.datasets.base import Dataset
from kexp.errors import ModelError, PluginError, SpecError
from kexp.plugins import call_plugin_code, definition_line, is_plugin_entry, run_plugin_code
from kexp.registry import MODELS
from kexp.spec import ExperimentSpec, TrainSpec
from kexp.task import BINARY_ONLY_METRICS, REGRESSION_LOSSES
from kexp.train.feeds import steps
from kexp.train.loop import LoopPlan, plan_loop
from kexp.train.runtime import Placement, set_seed


@dataclass(frozen=True)
class CompiledModel:
    """A freshly built, compiled Keras model and the loop plan it was compiled by."""

    model: Any
    plan: LoopPlan


def build_model(spec: ExperimentSpec, input_shape: tuple[int, ...], num_outputs: int, task: str = "classification"):
    """The spec's registered model builder called with its options: an uncompiled keras.Model."""
    fn = MODELS.get(spec.model.name).fn
    if is_plugin_entry(fn):  # the user's code: what it raises or returns is reported at its file and line
        built = checked_model(spec.model.name, fn, call_plugin_code(f"model '{spec.model.name}'", fn, spec.model.options, input_shape, num_outputs, task))
        return checked_shapes(spec.model.name, fn, built, input_shape, num_outputs)
    try:  # the options were validated once, with the spec
        return fn(spec.model.options, input_shape, num_outputs, task)
    except ValueError as exc:
        raise ModelError(f"model '{spec.model.name}': {exc}") from None


def checked_model(name: str, fn: Any, built: Any):
    """A plugin builder's result, if it is a Keras model; else PluginError naming the builder."""
    import keras

    if not isinstance(built, keras.Model):
        raise PluginError(f"{definition_line(fn)}: model '{name}' returned {type(built).__name__}, not a keras.Model "
                          "(return keras.Model(inputs, outputs), a keras.Sequential, or a subclass of keras.Model)", exit_code=1)
    return built


def checked_shapes(name: str, fn: Any, model: Any, input_shape: tuple[int, ...], num_outputs: int):
    """The plugin's model, once one example of the data's shape has gone through it and come out with
    `num_outputs` values: a model built for other inputs or another class count fails here, in one
    line naming the builder, not in fit's traceback or as a NaN loss."""
    outputs = run_plugin_code(f"model '{name}' on one example of shape {list(input_shape)}", fn, lambda: model(np.zeros((1, *input_shape), np.float32)))
    if isinstance(outputs, (list, tuple, dict)):
        raise PluginError(f"{definition_line(fn)}: model '{name}' has {len(outputs)} outputs; kexp trains models with one output", exit_code=1)
    got = tuple(outputs.shape[1:])
    if got != (num_outputs,):
        raise PluginError(f"{definition_line(fn)}: model '{name}' gives outputs of shape {list(got)} per example; this data needs "
                          f"[{num_outputs}] (num_outputs: {num_outputs}, the builder's third argument)", exit_code=1)
    return model


def new_model(spec: ExperimentSpec, data: Dataset, seed: int, device: Placement, loss: str, outputs: int) -> CompiledModel:
    """A freshly initialized model on `device`, compiled by its loop plan: the seed is set first,
    so each member starts from its own seed."""
    set_seed(seed)
    with device.scope():
        model = build_model(spec, data.input_shape, outputs, data.task)
        plan = plan_loop(model, spec.train, steps(len(data.train), spec.train.batch_size, device.processes > 1),
                         mirrored=device.strategy is not None and device.backend == "tensorflow",
                         input_bytes=data.train.held_bytes, on_cpu=device.on_cpu,
                         streamed=data.train.streamed)
        compile_model(model, spec.train, loss, outputs, plan)
    return CompiledModel(model, plan)


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


def compile_model(model, train: TrainSpec, loss: str, num_outputs: int, plan: LoopPlan) -> None:
    """Compile for training as `plan` says (with xla one Keras step is the whole epoch)."""
    model.compile(
        optimizer=make_optimizer(train),
        loss=loss,
        metrics=make_metrics(train.metrics, num_outputs),
        steps_per_execution=plan.keras_steps_per_execution,
        jit_compile=compiles_steps(train),
    )


def compiles_steps(train: TrainSpec) -> bool:
    """Whether each training step is XLA-compiled: train.jit_compile, and always under jax (uncompiled, JAX runs op by op, 30x slower here)."""
    from kexp.backends import active_backend

    return train.jit_compile or active_backend() == "jax"


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """`balanced`: n / (classes x count) per class, scikit-learn's and Keras' usual weighting."""
    counts = np.bincount(y.astype(np.int64), minlength=num_classes)
    return {c: float(len(y) / (num_classes * n)) if n else 0.0 for c, n in enumerate(counts)}
