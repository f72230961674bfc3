import subprocess
import sys

import numpy as np
import pytest

from kexp.datasets.base import Split
from kexp.errors import DeviceError, SpecError
from kexp.task import count_outputs, resolve_loss
from kexp.train.compile import class_weights, make_metrics, make_targets
from kexp.train.feeds import COPY_UP_TO_BYTES, as_tensor, epoch_feed, feed
from kexp.train.loop import auto_steps_per_execution, choose_loop, model_flops_per_row, steps_per_call
from kexp.train.runtime import select_device, set_seed
from kexp.train.scoring import evaluate_splits


def test_auto_loss_and_output_size_follow_the_task():
    assert resolve_loss("auto", 2) == "binary_crossentropy"
    assert resolve_loss("auto", 10) == "sparse_categorical_crossentropy"
    assert count_outputs("binary_crossentropy", 2) == 1
    assert count_outputs("categorical_crossentropy", 2) == 2


def test_targets_in_the_form_the_loss_expects():
    y = np.array([0, 2, 1])
    onehot = make_targets(y, "categorical_crossentropy", 3)
    assert onehot.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]] and onehot.dtype == np.float32
    assert make_targets(y, "sparse_categorical_crossentropy", 3).dtype == np.int32
    assert make_targets(np.array([0, 1]), "binary_crossentropy", 2).dtype == np.float32


def batches_of(dataset, count: int) -> list:
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def test_each_epoch_gives_every_row_once_in_an_order_set_by_seed_and_epoch_alone():
    x, y = np.arange(10, dtype=np.float32).reshape(10, 1), np.arange(10)

    def epochs(first: int, count: int = 2, seed: int = 0) -> list[list]:
        batches = [(a.numpy(), b.numpy()) for a, b in feed(Split(x, y), 4, True, seed, first_epoch=first).take(3 * count)]
        assert all((bx[:, 0] == by).all() for bx, by in batches)  # inputs stay with their targets
        assert [len(by) for _, by in batches] == [4, 4, 2] * count  # an epoch ends with its own short batch
        return [np.concatenate([by for _, by in batches[3 * i:3 * i + 3]]).tolist() for i in range(count)]

    first, second = epochs(0)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    assert epochs(0) == [first, second]  # seeded
    assert epochs(1, 1) == [second]  # a resumed run starts with its own epoch's order
    assert epochs(0, 1, seed=1) != [first]


def test_steps_per_call_divides_the_epoch():
    assert steps_per_call(80, 77) == 77 and steps_per_call(10, 77) == 7 and steps_per_call(4, 6) == 3
    assert steps_per_call(1, 469) == 1


def test_evaluation_feed_keeps_row_order_and_compact_inputs_become_the_same_floats():
    pixels = np.array([[0, 1], [128, 255], [7, 9]], dtype=np.uint8)
    (x, y), = batches_of(feed(Split(pixels, np.arange(3), divisor=255.0), 8), 1)
    assert x.dtype == np.float32 and y.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(x, pixels.astype(np.float32) / 255.0)  # bit-identical to the preprocessing's floats
    (words, _), = batches_of(feed(Split(np.array([[0, 1]], dtype=np.uint8), np.zeros(1)), 8), 1)
    assert words.dtype == np.float32 and words.tolist() == [[0.0, 1.0]]


def test_feeds_are_not_autotuned_so_fit_ends_with_its_last_epoch():
    # an autotuned feed made fit wait 25 s after the MNIST CNN's last epoch (the iterator's
    # deletion waits for the autotuner's next wake-up); a minute-long fit is too slow to test here
    part = Split(np.zeros((6, 2), np.float32), np.arange(6))
    for batches in (feed(part, 4), feed(part, 4, shuffle=True, seed=0, first_epoch=0),
                    epoch_feed(part, 4, shuffle=True, seed=0, first_epoch=0)):
        assert batches.options().autotune.enabled is False and batches.options().deterministic is True


