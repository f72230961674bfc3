"""Batch-job behaviour with real processes: signals and SIGKILL at chosen moments, then `kexp resume`.

KEXP_TEST_PAUSE (kexp.run.lifecycle.pause_for_tests) holds a run for 2 s at a named point, so a
signal lands exactly there: mid checkpoint write, or while the run's last files are written.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import smoke_spec, write_spec

from kexp.cli import app
from kexp.train.checkpoint import latest_checkpoint, read_checkpoint

pytestmark = pytest.mark.slow

EPOCHS = 7
SLOW_SPEC = smoke_spec(data={"name": "synthetic", "samples": 2000, "features": 4, "classes": 3},
                       train={"epochs": EPOCHS, "batch_size": 8, "validation_split": 0.2, "checkpoint_every": 1})


def start(tmp_path: Path, spec: dict, *args: str, pause: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "KEXP_TEST_PAUSE": pause or ""}
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    return subprocess.Popen([sys.executable, "-m", "kexp", "train", str(spec_path), "--runs-dir", str(tmp_path / "runs"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def kexp(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kexp", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, "KEXP_TEST_PAUSE": ""})


def wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = 90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"kexp exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def the_run(tmp_path: Path) -> Path | None:
    runs = sorted((tmp_path / "runs").glob("2*")) if (tmp_path / "runs").is_dir() else []
    return runs[0] if runs else None


def epochs_done(run: Path | None) -> int:
    try:
        return json.loads((run / "history.json").read_text())["epochs"]
    except (TypeError, OSError, ValueError, KeyError):
        return 0


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def history(run: Path) -> dict:
    return json.loads((run / "history.json").read_text())


@pytest.mark.long
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_mid_fit_saves_a_checkpoint_and_resume_continues_every_epoch_once(tmp_path, sig):
    proc = start(tmp_path, SLOW_SPEC)
    run = wait_for(lambda: (r := the_run(tmp_path)) and epochs_done(r) >= 2 and r, "two epochs", proc)
    proc.send_signal(sig)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig and time.monotonic() - sent < 20
    assert f"interrupted by {sig.name}; checkpoint saved after epoch" in err and f"kexp resume {run}" in err
    stopped = status(run)
    done = stopped["checkpoint"]["epoch"]
    assert stopped["state"] == "interrupted" and stopped["signal"] == sig.name and stopped["exit_code"] == 128 + sig
    assert stopped["epoch"] == done and history(run)["epochs"] in (done, done + 1)  # the epoch under way is not kept
    before = history(run)
    if sig != signal.SIGTERM:
        return  # resuming is the same whatever stopped the run

    resumed = kexp("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    after = history(run)
    assert after["epochs"] == EPOCHS and len(after["loss"]) == EPOCHS and len(after["epoch_seconds"]) == EPOCHS
    assert after["loss"][:done] == before["loss"][:done]  # epochs before the checkpoint are kept, not retrained
    final = status(run)
    assert final["state"] == "completed" and final["attempt"] == 2 and final["exit_code"] == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == EPOCHS and metrics["attempts"] == 2
    assert not (run / "checkpoints").exists()  # a completed run keeps its model, not its checkpoints
    env = json.loads((run / "env.json").read_text())
    assert [a["attempt"] for a in env["attempts"]] == [2] and env["ended"] is not None


@pytest.mark.long
def test_sigkill_during_a_checkpoint_write_leaves_a_run_that_resumes_from_the_previous_one(tmp_path):
    marker = tmp_path / "paused"
    proc = start(tmp_path, SLOW_SPEC, pause=f"checkpoint@3:{marker}")
    wait_for(marker.exists, "the third checkpoint write", proc)
    proc.kill()
    proc.communicate(timeout=30)
    run = the_run(tmp_path)
    assert status(run)["state"] == "running"  # what the dead process left
    listed = kexp("runs", str(tmp_path / "runs"), "--format", "json")
    [row] = json.loads(listed.stdout)
    assert row["status"] == "crashed" and f"kexp resume {run}" in row["note"]
    assert list((run / "checkpoints").glob(".tmp-*"))  # the half-written one
    assert latest_checkpoint(run).epoch == 2  # the previous one, whole

    resumed = kexp("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert history(run)["epochs"] == EPOCHS and status(run)["state"] == "completed"


@pytest.mark.long
def test_sigterm_during_a_checkpoint_write_completes_the_write_then_stops(tmp_path):
    marker = tmp_path / "paused"
    proc = start(tmp_path, SLOW_SPEC, pause=f"checkpoint@2:{marker}")
    wait_for(marker.exists, "the second checkpoint write", proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    run = the_run(tmp_path)
    assert proc.returncode == 143 and status(run)["state"] == "interrupted"
    assert read_checkpoint(run / "checkpoints" / "epoch-0002").epoch == 2  # whole, SHA-256 checked
    assert not list((run / "checkpoints").glob(".tmp-*"))


@pytest.mark.long
def test_sigterm_while_the_run_finishes_leaves_it_completed(tmp_path):
    marker = tmp_path / "paused"
    proc = start(tmp_path, smoke_spec(), pause=f"finish:{marker}")
    wait_for(marker.exists, "the finishing step", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    run = the_run(tmp_path)
    assert proc.returncode == 0, err
    assert "SIGTERM arrived while the run was finishing; the run completed" in out
    assert status(run)["state"] == "completed" and (run / "model.keras").is_file() and (run / "metrics.json").is_file()


@pytest.mark.long
def test_three_signals_during_a_checkpoint_write_quit_at_once_and_keep_the_previous_checkpoint(tmp_path):
    marker = tmp_path / "paused"
    proc = start(tmp_path, SLOW_SPEC, pause=f"checkpoint@2:{marker}")
    wait_for(marker.exists, "the second checkpoint write", proc)
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
    _, err = proc.communicate(timeout=30)
    run = the_run(tmp_path)
    assert proc.returncode == 130 and "quitting at once" in err
    stopped = status(run)
    assert stopped["state"] == "interrupted" and "quit at once" in stopped["error"]
    assert latest_checkpoint(run).epoch == 1


def test_resume_refuses_an_edited_config_a_held_run_and_leaves_a_completed_one_alone(runner, tmp_path):
    runs = tmp_path / "runs"
    spec_path = write_spec(tmp_path / "s.yaml", smoke_spec())
    assert runner.invoke(app, ["train", str(spec_path), "--runs-dir", str(runs)]).exit_code == 0
    run = the_run(tmp_path)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    again = runner.invoke(app, ["resume", str(run)])
    assert again.exit_code == 0 and "the run had already completed: nothing was changed" in again.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files

    (run / "status.json").write_text(json.dumps({**status(run), "state": "interrupted"}))
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("epochs: 2", "epochs: 5"))
    edited = runner.invoke(app, ["resume", str(run)])
    assert edited.exit_code == 2 and "config.yaml was edited since the run started (train.epochs: 2 -> 5)" in edited.output
    (run / "config.yaml").write_text(config)

    with open(run / ".lock") as held:  # another kexp process holding the run
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = runner.invoke(app, ["train", "--resume", str(run)])
    assert busy.exit_code == 1 and "in use by another kexp process" in busy.output


@pytest.mark.long
def test_deterministic_runs_repeat_history_and_weights_exactly(runner, tmp_path):
    import keras
    import numpy as np

    spec = smoke_spec(data={"name": "synthetic", "samples": 600, "features": 6, "classes": 3},
                      model={"name": "mlp", "hidden_units": [32, 16], "dropout": 0.3},
                      train={"epochs": 3, "batch_size": 16, "validation_split": 0.2, "deterministic": True})
    spec_path = write_spec(tmp_path / "d.yaml", spec)
    runs = []
    for name in ("a", "b"):
        result = runner.invoke(app, ["train", str(spec_path), "--runs-dir", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        [run] = (tmp_path / name).iterdir()
        runs.append(run)
    first, second = (history(r) for r in runs)
    assert {k: v for k, v in first.items() if k != "epoch_seconds"} == {k: v for k, v in second.items() if k != "epoch_seconds"}
    weights = [keras.saving.load_model(r / "model.keras").get_weights() for r in runs]
    assert all(np.array_equal(a, b) for a, b in zip(*weights))
    assert json.loads((runs[0] / "env.json").read_text())["deterministic"] is True


@pytest.mark.long
def test_a_stopped_and_resumed_run_trains_exactly_as_an_uninterrupted_one(runner, tmp_path):
    """Resume restores weights, optimizer and RNG state, and the feed skips to the epoch's own
    shuffle: with deterministic ops the history is identical, epoch for epoch."""
    spec = {**SLOW_SPEC, "model": {"name": "mlp", "hidden_units": [16], "dropout": 0.2},
            "train": {**SLOW_SPEC["train"], "deterministic": True, "steps_per_execution": 7}}
    whole = runner.invoke(app, ["train", str(write_spec(tmp_path / "w.yaml", spec)), "--runs-dir", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    [reference] = (tmp_path / "whole").iterdir()
    marker = tmp_path / "paused"
    proc = start(tmp_path, spec, pause=f"checkpoint@3:{marker}")
    wait_for(marker.exists, "the third checkpoint", proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    run = the_run(tmp_path)
    resumed = kexp("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert status(run)["attempt"] == 2
    expected, got = history(reference), history(run)
    assert {k: v for k, v in got.items() if k != "epoch_seconds"} == {k: v for k, v in expected.items() if k != "epoch_seconds"}


@pytest.mark.long
def test_a_kfold_run_stopped_in_its_second_fold_resumes_there_and_aggregates_all_folds(tmp_path):
    spec = {**SLOW_SPEC, "evaluation": {"protocol": "kfold", "k": 3}}
    spec["data"] = {**SLOW_SPEC["data"], "test_fraction": 0.0}
    spec["train"] = {**SLOW_SPEC["train"], "epochs": 3, "validation_split": 0.0}
    proc = start(tmp_path, spec)
    run = wait_for(lambda: (r := the_run(tmp_path)) and epochs_done(r / "folds" / "1") >= 1 and r, "fold 1's first epoch", proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    first_fold = (run / "folds" / "0" / "metrics.json").read_bytes()
    assert not (run / "folds" / "1" / "metrics.json").exists() and (run / "folds" / "1" / "checkpoints").is_dir()

    resumed = kexp("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert "fold-0 (1/3): finished in an earlier attempt" in resumed.stdout
    assert (run / "folds" / "0" / "metrics.json").read_bytes() == first_fold  # not retrained
    metrics = json.loads((run / "metrics.json").read_text())
    assert [m["name"] for m in metrics["members"]] == ["fold-0", "fold-1", "fold-2"]
    assert metrics["aggregate"]["test"]["accuracy"]["n"] == 3
    assert all(history(run / "folds" / str(i))["epochs"] == 3 for i in range(3))
