"""Faults and bad input end in one line, a right exit code, nothing lost and nothing left behind (issue 23)."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kexp.cli import app, printable
from tests.conftest import smoke_spec, write_spec

ROOT = Path(__file__).resolve().parent.parent


def kexp(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kexp", *args], capture_output=True, text=True, cwd=ROOT, timeout=300, **kwargs)


# --- the spec: read once, at most 64 KiB, whatever the file is -------------------------------


def test_a_device_as_spec_is_refused_after_64_kib_not_read_forever():
    started = time.monotonic()
    result = kexp("validate", "/dev/zero")
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 5
    assert "/dev/zero: more than 64 KiB is too large for a spec (limit 64 KiB)" in result.stderr


def test_a_spec_from_a_pipe_is_read_once(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec())
    result = subprocess.run(["bash", "-c", f"{sys.executable} -m kexp validate <(cat {spec})"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "valid (synthetic data, mlp model, 2 epochs)" in result.stdout


# --- strict JSON lines ---------------------------------------------------------------------------


def test_event_lines_write_null_and_name_non_finite_fields():
    from kexp.events import event, json_line

    line = json_line(event("epoch_end", epoch=1, metrics={"loss": float("inf"), "accuracy": 0.5, "val_loss": float("nan")}))
    parsed = json.loads(line, parse_constant=lambda name: pytest.fail(f"bare {name} in {line}"))
    assert parsed["metrics"] == {"loss": None, "accuracy": 0.5, "val_loss": None}
    assert parsed["non_finite"] == {"metrics.loss": "inf", "metrics.val_loss": "nan"}


# --- permissions, terminal escapes, help texts ---------------------------------------------------


def test_temporary_folders_renamed_into_place_follow_the_umask(tmp_path):
    from kexp.run.io import make_temp_dir

    old = os.umask(0o022)
    try:
        folder = make_temp_dir(tmp_path, ".tmp-")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_control_characters_are_shown_escaped():
    assert printable("a\x1b[2Jb\x1b]0;title\x07c\x9b") == "a\\x1b[2Jb\\x1b]0;title\\x07c\\x9b"
    assert printable("plain text, ünïcode") == "plain text, ünïcode"


@pytest.mark.parametrize("command", ["train", "resume", "sweep", "validate", "evaluate", "runs", "compare", "predict", "export", "init", "doctor"])
def test_help_texts_show_brackets_as_written(command):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert "[/" not in result.output  # no markup tag leaked either
    if command == "sweep":
        assert "pip install 'kexp[ray]'" in result.output


# --- data ----------------------------------------------------------------------------------------


def test_a_question_mark_label_is_missing_not_a_class(tmp_path):
    from kexp.datasets.csv import check_labels_present
    from kexp.errors import DataError

    with pytest.raises(DataError, match=r"x.csv:3: missing label \('\?'\) in column 4.*list it in class_names"):
        check_labels_present(["a", "?"], [2, 3], None, Path("x.csv"), "4")
    check_labels_present(["a", "?"], [2, 3], ["a", "?"], Path("x.csv"), "4")  # listed: a class after all


def test_a_truncated_gzip_is_unreadable_not_just_a_different_hash(tmp_path):
    from kexp.fetch import check_file

    whole = gzip.compress(np.random.default_rng(0).integers(0, 255, 200_000, dtype=np.uint8).tobytes())
    (tmp_path / "x.gz").write_bytes(whole[: len(whole) // 2])
    found = check_file(tmp_path / "x.gz", "0" * 64, None, needed=True)
    assert found.state == "unreadable" and "truncated" in found.problem
    (tmp_path / "y.gz").write_bytes(whole)
    assert check_file(tmp_path / "y.gz", "0" * 64, None, needed=True).state == "differs"  # reads fine: only the hash differs


def test_an_oversized_image_is_one_line(tmp_path):
    from PIL import Image

    from kexp.errors import DataError
    from kexp.preprocessing.images import decode_image

    Image.new("L", (1000, 1000)).save(tmp_path / "big.png")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Image, "MAX_IMAGE_PIXELS", 500_000)  # warned above this, refused above twice this
        with pytest.raises(DataError, match="big.png: too large to decode safely"):
            decode_image(tmp_path / "big.png", (28, 28), lambda message: None)


# --- run directories -----------------------------------------------------------------------------


def test_the_losing_resume_names_the_live_holder_not_the_dead_attempt(tmp_path):
    from kexp.errors import RunDirError
    from kexp.run.lifecycle import lock_run
    from kexp.run.records import write_status

    run = tmp_path / "20261207-000000-x-abcd"
    run.mkdir()
    write_status(run, "interrupted", pid=999999, host="elsewhere")  # the previous attempt's process
    child = subprocess.Popen([sys.executable, "-c", f"from kexp.run.lifecycle import lock_run; lock_run(__import__('pathlib').Path({str(run)!r})); "
                              "print('locked', flush=True); import time; time.sleep(30)"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError) as caught:
            lock_run(run)
    finally:
        child.kill()
        child.wait()
    message = str(caught.value)
    assert f"pid {child.pid} on " in message and "999999" not in message
    assert "the run is still recorded as interrupted by its previous attempt" in message


def test_compare_of_a_glob_skips_the_sweeps_folder(tmp_path):
    from kexp.report.compare import expand_run_paths

    run = tmp_path / "20261207-000000-x-abcd"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    (tmp_path / "sweeps").mkdir()
    skipped: list[str] = []
    assert expand_run_paths([f"{tmp_path}/*"], skipped) == [run]
    assert skipped == [f"{tmp_path / 'sweeps'}: not a run directory, skipped (a sweep folder: kexp compare '{tmp_path / 'sweeps'}/*/trial-*')"]


def test_a_run_folder_holding_only_its_lock_is_listed(tmp_path):
    from kexp.report.runs import list_runs

    (tmp_path / "half").mkdir()
    (tmp_path / "half" / ".lock").write_text("")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("")
    [row] = list_runs(tmp_path)
    assert row["id"] == "half" and row["status"] == "damaged"


@pytest.mark.long
@pytest.mark.slow
def test_an_exploding_regression_is_diverged_with_exit_3(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = x @ [1.5, -2.0, 0.5] + 3.0
    (tmp_path / "reg.csv").write_text("a,b,c,target\n" + "".join(f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{t:.4f}\n" for r, t in zip(x, y)))
    # a linear model and SGD at 1.12: the training loss stays finite for 11 epochs, the final model's test loss is inf
    spec = write_spec(tmp_path / "reg.yaml", smoke_spec(
        name="reg", data={"name": "csv", "path": "reg.csv", "task": "regression", "label_column": "target", "test_fraction": 0.2},
        model={"name": "mlp", "hidden_units": []}, train={"epochs": 11, "batch_size": 16, "optimizer": {"name": "sgd", "learning_rate": 1.12}}))
    result = kexp("train", str(spec), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path), "--log-format", "jsonl")
    assert result.returncode == 3, result.stderr
    assert "kexp: error: the trained model diverged: test loss inf" in result.stderr
    assert "r2 0.0" not in result.stderr and "r2 -" in result.stderr  # computed in float64, never Keras' forced 0.0
    [run] = list((tmp_path / "runs").iterdir())
    assert json.loads((run / "status.json").read_text())["state"] == "diverged"
    for line in result.stdout.splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"bare {name}"))


# --- full and read-only disks (real mounts; skipped where this user may not mount) --------------


@contextlib.contextmanager
def mounted(*args: str, target: Path):
    target.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", *args, str(target)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount here (needs root in a namespace that allows mounts)")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.mark.long
@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs mounts")
def test_a_full_disk_fails_the_run_in_one_line_and_leaves_no_temporary_file(tmp_path):
    spec = write_spec(tmp_path / "big.yaml", smoke_spec(name="big", data={"name": "synthetic", "samples": 200, "features": 64, "classes": 3},
                                                        model={"name": "mlp", "hidden_units": [2048, 512]}))  # a 14 MB model.keras
    with mounted("-t", "tmpfs", "-o", "size=3m", "tmpfs", target=tmp_path / "disk") as disk:
        result = kexp("train", str(spec), "--runs-dir", str(disk / "runs"), "--log-format", "plain")
        assert result.returncode == 1
        [error] = [line for line in result.stderr.splitlines() if line.strip()]
        [run] = list((disk / "runs").iterdir())
        assert error == f"kexp: error: {run / 'model.keras'}: No space left on device"
        assert json.loads((run / "status.json").read_text())["state"] == "failed"
        assert not [p for p in run.rglob("*") if "tmp" in p.name]
        listed = kexp("runs", str(disk / "runs"))
        assert run.name in listed.stdout and "failed" in listed.stdout


@pytest.mark.long
@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="bind mounts")
def test_a_read_only_run_still_evaluates_resumes_as_done_and_refuses_export_in_one_line(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec())
    assert kexp("train", str(spec), "--runs-dir", str(tmp_path / "runs")).returncode == 0
    [made] = list((tmp_path / "runs").iterdir())
    with mounted("--bind", str(tmp_path / "runs"), target=tmp_path / "ro") as ro:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        run = ro / made.name
        evaluated = kexp("evaluate", str(run))
        assert evaluated.returncode == 0, evaluated.stderr
        assert "accuracy" in evaluated.stdout and "not saved: add --output FILE" in evaluated.stderr
        assert kexp("evaluate", str(run), "--output", str(tmp_path / "e.json")).returncode == 0
        assert json.loads((tmp_path / "e.json").read_text())["split"] == "test"
        resumed = kexp("resume", str(run))
        assert resumed.returncode == 0 and "already completed: nothing was changed" in resumed.stdout
        exported = kexp("export", str(run), "--format", "saved_model")
        assert exported.returncode == 1 and "Traceback" not in exported.stderr
        assert exported.stderr.strip().splitlines() == [f"kexp: error: {run / 'export'}: cannot create the export folder: Read-only file system; choose another folder with --output"]

