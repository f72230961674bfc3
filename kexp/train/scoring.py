"""Score a trained model: its compiled loss and metrics on each part from one prediction pass, and a per-class report."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from kexp.backends import as_model_input
from kexp.spec import ExperimentSpec
from kexp.train.feeds import feed


def plain(logs: dict | None) -> dict[str, float]:
    """Keras logs as plain floats (for JSON and events)."""
    return {k: float(v) for k, v in (logs or {}).items()}


def report_part(splits: dict[str, Any]) -> str:
    """The part a classification report describes: the test part, else the training rows."""
    return "test" if splits.get("test") is not None else "train"


def class_report(data, part: str, outputs: np.ndarray) -> dict[str, Any]:
    """Per-class precision/recall/F1/support, confusion matrix and balanced accuracy of the model's outputs on `part`."""
    from kexp.report.reports import classification_report, to_classes

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
        outputs.append(np.asarray(model.predict_on_batch(as_model_input(x)))[:rows])
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
        from kexp.report.reports import r_squared

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


def needs_train_pass(spec: ExperimentSpec, splits: dict[str, Any]) -> bool:
    """Whether the final model is scored on its training rows by a pass of its own.

    Only where that is the score (protocol train), there is no test part, or early stopping
    went back to an earlier epoch's weights; otherwise the train metrics are the last epoch's,
    as Keras logged them, and a whole extra pass over the training data is saved (for the
    MNIST CNN on a CPU, a third of an epoch).
    """
    rewound = spec.train.early_stopping is not None and spec.train.early_stopping.restore_best_weights
    return spec.evaluation.protocol == "train" or splits.get("test") is None or rewound


def last_epoch_metrics(history: dict[str, list[float]]) -> dict[str, float]:
    """The training metrics of the last epoch (running means over its batches, dropout on)."""
    return {name: values[-1] for name, values in history.items() if not name.startswith("val_") and values}
