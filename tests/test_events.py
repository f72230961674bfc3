"""Events (kexp.events) and how the CLI shows them (kexp.cli.display): jsonl, plain, and events.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import smoke_spec, write_spec

from kexp.cli.display import line_for
from kexp.events import EVENTS_FILE, RecordingEmit, read_events

pytestmark = pytest.mark.slow


def kexp(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    return subprocess.run([sys.executable, "-m", "kexp", *args], capture_output=True, text=True, timeout=180, env=env)


def only_run(runs: Path) -> Path:
    [run] = [p for p in runs.iterdir() if p.is_dir()]
    return run


@pytest.mark.long
def test_jsonl_prints_one_event_per_line_that_match_history_and_events_file(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", smoke_spec(train={"epochs": 3, "batch_size": 16, "validation_split": 0.2}))
    done = kexp("train", str(spec), "--runs-dir", str(tmp_path / "runs"), "--log-format", "jsonl")
    assert done.returncode == 0, done.stderr
    shown = [json.loads(line) for line in done.stdout.splitlines()]  # nothing but JSON on stdout
    kinds = [e["event"] for e in shown]
    assert kinds[:2] == ["data", "run_started"] and kinds[-2:] == ["evaluation", "run_finished"]
    assert kinds.count("epoch_end") == 3
    run = only_run(tmp_path / "runs")
    assert shown[-1]["run_dir"] == str(run) and shown[-1]["metrics"]["test"] == json.loads((run / "metrics.json").read_text())["test"]
    history = json.loads((run / "history.json").read_text())
    for e in (e for e in shown if e["event"] == "epoch_end"):
        assert e["metrics"]["loss"] == pytest.approx(history["loss"][e["epoch"] - 1])
        assert e["metrics"]["val_accuracy"] == pytest.approx(history["val_accuracy"][e["epoch"] - 1])
    assert read_events(run) == shown  # the run keeps exactly what was shown


@pytest.mark.long
def test_plain_shows_a_line_per_epoch_and_no_redrawn_bar(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", smoke_spec(train={"epochs": 2, "batch_size": 16}))
    done = kexp("train", str(spec), "--runs-dir", str(tmp_path / "runs"), "--log-format", "plain")
    assert done.returncode == 0, done.stderr
    epoch_lines = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines[:2]] == ["1/2", "2/2"]
    assert "\r" not in done.stdout and "\x1b[" not in done.stdout
    assert not any(ch in done.stdout for ch in "┏━┃│└")  # the final metrics as lines, not a box-drawn table
    [run] = (tmp_path / "runs").iterdir()
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert f"final test: accuracy {test['accuracy']:.4f}" in done.stdout
    assert "Warning" not in done.stderr  # Python warnings stay off the screen without --verbose


@pytest.mark.long
def test_a_diverged_run_reports_run_failed_with_its_exit_code(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", smoke_spec(train={"epochs": 3, "optimizer": {"name": "sgd", "learning_rate": 1e30}}))
    done = kexp("train", str(spec), "--runs-dir", str(tmp_path / "runs"), "--log-format", "jsonl")
    assert done.returncode == 3
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["event"] == "run_failed" and last["exit_code"] == 3 and last["state"] == "diverged" and "loss became" in last["error"]
    assert read_events(only_run(tmp_path / "runs"))[-1] == last


def test_events_before_the_run_directory_are_recorded_once_it_exists_and_a_cut_line_is_skipped(tmp_path):
    shown = []
    emit = RecordingEmit(lambda kind, **fields: shown.append(kind))
    emit("data", name="x", description="d")
    emit("batch", step=1, steps=2, metrics={})
    emit.record_to(tmp_path)
    emit("epoch_end", epoch=1, epochs=1, seconds=0.1, metrics={"loss": 1.0}, member=None)
    assert shown == ["data", "batch", "epoch_end"]
    with open(tmp_path / EVENTS_FILE, "a") as f:
        f.write('{"event": "epo')  # a kill mid-line
    assert [e["event"] for e in read_events(tmp_path)] == ["data", "epoch_end"]  # batches are for live displays only


def test_plain_lines_say_what_happened():
    assert line_for("epoch_end", {"epoch": 2, "epochs": 5, "seconds": 1.25, "metrics": {"loss": 0.5}, "member": "fold-1"}) == \
        "fold-1: epoch 2/5  1.2s  loss 0.5000"
    assert line_for("batch", {"step": 1}) is None
