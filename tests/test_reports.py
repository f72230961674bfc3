"""kexp.report.reports: per-class and regression numbers equal the ones worked out by hand."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from kexp.report.reports import classification_report, regression_report

# 6 rows, 3 classes; worked out by hand below.
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]
NAMES = ["cat", "dog", "eel"]


def test_per_class_numbers_equal_the_hand_computed_ones():
    report = classification_report(np.array(Y_TRUE), np.array(Y_PRED), NAMES)
    # rows: true class, columns: predicted
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    expected = {
        "cat": {"precision": 2 / 2, "recall": 2 / 3, "f1": 0.8, "support": 3},
        "dog": {"precision": 1 / 2, "recall": 1 / 2, "f1": 0.5, "support": 2},
        "eel": {"precision": 1 / 2, "recall": 1 / 1, "f1": 2 / 3, "support": 1},
    }
    assert list(report["per_class"]) == NAMES
    for name, row in expected.items():
        assert report["per_class"][name] == pytest.approx(row), name
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert report["macro_avg"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert report["weighted_avg"]["recall"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2 + 1 * 1) / 6)
    assert report["rows"] == 6 and report["class_names"] == NAMES


def test_a_class_never_seen_nor_predicted_gets_a_row_of_zeros_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = classification_report(np.array(Y_TRUE), np.array(Y_PRED), [*NAMES, "fox"])
    assert np.array(report["confusion_matrix"]).shape == (4, 4)
    assert report["per_class"]["fox"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # balanced accuracy averages recall over the classes that have rows
    assert report["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_binary_report_counts_each_class():
    report = classification_report(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["ham", "spam"])
    assert report["confusion_matrix"] == [[1, 1], [0, 2]]
    assert report["per_class"]["spam"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["ham"]["recall"] == pytest.approx(1 / 2)


def test_regression_numbers_equal_the_hand_computed_ones():
    report = regression_report(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 5.0]))
    # errors 0, 0, 0, 1: MAE 1/4, RMSE sqrt(1/4); R² = 1 - 1 / sum((y - 2.5)²) = 1 - 1/5
    assert report == pytest.approx({"rows": 4, "mae": 0.25, "rmse": 0.5, "r2": 0.8})


def test_reports_are_plain_json_and_need_no_tensorflow():
    classification = classification_report(np.array(Y_TRUE, dtype=np.int32), np.array(Y_PRED, dtype=np.int64), NAMES)
    regression = regression_report(np.array([1.0, 2.0], dtype=np.float32), np.array([1.5, 2.0], dtype=np.float32))
    json.dumps([classification, regression], allow_nan=False)  # plain Python numbers, no numpy scalars
    assert all(type(v) in (int, float) for v in regression.values())
    code = "import sys, kexp.report.reports as r, numpy as np; r.classification_report(np.array([0]), np.array([0]), ['a']); print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_empty_parts_give_nan_not_errors():
    assert math.isnan(regression_report(np.array([]), np.array([]))["mae"])
    assert math.isnan(classification_report(np.array([], dtype=int), np.array([], dtype=int), NAMES)["balanced_accuracy"])


@pytest.mark.parametrize("classes", [2, 3, 7])
def test_every_number_equals_scikit_learns_on_random_labels(classes):
    from sklearn import metrics

    rng = np.random.default_rng(classes)
    for rows in (1, 5, 40, 500):
        y_true, y_pred = rng.integers(0, classes, rows), rng.integers(0, classes, rows)
        y_pred[: rows // 3] = y_true[: rows // 3]  # better than chance, and some classes may be missing
        names = [f"c{i}" for i in range(classes)]
        labels = list(range(classes))
        report = classification_report(y_true, y_pred, names)
        assert report["confusion_matrix"] == metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist()
        precision, recall, f1, support = metrics.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        for i, name in enumerate(names):
            assert report["per_class"][name] == pytest.approx(
                {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}), (rows, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert report["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(y_true, y_pred))
            assert report["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred))
        values, guesses = rng.normal(size=rows), rng.normal(size=rows)
        for targets in (values, np.full(rows, 2.0)):  # constant targets: R² forced finite, as scikit-learn does
            got = regression_report(targets, guesses)
            assert got["mae"] == pytest.approx(metrics.mean_absolute_error(targets, guesses))
            assert got["rmse"] == pytest.approx(math.sqrt(metrics.mean_squared_error(targets, guesses)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected_r2 = metrics.r2_score(targets, guesses)
            assert got["r2"] == pytest.approx(expected_r2, nan_ok=True), rows
        assert regression_report(np.full(rows, 2.0), np.full(rows, 2.0))["r2"] == (1.0 if rows > 1 else pytest.approx(float("nan"), nan_ok=True))


def test_training_and_reports_do_not_import_scikit_learn():
    code = ("import sys, numpy as np, kexp.report.reports as r; r.classification_report(np.array([0, 1]), np.array([0, 0]), ['a', 'b']);"
            " r.regression_report(np.array([1., 2.]), np.array([1., 3.])); print('sklearn' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
