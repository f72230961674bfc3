"""What the task allows: classification with N classes, or regression of one number.

Pure Python, so `kexp validate` can check a spec against the task before any data is
read or TensorFlow is imported, and training uses the same rules after the data loads.
"""

from __future__ import annotations

CLASSIFICATION, REGRESSION = "classification", "regression"

CLASSIFICATION_LOSSES = {"binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"}
REGRESSION_LOSSES = {"mean_squared_error", "mean_absolute_error", "huber", "log_cosh"}
LOSSES = {"auto"} | CLASSIFICATION_LOSSES | REGRESSION_LOSSES
# Keras losses that exist but fit neither task's targets and outputs here: saying why at
# validation beats a shape error after the data has loaded.
UNSUITED_LOSSES = {
    "hinge": "a margin loss that needs -1/+1 targets and a linear output",
    "squared_hinge": "a margin loss that needs -1/+1 targets and a linear output",
    "categorical_hinge": "a margin loss that needs a linear output",
    "kl_divergence": "a loss between probability distributions, not class labels",
    "poisson": "a count-regression loss",
    "mean_squared_logarithmic_error": "a regression loss for positive targets, not offered",
}
CLASSIFICATION_METRICS = {"accuracy", "precision", "recall", "auc"}
REGRESSION_METRICS = {"mae", "rmse", "r2"}
METRICS = CLASSIFICATION_METRICS | REGRESSION_METRICS
DEFAULT_METRICS = {CLASSIFICATION: ["accuracy"], REGRESSION: ["mae", "rmse", "r2"]}
BINARY_ONLY_METRICS = {"precision", "recall", "auc"}


def resolve_loss(loss: str, num_classes: int, task: str = CLASSIFICATION) -> str:
    """`auto` -> mean_squared_error for regression, binary_crossentropy for two classes, else sparse categorical."""
    if loss != "auto":
        return loss
    if task == REGRESSION:
        return "mean_squared_error"
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"


def count_outputs(loss: str, num_classes: int, task: str = CLASSIFICATION) -> int:
    """One linear unit for regression, one sigmoid unit for binary cross-entropy, else one unit per class."""
    return 1 if task == REGRESSION or loss == "binary_crossentropy" else num_classes


def unknown_loss_message(loss: str) -> str:
    if loss in UNSUITED_LOSSES:
        return f"'{loss}' is {UNSUITED_LOSSES[loss]}; choose from {', '.join(sorted(LOSSES))}"
    return f"unknown loss '{loss}'; choose from {', '.join(sorted(LOSSES))}"


def unknown_metric_message(metric: str) -> str:
    aliases = {"mean_absolute_error": "mae", "mean_squared_error": "rmse", "root_mean_squared_error": "rmse"}
    hint = f" (for regression: '{aliases[metric]}')" if metric in aliases else ""
    return f"unknown metric '{metric}'{hint}; choose from {', '.join(sorted(METRICS))}"


def task_problems(
    loss: str, metrics: list[str], monitor: str | None, has_validation: bool, num_classes: int | None, task: str = CLASSIFICATION
) -> list[tuple[str, str]]:
    """(train.key, message) for each choice that cannot work for this task; num_classes None = not known yet."""
    problems = loss_problems(loss, task, num_classes) + metric_problems(loss, metrics, task, num_classes)
    if monitor is not None:
        problems += monitor_problems(monitor, metrics, has_validation)
    return problems


def loss_problems(loss: str, task: str, num_classes: int | None) -> list[tuple[str, str]]:
    if task == REGRESSION and loss in CLASSIFICATION_LOSSES:
        return [("train.loss", f"'{loss}' is a classification loss and this is a regression task; use auto or one of {', '.join(sorted(REGRESSION_LOSSES))}")]
    if task == CLASSIFICATION and loss in REGRESSION_LOSSES:
        return [("train.loss", f"'{loss}' is a regression loss and this is a classification task (csv has task: regression for numeric targets); use auto or one of {', '.join(sorted(CLASSIFICATION_LOSSES))}")]
    if num_classes is not None and loss == "binary_crossentropy" and num_classes != 2:
        return [("train.loss", f"binary_crossentropy needs 2 classes, the data has {num_classes}; use auto or sparse_categorical_crossentropy")]
    return []


def metric_problems(loss: str, metrics: list[str], task: str, num_classes: int | None) -> list[tuple[str, str]]:
    allowed = REGRESSION_METRICS if task == REGRESSION else CLASSIFICATION_METRICS
    problems = [
        ("train.metrics", f"'{name}' is not a {task} metric; choose from {', '.join(sorted(allowed))}") for name in metrics if name not in allowed
    ]
    if task == CLASSIFICATION and num_classes is not None and loss not in REGRESSION_LOSSES:  # that loss is reported already
        outputs = count_outputs(resolve_loss(loss, num_classes), num_classes)
        for name in metrics:
            if name in BINARY_ONLY_METRICS and outputs != 1:
                if num_classes != 2:
                    problems.append(("train.metrics", f"'{name}' needs a binary task with one sigmoid output, but this task has {num_classes} classes; remove it"))
                else:
                    problems.append(("train.metrics", f"'{name}' needs a binary task with one sigmoid output, but loss {loss} gives {outputs} outputs; remove it or use loss auto"))
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
