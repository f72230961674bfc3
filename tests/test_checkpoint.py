"""Resumable checkpoints (kexp.train.checkpoint): what is on disk, which one a resume reads, and what it puts back."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from kexp.train.checkpoint import KEEP, Checkpoint, capture, latest_checkpoint, list_checkpoints, restore, write_checkpoint


def hand_made(epoch: int, fit_done: bool = False, seed: int | None = None) -> Checkpoint:
    """A checkpoint as `capture` makes one (state holds the epoch), with arrays of several dtypes."""
    rng = np.random.default_rng(epoch if seed is None else seed)
    arrays = {
        "model/0": rng.normal(size=(4, 8)).astype(np.float32),
        "model/1": rng.integers(0, 2**31, size=(2,), dtype=np.int64),
        "optimizer/0": np.array(epoch * 10, dtype=np.int64),
    }
    history = {"loss": [1.0 / (i + 1) for i in range(epoch)], "val_loss": [float("nan")] + [0.5] * (epoch - 1)}
    return Checkpoint(epoch, arrays, {"epoch": epoch, "history": history, "fit_done": fit_done, "fit_seconds": 1.5 * epoch})


def names(folder: Path) -> list[str]:
    return [p.name for p in list_checkpoints(folder)]


def test_a_written_checkpoint_reads_back_whole(tmp_path):
    written = hand_made(3)
    path = write_checkpoint(tmp_path, written)

    assert path == tmp_path / "checkpoints" / "epoch-0003" and written.path == path
    assert (path / "state.npz").is_file() and (path / "state.json").is_file()
    on_disk = json.loads((path / "state.json").read_text())  # strict JSON: the NaN became null
    assert on_disk["history"]["val_loss"][0] is None and len(on_disk["npz_sha256"]) == 64

    latest = latest_checkpoint(tmp_path)
    assert latest.epoch == 3 and latest.path == path and latest.warnings == []
    assert latest.state["history"]["loss"] == written.state["history"]["loss"]
    assert latest.state["fit_seconds"] == 4.5 and latest.state["fit_done"] is False
    assert sorted(latest.arrays) == sorted(written.arrays)
    for key, array in written.arrays.items():
        assert latest.arrays[key].dtype == array.dtype
        np.testing.assert_array_equal(latest.arrays[key], array)


def test_no_checkpoint_yet_is_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    assert latest_checkpoint(tmp_path) is None


def test_only_the_newest_checkpoints_are_kept_and_a_finished_fit_sorts_newest(tmp_path):
    for epoch in range(1, 5):
        write_checkpoint(tmp_path, hand_made(epoch))
    assert KEEP == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-0003", "epoch-0004"]
    assert latest_checkpoint(tmp_path).epoch == 4

    # early stopping put the best weights back after epoch 4: the same epoch, a different state
    done = hand_made(4, fit_done=True, seed=99)
    assert write_checkpoint(tmp_path, done).name == "epoch-0004-done"
    assert names(tmp_path) == ["epoch-0004-done", "epoch-0004"]
    latest = latest_checkpoint(tmp_path)
    assert latest.state["fit_done"] is True
    np.testing.assert_array_equal(latest.arrays["model/0"], done.arrays["model/0"])


def test_checkpoints_sort_by_epoch_number_not_by_name(tmp_path):
    write_checkpoint(tmp_path, hand_made(9999))
    write_checkpoint(tmp_path, hand_made(10000))
    assert latest_checkpoint(tmp_path).epoch == 10000
    write_checkpoint(tmp_path, hand_made(10001))
    assert names(tmp_path) == ["epoch-10001", "epoch-10000"]  # 9999 is the oldest, so it went


def test_writing_the_same_state_again_changes_nothing(tmp_path):
    first = write_checkpoint(tmp_path, hand_made(2))
    saved = (first / "state.json").read_text()
    assert write_checkpoint(tmp_path, hand_made(2, seed=5)) == first
    assert (first / "state.json").read_text() == saved


def test_a_damaged_checkpoint_of_the_same_epoch_is_replaced_when_that_epoch_is_trained_again(tmp_path):
    write_checkpoint(tmp_path, hand_made(1))
    damaged = write_checkpoint(tmp_path, hand_made(2))
    (damaged / "state.npz").write_bytes(b"")
    assert latest_checkpoint(tmp_path).epoch == 1  # the resume starts from epoch 1 and trains epoch 2 again
    again = hand_made(2, seed=7)
    assert write_checkpoint(tmp_path, again) == damaged and again.path == damaged
    latest = latest_checkpoint(tmp_path)
    assert latest.epoch == 2 and not latest.warnings
    np.testing.assert_array_equal(latest.arrays["model/0"], again.arrays["model/0"])


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    write_checkpoint(tmp_path, hand_made(1))
    damaged = write_checkpoint(tmp_path, hand_made(2))
    npz = damaged / "state.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])  # as from a disk that filled up

    latest = latest_checkpoint(tmp_path)
    assert latest.epoch == 1 and latest.path.name == "epoch-0001"
    np.testing.assert_array_equal(latest.arrays["model/0"], hand_made(1).arrays["model/0"])
    assert len(latest.warnings) == 1
    assert latest.warnings[0].startswith(f"{damaged}: state.npz is missing or does not match its recorded SHA-256")
    assert "using an older checkpoint" in latest.warnings[0]


def test_a_checkpoint_with_damaged_state_json_is_skipped(tmp_path):
    write_checkpoint(tmp_path, hand_made(1))
    damaged = write_checkpoint(tmp_path, hand_made(2))
    (damaged / "state.json").write_text('{"epoch": 2, "hist')

    latest = latest_checkpoint(tmp_path)
    assert latest.epoch == 1
    assert latest.warnings[0].startswith(f"{damaged}: state.json is damaged")


def test_a_checkpoint_whose_arrays_were_replaced_is_skipped(tmp_path):
    """Whole files, but not the ones state.json was written with: the SHA-256 tells."""
    write_checkpoint(tmp_path, hand_made(1))
    newest = write_checkpoint(tmp_path, hand_made(2))
    (newest / "state.npz").write_bytes((tmp_path / "checkpoints" / "epoch-0001" / "state.npz").read_bytes())
    latest = latest_checkpoint(tmp_path)
    assert latest.epoch == 1 and str(newest) in latest.warnings[0]


def test_when_every_checkpoint_is_damaged_the_part_starts_again(tmp_path):
    for epoch in (1, 2):
        path = write_checkpoint(tmp_path, hand_made(epoch))
        (path / "state.json").unlink() if epoch == 1 else (path / "state.npz").write_bytes(b"")

    latest = latest_checkpoint(tmp_path)
    assert latest.epoch == 0 and latest.arrays == {} and latest.path is None
    assert len(latest.warnings) == 3
    assert latest.warnings[0].startswith(str(tmp_path / "checkpoints" / "epoch-0002"))
    assert latest.warnings[1] == f"{tmp_path / 'checkpoints' / 'epoch-0001'}: state.json is missing; using an older checkpoint"
    assert latest.warnings[2] == f"{tmp_path}: no usable checkpoint; this part starts again from epoch 1"


def test_a_half_written_checkpoint_is_ignored_and_cleaned_up_by_the_next_write(tmp_path):
    write_checkpoint(tmp_path, hand_made(1))
    # kill -9 in the middle of writing epoch 2: its temp folder stays behind, never renamed
    leftover = tmp_path / "checkpoints" / ".tmp-x7k2q9"
    leftover.mkdir()
    np.savez(leftover / "state.npz", **hand_made(2).arrays)
    (leftover / "state.json").write_text('{"epoch": 2')

    latest = latest_checkpoint(tmp_path)
    assert latest.epoch == 1 and latest.warnings == []

    write_checkpoint(tmp_path, hand_made(2))
    assert not leftover.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-0001", "epoch-0002"]


def test_only_a_half_written_checkpoint_is_no_checkpoint(tmp_path):
    (tmp_path / "checkpoints" / ".tmp-abcd1234").mkdir(parents=True)
    assert latest_checkpoint(tmp_path) is None


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temp_folder(tmp_path):
    write_checkpoint(tmp_path, hand_made(1))
    unwritable = hand_made(2)
    unwritable.state["early_stopping"] = {"best": object()}  # not JSON: fails after state.npz is written
    with pytest.raises(TypeError):
        write_checkpoint(tmp_path, unwritable)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch-0001"]
    assert latest_checkpoint(tmp_path).epoch == 1


# --- capture and restore with a real Keras model ----------------------------------------


def small_model(hidden: int = 8, extra_layer: bool = False):
    import keras

    layers = [keras.Input((4,)), keras.layers.Dense(hidden), keras.layers.Dropout(0.5)]
    if extra_layer:
        layers.append(keras.layers.Dense(hidden))
    model = keras.Sequential([*layers, keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.float32)


def values(variables) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def assert_restored(model, checkpoint: Checkpoint) -> None:
    model_values, optimizer_values = values(model.variables), values(model.optimizer.variables)
    assert len(model_values) == sum(k.startswith("model/") for k in checkpoint.arrays)
    assert len(optimizer_values) == sum(k.startswith("optimizer/") for k in checkpoint.arrays)
    for i, value in enumerate(model_values):
        np.testing.assert_array_equal(value, checkpoint.arrays[f"model/{i}"], err_msg=model.variables[i].path)
    for i, value in enumerate(optimizer_values):
        np.testing.assert_array_equal(value, checkpoint.arrays[f"optimizer/{i}"], err_msg=model.optimizer.variables[i].path)


@pytest.mark.long
def test_restore_puts_back_every_model_and_optimizer_variable(tmp_path, xy):
    model = small_model()
    model.fit(*xy, epochs=1, batch_size=16, verbose=0)
    checkpoint = capture(model, 1, {"history": {"loss": [0.7]}, "fit_done": False})
    assert checkpoint.epoch == 1 and checkpoint.state["epoch"] == 1
    draws = (np.random.random(3), random.random())  # what the run would draw next
    assert int(model.optimizer.iterations.numpy()) == 4

    model.fit(*xy, epochs=1, batch_size=16, verbose=0)  # the run goes on past the checkpoint
    unchanged = [v.path for i, v in enumerate(model.variables) if np.array_equal(v.numpy(), checkpoint.arrays[f"model/{i}"])]
    assert unchanged == []  # weights and the dropout seed generator's state all moved on
    assert any("seed_generator" in v.path for v in model.variables)
    assert int(model.optimizer.iterations.numpy()) == 8

    # the checkpoint goes through the disk, as a resume reads it
    write_checkpoint(tmp_path, checkpoint)
    on_disk = latest_checkpoint(tmp_path)
    assert restore(model, on_disk) is None  # no early-stopping best weights were saved
    assert_restored(model, checkpoint)
    assert int(model.optimizer.iterations.numpy()) == 4
    assert np.array_equal(np.random.random(3), draws[0]) and random.random() == draws[1]


def test_restore_into_a_fresh_model_builds_its_optimizer(xy):
    model = small_model()
    model.fit(*xy, epochs=1, batch_size=16, verbose=0)
    best = [np.array(w) for w in model.get_weights()]
    checkpoint = capture(model, 1, {"history": {"loss": [0.7]}}, best_weights=best)

    fresh = small_model()  # a resumed process: compiled, never fitted
    assert not fresh.optimizer.built
    returned = restore(fresh, checkpoint)
    assert fresh.optimizer.built
    assert_restored(fresh, checkpoint)
    assert len(returned) == len(best) and all(np.array_equal(a, b) for a, b in zip(returned, best))

    # and it trains on from there, like the original would
    fresh.fit(*xy, epochs=1, batch_size=16, verbose=0)
    assert int(fresh.optimizer.iterations.numpy()) == 8


def test_restore_into_another_architecture_names_the_mismatch(xy):
    model = small_model()
    model.fit(*xy, epochs=1, batch_size=16, verbose=0)
    checkpoint = capture(model, 1, {})

    with pytest.raises(ValueError, match=r"model variable .*kernel: checkpoint shape \(4, 8\), model shape \(4, 16\)"):
        restore(small_model(hidden=16), checkpoint)
    with pytest.raises(ValueError, match="the checkpoint has 5 model variables, the model has 7"):
        restore(small_model(extra_layer=True), checkpoint)
