"""backend: tensorflow|jax in the spec, and the checks of `--processes` (kexp.backends, kexp.train.launch), in seconds.

The runs that train under jax, and over two processes, are in test_distributed.py (long)."""

import json
import socket
from pathlib import Path

import pytest
from conftest import smoke_spec, write_spec

from kexp.cli import app
from kexp.errors import repeats_once
from kexp.report.aggregate import group_runs_by_spec
from kexp.run.lifecycle import mark_failed_by_peer
from kexp.run.records import read_status, write_status
from kexp.spec import validate_spec
from kexp.train.launch import LaunchError, ProcessExit, check_processes, kexp_error


def test_backend_defaults_to_tensorflow_and_is_saved_in_the_resolved_spec():
    spec = validate_spec(smoke_spec())
    assert spec.backend == "tensorflow" and "backend: tensorflow" in spec.to_yaml()
    assert validate_spec(smoke_spec(backend="jax")).backend == "jax"


def test_an_unknown_backend_is_one_line_naming_the_key(tmp_path, runner):
    result = runner.invoke(app, ["validate", str(write_spec(tmp_path / "s.yaml", smoke_spec(backend="torch")))])
    assert result.exit_code == 2 and "backend" in result.output and "'tensorflow' or 'jax'" in result.output


@pytest.mark.parametrize("key, value, words", [
    ("loop", "xla", "train.loop: xla (a whole epoch as one TensorFlow XLA call) is TensorFlow-only"),
    ("threads", 2, "train.threads: 2 (TensorFlow's thread pools) is TensorFlow-only"),
    ("tensorboard", {"profile_batches": 3}, "train.tensorboard.profile_batches: profiling (TensorFlow's profiler) is TensorFlow-only"),
])
def test_validate_refuses_tensorflow_only_settings_under_jax_one_line_each(tmp_path, runner, key, value, words):
    spec = smoke_spec(backend="jax")
    spec["train"][key] = value
    result = runner.invoke(app, ["validate", str(write_spec(tmp_path / "s.yaml", spec))])
    assert result.exit_code == 2, result.output
    assert words in result.output and "backend: jax" in result.output
    spec["backend"] = "tensorflow"
    if key != "tensorboard":  # the same settings are fine under tensorflow (profiling needs TensorBoard installed)
        assert runner.invoke(app, ["validate", str(write_spec(tmp_path / "t.yaml", spec))]).exit_code == 0


def test_runs_of_different_backends_are_never_repeats_and_an_older_run_counts_as_tensorflow():
    base = smoke_spec()
    old = dict(base)  # config.yaml written before `backend` existed
    tf_run, jax_run = {**base, "backend": "tensorflow", "seed": 1}, {**base, "backend": "jax", "seed": 2}
    assert group_runs_by_spec([("old", old), ("tf", tf_run), ("jax", jax_run)]) == [["old", "tf"], ["jax"]]


@pytest.mark.parametrize("changes, words", [
    ({}, "needs backend: jax"),
    ({"backend": "jax", "evaluation": {"protocol": "kfold", "k": 3},
      "data": {"name": "synthetic", "samples": 120, "features": 4, "classes": 3, "test_fraction": 0.0}}, "k-fold trains several: run it without --processes"),
    ({"backend": "jax", "seeds": [1, 2]}, "seeds (repeats) trains several"),
    ({"backend": "jax", "train": {"batch_size": 15}}, "train.batch_size 15 is the global batch and cannot be split evenly over 2 processes"),
])
def test_processes_are_refused_before_any_data_when_they_cannot_work(changes, words):
    spec = smoke_spec()
    spec.update({k: v for k, v in changes.items() if k != "train"})
    spec["train"].update(changes.get("train", {}))
    with pytest.raises(LaunchError, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_processes(validate_spec(spec), 2, None)


def test_more_processes_than_this_machine_has_devices_for_is_refused(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    spec = smoke_spec(backend="jax")
    spec["train"]["batch_size"] = 24
    with pytest.raises(LaunchError, match=r"--processes 3: this machine has 2 CPU core\(s\) for device: auto"):
        check_processes(validate_spec(spec), 3, None)


def test_a_busy_coordinator_port_is_refused_in_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(LaunchError, match=f"--coordinator {address}: the port is busy"):
            check_processes(validate_spec(smoke_spec(backend="jax")), 2, address)
    with pytest.raises(LaunchError, match="give HOST:PORT"):
        check_processes(validate_spec(smoke_spec(backend="jax")), 2, "localhost")


def test_cli_processes_under_tensorflow_is_one_line_and_leaves_no_run(tmp_path, runner):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec())
    result = runner.invoke(app, ["train", str(spec), "--processes", "2", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "kexp: error: --processes 2: one run over several processes needs backend: jax" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_peer_that_died_is_named_in_the_run_status(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_status(run, "running", started="t", attempt=1, pid=1, epoch=2)
    assert mark_failed_by_peer(run, "process 1 was killed by SIGKILL")
    status = read_status(run)
    assert status.state == "failed" and status.error.startswith("process 1 was killed by SIGKILL; continue with: kexp resume")
    assert status.document["epoch"] == 2 and status.exit_code == 1
    # process 0 saw only its broken collective: the status says both, the dead process first
    write_status(run, "failed", started="t", attempt=1, error="PeerLost: a: a: a: reset")
    assert mark_failed_by_peer(run, "process 1 was killed by SIGKILL")
    assert read_status(run).error.startswith("process 1 was killed by SIGKILL (process 0 then stopped: PeerLost: a: reset)")
    write_status(run, "interrupted", started="t", attempt=1, error="interrupted by SIGTERM")
    assert not mark_failed_by_peer(run, "process 1 exited with code 143")
    assert read_status(run).state == "interrupted"
    assert not mark_failed_by_peer(tmp_path / "never-started", "process 1 was killed by SIGKILL")


def test_how_a_process_ended_in_words(tmp_path):
    assert ProcessExit(1, -9).describe() == "process 1 was killed by SIGKILL"
    assert ProcessExit(0, 2).describe() == "process 0 exited with code 2"
    log = tmp_path / "process-1.log"
    log.write_text("[Gloo] Rank 1 is connected\nkexp: error: data/x.csv: no such file\n    @ 0x7f stack\n")
    assert kexp_error(log) == "data/x.csv: no such file"
    assert kexp_error(tmp_path / "missing.log") is None
    assert repeats_once("INTERNAL: Error dispatching: Error dispatching: Error dispatching: Gloo failed") == "INTERNAL: Error dispatching: Gloo failed"


def test_env_json_of_a_tensorflow_run_records_backend_and_one_process(tmp_path, runner):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec())
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs"), "--log-format", "plain"])
    assert result.exit_code == 0, result.output
    env = json.loads(next(Path(tmp_path / "runs").glob("*/env.json")).read_text())
    assert env["backend"] == "tensorflow" and env["processes"] == 1 and "jax" not in env and "process_hosts" not in env


def test_once_process_0_has_ended_the_others_are_stopped_soon(monkeypatch):
    """A leader that refused to start (a held run, changed data) leaves the others waiting at JAX's start: killed after a moment."""
    import subprocess
    import sys
    import time

    from kexp.train import launch

    monkeypatch.setattr(launch, "LEADER_GONE_SECONDS", 1.0)
    leader = subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"])
    waiting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = time.monotonic()
    first = launch.supervise([leader, waiting])
    assert time.monotonic() - started < 10
    assert first == launch.ProcessExit(0, 2) and waiting.returncode == -9
