"""backend: jax end to end, and one run over two local CPU processes (kexp.train.distributed, kexp.train.launch).

Real JAX, real processes, real signals: each test starts `kexp` as a user would. Long (tens of seconds each)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import smoke_spec, write_spec

pytest.importorskip("jax")
pytestmark = pytest.mark.long


def jax_spec(samples: int = 600, epochs: int = 3, batch_size: int = 32) -> dict:
    spec = smoke_spec(backend="jax")
    spec["data"].update(samples=samples)
    spec["train"].update(epochs=epochs, batch_size=batch_size, validation_split=0.0, optimizer={"name": "adam", "learning_rate": 0.01})
    return spec


def kexp(*args: str, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kexp", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def only_run(runs: Path) -> Path:
    found = list(runs.iterdir())
    assert len(found) == 1, found
    return found[0]


def test_a_jax_run_records_its_backend_and_evaluates_under_tensorflow(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", jax_spec())
    done = kexp("train", str(spec), "--runs-dir", str(tmp_path / "runs"), "--log-format", "plain")
    assert done.returncode == 0, done.stderr
    run = only_run(tmp_path / "runs")
    env = json.loads((run / "env.json").read_text())
    assert env["backend"] == "jax" and env["jax"] and env["jit_compile"] is True and env["device"] == "cpu:0"
    trained = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    assert trained > 0.8
    evaluated = kexp("evaluate", str(run), "--json")  # this process's Keras runs TensorFlow
    assert evaluated.returncode == 0, evaluated.stderr
    assert abs(json.loads(evaluated.stdout)["results"]["test"]["metrics"]["accuracy"] - trained) < 1e-6


def test_two_processes_train_one_run_with_identical_weights_on_both(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", jax_spec())
    digests = tmp_path / "digests"
    digests.mkdir()
    done = kexp("train", str(spec), "--processes", "2", "--runs-dir", str(tmp_path / "runs"), "--log-format", "plain",
                env={"KEXP_PROCESS_DIGESTS": str(digests)})
    assert done.returncode == 0, done.stderr
    run = only_run(tmp_path / "runs")  # one run directory: process 1 wrote none
    env = json.loads((run / "env.json").read_text())
    assert env["processes"] == 2 and [p["process"] for p in env["process_hosts"]] == [0, 1]
    assert all(p["devices"] for p in env["process_hosts"])
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] > 0.8
    first, second = (digests / "process-0.sha256").read_text(), (digests / "process-1.sha256").read_text()
    assert first == second and len(first) == 64


def wait_for_epoch(run_dirs: Path, proc: subprocess.Popen, epoch: int, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for status in run_dirs.glob("*/status.json"):
            with_epoch = json.loads(status.read_text() or "{}").get("epoch") or 0
            if with_epoch >= epoch:
                return status.parent
        time.sleep(0.2)
    raise AssertionError(f"no epoch {epoch} in {timeout} s")


def process_pid(tmp_path: Path, index: int) -> int:
    """Process `index` of this test's run (its command names the test's runs directory)."""
    found = subprocess.run(["pgrep", "-f", "--", f"{tmp_path}/runs .*--process-id {index} --num-processes 2"], capture_output=True,
                           text=True).stdout.split()
    assert found, f"no process {index}"
    return int(found[0])


def start_two(tmp_path: Path, spec: dict) -> subprocess.Popen:
    path = write_spec(tmp_path / "s.yaml", spec)
    return subprocess.Popen([sys.executable, "-m", "kexp", "train", str(path), "--processes", "2", "--runs-dir", str(tmp_path / "runs"),
                             "--log-format", "plain"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_to_one_process_stops_both_with_a_checkpoint_and_resume_finishes_over_two(tmp_path):
    proc = start_two(tmp_path, jax_spec(samples=6000, epochs=4))
    run = wait_for_epoch(tmp_path / "runs", proc, 1)
    os.kill(process_pid(tmp_path, 1), signal.SIGTERM)  # not process 0: the one that owns the run hears of it from the other
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted" and status["signal"] == "SIGTERM" and "checkpoint saved after epoch" in status["error"]
    assert list((run / "checkpoints").iterdir())
    assert "Traceback" not in err
    resumed = kexp("resume", str(run), "--log-format", "plain")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert len(json.loads((run / "history.json").read_text())["loss"]) == 4  # every epoch once
    assert json.loads((run / "env.json").read_text())["processes"] == 2
    assert not (run / "checkpoints").exists()


def test_a_process_that_dies_stops_the_other_soon_and_the_run_says_which(tmp_path):
    proc = start_two(tmp_path, jax_spec(samples=6000, epochs=20))
    run = wait_for_epoch(tmp_path / "runs", proc, 1)
    os.kill(process_pid(tmp_path, 1), signal.SIGKILL)
    killed = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert time.monotonic() - killed < 45  # JAX's heartbeat timeout (10 s) or the launcher's 30 s, never a hang
    assert proc.returncode == 1
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and status["error"].startswith("process 1 was killed by SIGKILL")
    assert "process 1 was killed by SIGKILL; the run was recorded failed" in err and "Traceback" not in err and "    @ " not in err
    assert np.isfinite(status["epoch"])
