"""What the task (classification with N classes) allows: losses, output units, metrics.

Pure Python, so `kexp validate` can check a spec against the task before any data is
read or TensorFlow is imported, and training uses the same rules after the data loads.
"""

from __future__ import annotations

CLASSIFICATION_LOSSES = {"auto", "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"}
# Keras losses that exist but do not fit a classifier's targets and outputs: saying why
# at validation beats a shape error after the data has loaded.
UNSUITED_LOSSES = {
    "mean_squared_error": "a regression loss",
    "mean_absolute_error": "a regression loss",
    "mean_squared_logarithmic_error": "a regression loss",
    "huber": "a regression loss",
    "log_cosh": "a regression loss",
    "hinge": "a margin loss that needs -1/+1 targets and a linear output",
    "squared_hinge": "a margin loss that needs -1/+1 targets and a linear output",
    "categorical_hinge": "a margin loss that needs a linear output",
    "kl_divergence": "a loss between probability distributions, not class labels",
    "poisson": "a count-regression loss",
}
CLASSIFICATION_METRICS = {"accuracy", "precision", "recall", "auc"}
BINARY_ONLY_METRICS = {"precision", "recall", "auc"}
UNSUITED_METRICS = {"mean_squared_error", "mean_absolute_error"}


def resolve_loss(loss: str, num_classes: int) -> str:
    """`auto` -> binary_crossentropy for two classes, sparse_categorical_crossentropy otherwise."""
    if loss != "auto":
        return loss
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"


def count_outputs(loss: str, num_classes: int) -> int:
    """One sigmoid unit for binary cross-entropy, one unit per class otherwise."""
    return 1 if loss == "binary_crossentropy" else num_classes


def unknown_loss_message(loss: str) -> str:
    if loss in UNSUITED_LOSSES:
        return (
            f"'{loss}' is {UNSUITED_LOSSES[loss]}, and every kexp dataset is a classification task; "
            f"use auto (or one of {', '.join(sorted(CLASSIFICATION_LOSSES - {'auto'}))})"
        )
    return f"unknown loss '{loss}'; choose from {', '.join(sorted(CLASSIFICATION_LOSSES))}"


def unknown_metric_message(metric: str) -> str:
    if metric in UNSUITED_METRICS:
        return f"'{metric}' is a regression metric and every kexp dataset is a classification task; choose from {', '.join(sorted(CLASSIFICATION_METRICS))}"
    return f"unknown metric '{metric}'; choose from {', '.join(sorted(CLASSIFICATION_METRICS))}"


def task_problems(loss: str, metrics: list[str], monitor: str | None, has_validation: bool, num_classes: int | None) -> list[tuple[str, str]]:
    """(train.key, message) for each choice that cannot work for this task; num_classes None = not known yet."""
    problems = []
    if num_classes is not None and loss == "binary_crossentropy" and num_classes != 2:
        problems.append(("train.loss", f"binary_crossentropy needs 2 classes, the data has {num_classes}; use auto or sparse_categorical_crossentropy"))
    if num_classes is not None:
        outputs = count_outputs(resolve_loss(loss, num_classes), num_classes)
        for name in metrics:
            if name in BINARY_ONLY_METRICS and outputs != 1:
                why = f"this task has {num_classes} classes" if num_classes != 2 else f"loss {loss} gives {outputs} outputs"
                problems.append(("train.metrics", f"'{name}' needs a binary task with one sigmoid output, but {why}; remove it or use loss auto"))
    if monitor is not None:
        problems += monitor_problems(monitor, metrics, has_validation)
    return problems


def monitor_problems(monitor: str, metrics: list[str], has_validation: bool) -> list[tuple[str, str]]:
    """Early stopping watches a value Keras logs; a name it never logs would silently do nothing."""
    logged = ["loss", *metrics]
    name = monitor.removeprefix("val_")
    key = "train.early_stopping.monitor"
    if name not in logged:
        choices = logged + [f"val_{m}" for m in logged] * has_validation
        return [(key, f"'{monitor}' is never logged; choose from {', '.join(choices)}")]
    if monitor.startswith("val_") and not has_validation:
        return [(key, f"'{monitor}' needs a validation split; set train.validation_split (e.g. 0.2) or monitor '{name}'")]
    return []
