"""kexp.cli.display: a run outlives the reader of its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import smoke_spec, write_spec


@pytest.mark.long
@pytest.mark.parametrize("log_format", ["plain", "jsonl"])
def test_a_closed_pipe_never_costs_the_run(log_format, tmp_path):
    """`kexp train … 2>&1 | head -1`: the reader leaves after one line; the run completes and writes its files."""
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(train={"epochs": 30, "batch_size": 16, "validation_split": 0.2}))
    process = subprocess.Popen([sys.executable, "-m", "kexp", "train", str(spec), "--runs-dir", str(tmp_path / "runs"), "--log-format", log_format],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "KEXP_CACHE_DIR": "none"})
    first = process.stdout.readline()
    process.stdout.close()  # as `head -1` does
    assert process.wait(timeout=300) == 0
    assert first
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert (run / "model.keras").is_file() and json.loads((run / "history.json").read_text())["epochs"] == 30


def test_plain_logs_are_thinned_and_log_every_chooses_the_epochs(tmp_path):
    from typer.testing import CliRunner

    from kexp.cli import app

    document = smoke_spec(train={"epochs": 30, "batch_size": 32}, evaluation={"protocol": "kfold", "k": 2})
    document["data"]["test_fraction"] = 0  # k-fold tests on every row
    spec = write_spec(tmp_path / "s.yaml", document)
    result = CliRunner().invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs"), "--log-format", "plain"])
    assert result.exit_code == 0, result.output
    shown = [line for line in result.output.splitlines() if "epoch " in line]
    # about 20 lines per fold: every 2nd epoch of 30, with the first (and the last)
    assert [line.split("epoch ")[1].split()[0] for line in shown] == [f"{e}/30" for e in [1, *range(2, 31, 2)]] * 2
    finals = [line.split(": final ")[0] for line in result.output.splitlines() if ": final " in line and "test accuracy" in line]
    assert finals == ["fold-0", "fold-1"]  # each member ends with a line of its final metrics
    result = CliRunner().invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs"), "--log-format", "plain", "--log-every", "10"])
    shown = [line.split("epoch ")[1].split()[0] for line in result.output.splitlines() if "epoch " in line]
    assert shown == ["1/30", "10/30", "20/30", "30/30"] * 2
    run = sorted((tmp_path / "runs").iterdir())[-1]
    assert (run / "events.jsonl").read_text().count('"event": "epoch_end"') == 60  # every epoch is recorded whatever is shown


@pytest.mark.long
def test_tensorflows_retracing_warnings_go_to_log_txt_not_the_screen(tmp_path):
    """Every k-fold member is a new model, so TensorFlow warns of retracing from the fifth on."""
    document = smoke_spec(train={"epochs": 2, "batch_size": 32}, evaluation={"protocol": "kfold", "k": 6})
    document["data"]["test_fraction"] = 0
    spec = write_spec(tmp_path / "s.yaml", document)
    done = subprocess.run([sys.executable, "-m", "kexp", "train", str(spec), "--runs-dir", str(tmp_path / "runs"), "--log-format", "plain"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "KEXP_CACHE_DIR": "none"})
    assert done.returncode == 0, done.stderr
    shown = done.stderr + done.stdout
    assert "WARNING:tensorflow" not in shown and "triggered tf.function retracing" not in shown, shown
    (run,) = (tmp_path / "runs").iterdir()
    assert "warning: tensorflow: " in (run / "log.txt").read_text() and "triggered tf.function retracing" in (run / "log.txt").read_text()


def test_progress_bars_redraw_on_a_terminal_only_and_pass_warnings_on():
    import io

    from rich.console import Console

    from kexp.cli.display import progress_bars

    def shown(terminal: bool, off_terminal: bool = False) -> tuple[str, list[str]]:
        out, warnings = io.StringIO(), []
        with progress_bars(Console(file=out, force_terminal=terminal, width=60), warnings.append, off_terminal=off_terminal) as emit:
            emit("progress", task="predicting", done=0, total=None)
            emit("warning", message="resized")
            emit("progress", task="predicting", done=1024, total=None)
            emit("progress_end", task="predicting")
        return out.getvalue(), warnings

    assert shown(terminal=False) == ("", ["resized"])  # a log file gets no bar
    assert shown(terminal=False, off_terminal=True) == ("\n", ["resized"])  # rich's closing line, as the tokenizing bar always left
    drawn, warnings = shown(terminal=True)
    assert "predicting" in drawn and warnings == ["resized"]