def test_arrays_become_tensors_once_while_they_live():
    x = np.zeros((5, 2), np.float32)
    assert as_tensor(x) is as_tensor(x)
    assert as_tensor(x.copy()) is not as_tensor(x)


def test_auto_steps_per_execution_gives_small_models_whole_epochs_and_costly_ones_single_batches():
    import keras

    small = keras.Sequential([keras.Input((8,)), keras.layers.Dense(12), keras.layers.Dense(1)])
    assert auto_steps_per_execution(small, 10, 77) == 77
    conv = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3), keras.layers.Conv2D(64, 3), keras.layers.Flatten(),
                             keras.layers.Dense(128), keras.layers.Dense(10)])
    assert model_flops_per_row(conv) > 2e7  # 26x26x288 + 24x24x18432 + 9216x... multiply-adds, twice
    assert auto_steps_per_execution(conv, 128, 469) == 1
    middle = keras.Sequential([keras.Input((784,)), keras.layers.Dense(100), keras.layers.Dense(10)])
    assert auto_steps_per_execution(middle, 128, 469) in (67, 469)  # 469 = 7 x 67: a divisor near ~330


def test_precision_needs_a_binary_task():
    with pytest.raises(SpecError, match="'precision' needs a binary task"):
        make_metrics(["accuracy", "precision"], num_outputs=10)
    assert len(make_metrics(["accuracy", "precision", "recall", "auc"], num_outputs=1)) == 4


def test_cpu_always_works_and_missing_gpu_is_a_device_error():
    import tensorflow as tf

    assert select_device("cpu").devices == ["/CPU:0"]
    if not tf.config.list_physical_devices("GPU"):
        assert select_device("auto").devices == ["/CPU:0"]
        with pytest.raises(DeviceError, match="device 'gpu:1' was requested but TensorFlow .* sees no GPU"):
            select_device("gpu:1")


def test_balanced_class_weights_equalize_each_class_total():
    y = np.array([0] * 90 + [1] * 10)
    weights = class_weights(y, 2)
    assert weights == {0: pytest.approx(100 / 180), 1: pytest.approx(5.0)}
    assert weights[0] * 90 == pytest.approx(weights[1] * 10)


def test_epoch_feed_stacks_the_batches_feed_gives_and_keeps_the_short_one_apart():
    x, y = np.arange(22, dtype=np.uint8).reshape(11, 2), np.arange(11)
    part = Split(x, y, divisor=2.0)
    batches = [(a.numpy(), b.numpy()) for a, b in feed(part, 4, True, 3, first_epoch=1).take(6)]
    epochs = list(epoch_feed(part, 4, True, 3, first_epoch=1).take(2))
    for number, ((stacked_x, stacked_y), (last_x, last_y)) in enumerate(epochs):
        assert stacked_x.shape == (2, 4, 2) and stacked_x.dtype == np.uint8  # cast inside the compiled loop
        own = batches[3 * number:3 * number + 3]
        assert [b.tolist() for b in stacked_y.numpy()] + [last_y.numpy().tolist()] == [b.tolist() for _, b in own]
        np.testing.assert_array_equal(np.concatenate([*stacked_x.numpy(), last_x.numpy()]).astype(np.float32) / 2.0,
                                      np.concatenate([b for b, _ in own]))
    (even,) = next(iter(epoch_feed(Split(x[:8], y[:8]), 4, False, 0, first_epoch=0)))
    assert even[1].numpy().tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]  # no short batch: the element is the stack alone


def loop_for(model, steps: int = 77, input_bytes: int = 6144, on_cpu: bool = True, mirrored: bool = False, **train) -> str:
    from kexp.spec import TrainSpec

    spec = TrainSpec(**{"epochs": 150, "batch_size": 10, "metrics": ["accuracy"], **train})
    return choose_loop(model, spec, steps, mirrored, input_bytes, on_cpu)


