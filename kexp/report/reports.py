"""Numbers about predictions: per-class tables for classifiers, error summaries for regression.

Pure functions, numpy in and plain dicts out (no TensorFlow, no printing), so `kexp evaluate`
and later fold and comparison summaries compute them the same way. The definitions are
scikit-learn's (zero_division=0, balanced accuracy over the classes present, R² forced finite)
and tests/test_reports.py checks every number against its functions; the counting is numpy's,
because importing sklearn.metrics (with SciPy and pandas) took 1.1 s of every run.
"""

from __future__ import annotations

import math
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
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    n = len(class_names)
    known = (y_true >= 0) & (y_true < n) & (y_pred >= 0) & (y_pred < n)  # as scikit-learn's labels=: others are not counted
    matrix = np.bincount(y_true[known] * n + y_pred[known], minlength=n * n).reshape(n, n)
    hits, support, predicted = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    precision, recall = ratio(hits, predicted), ratio(hits, support)
    f1 = ratio(2 * hits, predicted + support)  # 2PR / (P + R), without its 0/0
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }
    present = support > 0
    balanced = float(np.mean(recall[present])) if present.any() else float("nan")
    return {
        "class_names": list(class_names),
        "rows": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
        "balanced_accuracy": balanced,
        "confusion_matrix": matrix.astype(int).tolist(),
        "per_class": per_class,
        "macro_avg": average(per_class, weighted=False),
        "weighted_avg": average(per_class, weighted=True),
    }


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def average(per_class: dict[str, dict[str, Any]], weighted: bool) -> dict[str, float]:
    """Mean precision/recall/F1 over classes, plain or weighted by support (scikit-learn's macro/weighted)."""
    rows = list(per_class.values())
    weights = np.array([r["support"] for r in rows], dtype=float) if weighted else np.ones(len(rows))
    if not rows or weights.sum() == 0:
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    return {key: float(np.average([r[key] for r in rows], weights=weights)) for key in ("precision", "recall", "f1")}


def regression_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Mean absolute error, root mean squared error and R² of predicted values (R² needs 2+ rows)."""
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if not len(y_true):
        return {"rows": 0, "mae": float("nan"), "rmse": float("nan"), "r2": float("nan")}
    errors = y_true - y_pred
    return {
        "rows": int(len(y_true)),
        "mae": float(np.mean(np.abs(errors))),
        "rmse": math.sqrt(float(np.mean(errors**2))),
        "r2": r_squared(y_true, errors),
    }


def r_squared(y_true: np.ndarray, errors: np.ndarray) -> float:
    """1 - residual / total sum of squares; nan below two rows; constant targets give 1 if hit exactly, else 0 (scikit-learn's force_finite)."""
    if len(y_true) < 2:
        return float("nan")
    residual, total = float(np.sum(errors**2)), float(np.sum((y_true - y_true.mean()) ** 2))
    if total == 0:
        return 1.0 if residual == 0 else 0.0
    return 1.0 - residual / total
