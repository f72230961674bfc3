"""Numbers about predictions: per-class tables for classifiers, error summaries for regression.

Pure functions, numpy in and plain dicts out (no TensorFlow, no printing), so `kexp evaluate`
and later fold and comparison summaries compute them the same way. scikit-learn does the
counting: its definitions are the ones readers check against.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np


def to_classes(outputs: np.ndarray) -> np.ndarray:
    """Class ids from model outputs: one sigmoid unit means class 1 above 0.5 (Keras' binary accuracy rule), else the largest unit."""
    outputs = np.asarray(outputs).reshape(len(outputs), -1)
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return outputs.argmax(axis=1)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Confusion matrix, per-class precision/recall/F1/support, accuracy and balanced accuracy.

    `y_true` and `y_pred` are class ids (index into `class_names`). The confusion matrix has
    one row per true class and one column per predicted class, both in `class_names` order,
    including classes that never occur. A class with no predictions has precision 0 (and one
    with no rows recall 0), scikit-learn's zero_division=0.
    """
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    labels = list(range(len(class_names)))
    if len(y_true):
        matrix = confusion_matrix(y_true, y_pred, labels=labels)
        precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    else:  # scikit-learn refuses empty input; an empty part (a fold, a filter) has no rows to count
        matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
        precision = recall = f1 = support = np.zeros(len(labels))
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }
    with warnings.catch_warnings():
        # It warns when a predicted class has no true rows; the mean over present classes is still right.
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(y_true, y_pred) if len(y_true) else float("nan")
    return {
        "class_names": list(class_names),
        "rows": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
        "balanced_accuracy": float(balanced),
        "confusion_matrix": matrix.astype(int).tolist(),
        "per_class": per_class,
        "macro_avg": average(per_class, weighted=False),
        "weighted_avg": average(per_class, weighted=True),
    }


def average(per_class: dict[str, dict[str, Any]], weighted: bool) -> dict[str, float]:
    """Mean precision/recall/F1 over classes, plain or weighted by support (scikit-learn's macro/weighted)."""
    rows = list(per_class.values())
    weights = np.array([r["support"] for r in rows], dtype=float) if weighted else np.ones(len(rows))
    if not rows or weights.sum() == 0:
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    return {key: float(np.average([r[key] for r in rows], weights=weights)) for key in ("precision", "recall", "f1")}


def regression_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Mean absolute error, root mean squared error and R² of predicted values (R² needs 2+ rows)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if not len(y_true):
        return {"rows": 0, "mae": float("nan"), "rmse": float("nan"), "r2": float("nan")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # R² of one row is undefined: scikit-learn warns and returns nan
        r2 = r2_score(y_true, y_pred)
    return {
        "rows": int(len(y_true)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": math.sqrt(float(mean_squared_error(y_true, y_pred))),
        "r2": float(r2),
    }
