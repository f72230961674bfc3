"""Devices, threads and precision (kexp.train.runtime placement), in real processes.

No GPU here: `device: all` runs MirroredStrategy over two logical CPU devices, configured
before TensorFlow starts, so the multi-device path really runs; GPU choices are checked by
their placement logic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import smoke_spec, write_spec

from kexp.errors import DeviceError
from kexp.train.loop import QUICK_COMPILE_FLAGS
from kexp.train.runtime import select_device

pytestmark = pytest.mark.slow

# Runs the kexp CLI in a process whose CPU shows up as two logical devices (TensorFlow allows
# this only before its runtime starts, hence a fresh process).
TWO_CPUS = (
    "import sys, tensorflow as tf\n"
    "cpu = tf.config.list_physical_devices('CPU')[0]\n"
    "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
    "from kexp.cli import main\n"
    "sys.argv = ['kexp', *sys.argv[1:]]\n"
    "main()\n"
)
DATA_DIR = Path(os.environ.get("KEXP_DATA_DIR", "data"))


def kexp(*args: str, two_cpus: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", TWO_CPUS] if two_cpus else [sys.executable, "-m", "kexp"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout)


def run_files(runs: Path) -> tuple[dict, dict]:
    [run] = [p for p in runs.iterdir() if p.is_dir()]
    return json.loads((run / "env.json").read_text()), json.loads((run / "metrics.json").read_text())


@pytest.mark.long
def test_device_all_mirrors_the_model_on_two_logical_cpus_and_records_them(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", smoke_spec(device="all", train={"epochs": 2, "batch_size": 16}))
    done = kexp("train", str(spec), "--runs-dir", str(tmp_path / "runs"), two_cpus=True)
    assert done.returncode == 0, done.stderr
    env, metrics = run_files(tmp_path / "runs")
    assert env["devices"] == ["/device:CPU:0", "/device:CPU:1"] and env["device"].startswith("all (2:")
    assert env["steps_per_execution"] == 1  # auto, mirrored
    assert metrics["epochs_completed"] == 2 and 0.0 <= metrics["test"]["accuracy"] <= 1.0


@pytest.mark.long
def test_device_all_refuses_several_steps_per_call_before_any_run_exists(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", smoke_spec(device="all", train={"epochs": 1, "steps_per_execution": 4}))
    done = kexp("train", str(spec), "--runs-dir", str(tmp_path / "runs"), two_cpus=True)
    assert done.returncode == 2
    assert "train.steps_per_execution: 4 does not work with device: all" in done.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.long
def test_threads_precision_and_auto_steps_are_applied_and_recorded(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", smoke_spec(train={"epochs": 1, "threads": 1, "precision": "mixed_bfloat16"}))
    done = kexp("train", str(spec), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    env, metrics = run_files(tmp_path / "runs")
    assert env["threads"] == {"intra_op": 1, "inter_op": 1}
    assert env["precision"] == "mixed_bfloat16" and env["jit_compile"] is False
    assert env["steps_per_execution"] > 1  # a tiny MLP: many batches per call
    assert metrics["timing"]["startup_seconds"] > 0


@pytest.mark.long
@pytest.mark.skipif(not (DATA_DIR / "mnist").exists(), reason=f"MNIST not in {DATA_DIR}")
def test_mnist_mlp_on_two_mirrored_devices_reaches_the_single_device_accuracy(tmp_path):
    accuracies = {}
    for device, two_cpus in (("cpu", False), ("all", True)):
        runs = tmp_path / device
        done = kexp("train", "configs/mnist_mlp.yaml", "--runs-dir", str(runs), "--set", f"device={device}", two_cpus=two_cpus)
        assert done.returncode == 0, done.stderr
        env, metrics = run_files(runs)
        accuracies[device] = metrics["test"]["accuracy"]
    assert len(env["devices"]) == 2
    assert abs(accuracies["all"] - accuracies["cpu"]) <= 0.003, accuracies


def test_gpu_choices_by_their_placement_logic(monkeypatch):
    import tensorflow as tf

    gpus = [tf.config.LogicalDevice(f"/device:GPU:{i}", "GPU") for i in range(3)]
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: gpus if kind == "GPU" else [])
    assert select_device("gpu:2").devices == ["/GPU:2"]
    assert select_device("auto").devices == ["/GPU:0"]
    assert select_device("cpu").devices == ["/CPU:0"]
    with pytest.raises(DeviceError, match="device 'gpu:3' was requested but TensorFlow .* sees 3 GPU"):
        select_device("gpu:3")
    mirrored = []
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", lambda devices: mirrored.append(devices) or "strategy")
    placement = select_device("all")
    assert mirrored == [[g.name for g in gpus]] and placement.devices == [g.name for g in gpus]  # every GPU, none of the CPUs


@pytest.mark.long
def test_steps_per_execution_that_does_not_divide_the_epoch_is_lowered_to_one_that_does(tmp_path):
    """Keras' last call of an epoch would run on into the next: 6 batches in calls of 4 would train 8."""
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(train={"epochs": 2, "batch_size": 16, "steps_per_execution": 4}))
    done = kexp("train", str(spec), "--runs-dir", str(tmp_path / "runs"))  # 96 rows / 16 = 6 batches an epoch
    assert done.returncode == 0, done.stderr
    env, _ = run_files(tmp_path / "runs")
    assert env["steps_per_execution"] == 3


@pytest.mark.long
def test_xla_loop_trains_as_keras_loop_does_and_is_recorded(tmp_path):
    histories, envs = {}, {}
    # 203 training rows: a short last batch of 3 in every epoch
    data = {"name": "synthetic", "samples": 203, "features": 4, "classes": 3, "test_fraction": 0.0}
    train = {"epochs": 3, "batch_size": 10, "validation_split": 0.0, "optimizer": {"name": "adam", "learning_rate": 0.05}}
    for loop in ("xla", "keras"):
        runs = tmp_path / loop
        spec = write_spec(tmp_path / f"{loop}.yaml", smoke_spec(data=data, model={"name": "mlp", "hidden_units": [8]},
                                                                 train={**train, "loop": loop}))
        done = kexp("train", str(spec), "--runs-dir", str(runs))
        assert done.returncode == 0, done.stderr
        envs[loop], _ = run_files(runs)
        [run] = [p for p in runs.iterdir() if p.is_dir()]
        histories[loop] = json.loads((run / "history.json").read_text())
    assert envs["xla"]["loop"] == "xla" and envs["keras"]["loop"] == "keras"
    assert envs["xla"]["steps_per_execution"] == 21  # a call is the whole epoch: 20 batches of 10 and one of 3
    assert histories["xla"]["epochs"] == histories["keras"]["epochs"] == 3
    for metric in ("loss", "accuracy"):
        np.testing.assert_allclose(histories["xla"][metric], histories["keras"][metric], rtol=1e-4, err_msg=metric)
    # a tiny fit compiles quickly unless the user set XLA_FLAGS
    assert envs["xla"]["xla_flags"] == QUICK_COMPILE_FLAGS and envs["keras"]["xla_flags"] is None
    assert "XLA_FLAGS" not in envs["xla"]["environment_variables"]

