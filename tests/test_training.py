import numpy as np
import pytest

from kexp import training
from kexp.errors import DeviceError, SpecError


def test_auto_loss_and_output_size_follow_the_task():
    assert training.resolve_loss("auto", 2) == "binary_crossentropy"
    assert training.resolve_loss("auto", 10) == "sparse_categorical_crossentropy"
    assert training.count_outputs("binary_crossentropy", 2) == 1
    assert training.count_outputs("categorical_crossentropy", 2) == 2


def test_targets_in_the_form_the_loss_expects():
    y = np.array([0, 2, 1])
    onehot = training.make_targets(y, "categorical_crossentropy", 3)
    assert onehot.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]] and onehot.dtype == np.float32
    assert training.make_targets(y, "sparse_categorical_crossentropy", 3).dtype == np.int32
    assert training.make_targets(np.array([0, 1]), "binary_crossentropy", 2).dtype == np.float32


def test_small_arrays_go_to_keras_as_they_are():
    x, y = np.zeros((10, 2), np.float32), np.zeros(10)
    feed = training.batches(x, y, 4)
    assert feed["x"] is x and feed["y"] is y and feed["batch_size"] == 4


def test_large_arrays_are_fed_batch_by_batch_each_row_once_per_epoch(monkeypatch):
    monkeypatch.setattr(training, "STREAM_ABOVE_BYTES", 0)
    x, y = np.arange(10, dtype=np.float32).reshape(10, 1), np.arange(10)
    feeder = training.batches(x, y, 4, shuffle=True, seed=0)["x"]
    assert len(feeder) == 3

    def epoch_rows():
        rows = [row for i in range(len(feeder)) for row in feeder[i][1].tolist()]
        feeder.on_epoch_end()
        return rows

    first, second = epoch_rows(), epoch_rows()
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second  # reshuffled between epochs
    again = training.batches(x, y, 4, shuffle=True, seed=0)["x"]
    assert [r for i in range(3) for r in again[i][1].tolist()] == first  # same seed, same order


def test_precision_needs_a_binary_task():
    with pytest.raises(SpecError, match="'precision' needs a binary task"):
        training.make_metrics(["accuracy", "precision"], num_outputs=10)
    assert len(training.make_metrics(["accuracy", "precision", "recall", "auc"], num_outputs=1)) == 4


def test_cpu_always_works_and_missing_gpu_is_a_device_error():
    import tensorflow as tf

    assert training.select_device("cpu") == "/CPU:0"
    if not tf.config.list_physical_devices("GPU"):
        assert training.select_device("auto") == "/CPU:0"
        with pytest.raises(DeviceError, match="device 'gpu:1' was requested but TensorFlow .* sees no GPU"):
            training.select_device("gpu:1")


def test_balanced_class_weights_equalize_each_class_total():
    y = np.array([0] * 90 + [1] * 10)
    weights = training.class_weights(y, 2)
    assert weights == {0: pytest.approx(100 / 180), 1: pytest.approx(5.0)}
    assert weights[0] * 90 == pytest.approx(weights[1] * 10)
