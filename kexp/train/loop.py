"""The loop plan: which loop runs a fit's batches, and how many batches one TensorFlow call runs.

plan_loop decides it once per model, from train.loop, train.steps_per_execution and what the
model, data and device allow, and returns a LoopPlan; it is passed to whoever needs it:
compile_model (kexp.train.compile) compiles by it, training_feed feeds by it, and the run's
env.json and run_started event record it. With loop xla a call is a whole epoch, run as one
XLA-compiled loop over its batches (use_xla_epochs).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from kexp.backends import active_backend
from kexp.errors import SpecError
from kexp.spec import TrainSpec, loop_conflicts
from kexp.train.feeds import COPY_UP_TO_BYTES, epoch_feed, feed, steps


@dataclass(frozen=True)
class LoopPlan:
    """How a model's fit runs its batches.

    loop: "xla" (a whole epoch per call, compiled) or "keras" (Keras' own loop);
    steps_per_execution: batches per call as recorded (with xla, the epoch's batches);
    xla_flags: the XLA_FLAGS of the process's first XLA compile (QUICK_COMPILE_FLAGS for a
    fit of little arithmetic, else the environment's, or None).
    """

    loop: str
    steps_per_execution: int
    xla_flags: str | None

    @property
    def keras_steps_per_execution(self) -> int:
        """What model.compile is given: with xla one Keras step is the whole epoch."""
        return 1 if self.loop == "xla" else self.steps_per_execution


def plan_loop(model, train: TrainSpec, steps_per_epoch: int, mirrored: bool = False, input_bytes: int = 0,
              on_cpu: bool = True, streamed: bool = False) -> LoopPlan:
    """The loop (choose_loop) and steps_per_execution (train.steps_per_execution, or auto's choice) for a built model.

    Mirrored (device: all), Keras 3's multi-step loop fails inside TensorFlow ("You must feed a
    value for placeholder tensor"), so auto is 1 there (a larger value is a spec problem:
    spec.spec_train_problems). Inputs streamed from files (image_folder) always take Keras' loop.
    """
    loop = choose_loop(model, train, steps_per_epoch, mirrored, input_bytes, on_cpu, streamed)
    spe = train.steps_per_execution
    if loop == "xla":
        spe = steps_per_epoch
    elif spe == "auto":
        spe = 1 if mirrored else auto_steps_per_execution(model, train.batch_size, steps_per_epoch)
    else:
        spe = steps_per_call(spe, steps_per_epoch)
    # For a fit of little arithmetic the compile is the cost (Pima: 0.4 s instead of 1.0 s with
    # these flags, the same 2-3 ms an epoch); the MNIST MLP ran each batch 4x slower with them.
    quick = loop == "xla" and "XLA_FLAGS" not in os.environ and fit_flops(model, train, steps_per_epoch) < QUICK_COMPILE_FLOPS
    return LoopPlan(loop, spe, QUICK_COMPILE_FLAGS if quick else os.environ.get("XLA_FLAGS"))


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


def choose_loop(model, train: TrainSpec, steps_per_epoch: int, mirrored: bool, input_bytes: int, on_cpu: bool,
                streamed: bool = False) -> str:
    """train.loop resolved: "xla" (a whole epoch per call, compiled) or "keras"; an explicit xla that cannot work is an error."""
    conflicts = loop_conflicts(train, mirrored)
    if steps_per_epoch < 2:
        conflicts.append(f"an epoch of a single batch (under {2 * train.batch_size} training rows)")
    if streamed:  # xla's epoch_feed stacks a whole epoch's inputs into one element, which streaming exists to avoid
        conflicts.append("inputs streamed from image files (an xla call takes a whole epoch's inputs at once)")
    if train.loop == "keras" or active_backend() != "tensorflow":  # under jax, JAX compiles each step itself
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


def steps_per_call(requested: int, steps_per_epoch: int) -> int:
    """The largest divisor of the epoch's batches not above `requested`: a call never runs into the next epoch."""
    return max(d for d in range(1, min(requested, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


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


def use_xla_epochs(model, part, xla_flags: str | None) -> None:
    """Make model.fit's step a whole epoch (from epoch_feed) run as one XLA-compiled loop over its batches.

    Each batch goes through Keras' own train_step, in the order and with the rows the Keras loop
    would use, so the updates and the logged running means are the same; what goes is the
    executor's cost per op (Pima: about 100 ops a batch, 0.3 ms).
    """
    epoch_step = compiled_epoch_step(model, part)
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
        quick = xla_flags if "XLA_FLAGS" not in os.environ else None
        if quick:
            os.environ["XLA_FLAGS"] = quick
        try:
            return epoch_step(next(iterator))
        finally:
            if quick:
                del os.environ["XLA_FLAGS"]

    model.train_function = first_epoch


def compiled_epoch_step(model, part):
    """A jit-compiled function from one epoch_feed element to the logs of its last train_step.

    Inputs stored compactly are cast (and divided by part.divisor) inside the loop, as feed does per batch.
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

    return epoch_step


def training_feed(model, part, plan: LoopPlan, train: TrainSpec, seed: int, first_epoch: int, whole_batches: bool = False):
    """What model.fit trains on for the plan's loop: (dataset, steps_per_epoch). With xla the
    step is made a whole compiled epoch (use_xla_epochs) and each element is an epoch;
    whole_batches (several processes) leaves out each epoch's short last batch."""
    batch_size, shuffle = train.batch_size, train.shuffle
    if plan.loop == "xla":
        use_xla_epochs(model, part, plan.xla_flags)
        return epoch_feed(part, batch_size, shuffle, seed, first_epoch), 1
    return feed(part, batch_size, shuffle, seed, first_epoch, whole_batches), steps(len(part.y), batch_size, whole_batches)