def test_auto_loop_is_xla_only_for_what_it_was_measured_on():
    import keras

    pima = keras.Sequential([keras.Input((8,)), keras.layers.Dense(12), keras.layers.Dropout(0.1), keras.layers.Dense(1)])
    assert loop_for(pima) == "xla"
    assert loop_for(pima, on_cpu=False) == "keras"  # untested on GPUs: ask for it with loop: xla
    assert loop_for(pima, mirrored=True) == "keras"
    assert loop_for(pima, class_weight="balanced") == "keras"
    assert loop_for(pima, jit_compile=True) == "keras"
    assert loop_for(pima, steps_per_execution=7) == "keras"
    assert loop_for(pima, metrics=["auc"]) == "keras"
    assert loop_for(pima, input_bytes=COPY_UP_TO_BYTES + 1) == "keras"  # IMDB's 250 MB of presence bits
    assert loop_for(pima, steps=1) == "keras"
    assert loop_for(pima, loop="keras") == "keras"
    conv = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(10)])
    assert loop_for(conv) == "keras" and loop_for(conv, loop="xla") == "xla"
    wide = keras.Sequential([keras.Input((4096,)), keras.layers.Dense(4096), keras.layers.Dense(10)])
    assert loop_for(wide, steps=469) == "keras"  # an epoch of that much arithmetic would be one long call


def test_an_explicit_xla_loop_that_cannot_work_names_the_setting_in_the_way():
    import keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    with pytest.raises(SpecError, match=r"train.loop: xla does not work with train.class_weight"):
        loop_for(model, loop="xla", class_weight="balanced")
    with pytest.raises(SpecError, match=r"train.loop: xla does not work with device: all"):
        loop_for(model, loop="xla", mirrored=True)


@pytest.mark.long
def test_keras_loads_without_the_extras_kexp_does_not_use_which_stay_importable():
    code = ("import sys; from kexp.train.runtime import start_tensorflow; start_tensorflow(); import keras;"
            " hidden = [m for m in ('sklearn', 'pandas', 'matplotlib.pyplot', 'IPython') if m in sys.modules];"
            " import sklearn.model_selection; print(hidden, 'sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "[] True"


@pytest.mark.parametrize("loss, metrics, units", [
    ("binary_crossentropy", ["accuracy", "precision", "recall", "auc"], 1),
    ("sparse_categorical_crossentropy", ["accuracy"], 3),
    ("categorical_crossentropy", ["accuracy"], 3),
    ("mse", ["mae", "rmse", "r2"], 1),
])
def test_scores_from_one_prediction_pass_are_what_model_evaluate_reports(loss, metrics, units):
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = make_targets(rng.integers(0, max(units, 2), 300) if loss != "mse" else rng.normal(size=300), loss, units)
    set_seed(0)
    penalty = keras.regularizers.L2(0.1)  # the weight penalty is part of the loss both ways
    activation = "sigmoid" if units == 1 and loss != "mse" else "softmax" if units > 1 else None
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, kernel_regularizer=penalty), keras.layers.Dense(units, activation=activation)])
    model.compile("adam", loss=loss, metrics=make_metrics(metrics, units))
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    split = Split(x, y)
    evaluated = model.evaluate(feed(split, 256), verbose=0, return_dict=True)
    scored, outputs = evaluate_splits(model, {"test": split, "validation": None}, 32, keep="test")
    assert scored["validation"] is None and outputs.shape == (300, units)
    assert list(scored["test"]) == list(evaluated) and scored["test"]["loss"] > 0.05  # in evaluate's order too: displays show it
    for name, value in evaluated.items():
        assert scored["test"][name] == pytest.approx(float(value), rel=1e-5, abs=1e-6), name
    np.testing.assert_allclose(outputs, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_a_loss_that_needs_the_forward_pass_is_scored_by_model_evaluate():
    import keras

    x = np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid", activity_regularizer=keras.regularizers.L1(5.0))])
    model.compile("adam", loss="binary_crossentropy", metrics=["accuracy"])
    evaluated = model.evaluate(x, y, verbose=0, return_dict=True)
    scored, _ = evaluate_splits(model, {"train": Split(x, y)}, 16)
    assert scored["train"]["loss"] == pytest.approx(float(evaluated["loss"]), rel=1e-5)
