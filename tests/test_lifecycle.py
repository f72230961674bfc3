"""A run directory's life (kexp.run.lifecycle): status.json, log.txt, the lock, crash detection, resume checks.

No TensorFlow here: these are the guarantees `kexp runs`, `kexp resume` and a scheduler rely on.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import smoke_spec

import kexp.run.lifecycle
from kexp.errors import Diverged, Interrupted, ResumeRefused, RunDirError
from kexp.run.io import write_json
from kexp.run.lifecycle import (
    STALE_SECONDS,
    check_resumable,
    create_run,
    effective_state,
    process_start_ticks,
    reopen_run,
)
from kexp.run.records import Status, write_status
from kexp.train.signals import SignalGuard

REPO = Path(__file__).resolve().parents[1]


def status_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def log_of(run_dir: Path) -> str:
    return (run_dir / "log.txt").read_text()


def python(script: str, *args: object) -> subprocess.CompletedProcess:
    """Another process (a second `kexp resume`, say) running `script` with `args`."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=60)


def started_run(tmp_path: Path):
    """A run that has begun, with the config.yaml that `reopen_run` looks for."""
    run = create_run(tmp_path / "runs", "demo")
    (run.path / "config.yaml").write_text("name: demo\n")
    run.begin(epochs=3, members=1)
    return run


# --- status.json and log.txt ------------------------------------------------------------


def test_begin_writes_a_running_status_naming_this_process_and_complete_finishes_it(tmp_path):
    run = create_run(tmp_path / "runs", "demo")
    assert run.path.parent == tmp_path / "runs" and "-demo-" in run.path.name
    run.begin(epochs=3, members=1)

    status = status_of(run.path)
    assert status["state"] == "running"
    assert status["pid"] == os.getpid() and status["host"] == socket.gethostname()
    assert status["pid_started"] == process_start_ticks(os.getpid())
    assert status["attempt"] == 1 and status["epochs"] == 3 and status["members"] == 1
    for key in ("heartbeat", "started", "attempt_started", "updated"):
        datetime.fromisoformat(status[key])  # a real timestamp
    assert status["ended"] is None and status["exit_code"] is None and status["error"] is None
    assert effective_state(Status.from_document(status)) == "running"

    run.progress(epoch=2)
    assert status_of(run.path)["epoch"] == 2 and status_of(run.path)["state"] == "running"

    run.complete()
    status = status_of(run.path)
    assert status["state"] == "completed" and status["exit_code"] == 0
    assert status["epoch"] == 2 and status["epochs"] == 3  # earlier fields are kept
    datetime.fromisoformat(status["ended"])

    run.progress(epoch=3)  # a late progress report never turns a finished run back to running
    assert status_of(run.path)["state"] == "completed"

    lines = log_of(run.path).splitlines()
    assert len(lines) == 2
    assert f"attempt 1 started by pid {os.getpid()} on {socket.gethostname()}" in lines[0]
    assert lines[1].endswith(" completed")


def write_metrics():
    raise OSError(28, "No space left on device")


def test_an_unexpected_error_is_recorded_as_failed_with_its_traceback_and_propagates(tmp_path):
    run = started_run(tmp_path)
    with pytest.raises(OSError, match="No space left"), run.guarded(SignalGuard()):
        write_metrics()

    status = status_of(run.path)
    assert status["state"] == "failed" and status["exit_code"] == 1
    assert status["error"] == "No space left on device"  # the errno's words, never Python's "[Errno 28]" repr
    datetime.fromisoformat(status["ended"])
    log = log_of(run.path)
    assert "Traceback (most recent call last)" in log
    assert "in write_metrics" in log  # where it happened, for the bug report
    assert "failed: No space left on device" in log


def test_an_interruption_is_recorded_with_its_signal_and_exit_code(tmp_path):
    run = started_run(tmp_path)
    with pytest.raises(Interrupted) as info, run.guarded(SignalGuard()):
        raise Interrupted("SIGTERM", 143)

    status = status_of(run.path)
    assert status["state"] == "interrupted" and status["signal"] == "SIGTERM" and status["exit_code"] == 143
    assert status["error"] == "interrupted by SIGTERM"
    assert f"continue with: kexp resume {run.path}" in str(info.value)  # what the CLI prints
    assert "interrupted: interrupted by SIGTERM" in log_of(run.path)
    assert "Traceback" not in log_of(run.path)  # a signal is not a bug


def test_ctrl_c_outside_the_signal_handlers_is_recorded_as_sigint(tmp_path):
    run = started_run(tmp_path)
    with pytest.raises(KeyboardInterrupt), run.guarded(SignalGuard()):
        raise KeyboardInterrupt
    status = status_of(run.path)
    assert (status["state"], status["signal"], status["exit_code"]) == ("interrupted", "SIGINT", 130)


def test_divergence_is_recorded_as_diverged_with_exit_code_3(tmp_path):
    run = started_run(tmp_path)
    message = "loss became nan at epoch 2; lower train.optimizer.learning_rate"
    with pytest.raises(Diverged), run.guarded(SignalGuard()):
        raise Diverged(message)

    status = status_of(run.path)
    assert status["state"] == "diverged" and status["exit_code"] == 3 and status["error"] == message
    assert f"diverged: {message}" in log_of(run.path)


def test_a_block_that_ends_without_a_final_status_is_failed_never_left_running(tmp_path):
    run = started_run(tmp_path)
    with pytest.raises(RuntimeError, match="without a final status"), run.guarded(SignalGuard()):
        pass  # forgot run.complete()

    status = status_of(run.path)
    assert status["state"] == "failed" and status["exit_code"] == 1
    assert status["error"] == "RuntimeError: the run ended without a final status"


def test_a_completed_block_stays_completed(tmp_path):
    run = started_run(tmp_path)
    with run.guarded(SignalGuard()):
        run.complete()
    assert status_of(run.path)["state"] == "completed"
    assert "failed" not in log_of(run.path)


def test_a_third_signal_records_interrupted_through_the_guard(tmp_path):
    """The handler's on_abandon (the third signal, which exits at once) is wired to the run's status."""
    run = started_run(tmp_path)
    guard = SignalGuard()
    with run.guarded(guard):
        guard.on_abandon(signal.SIGUSR1)
        status = status_of(run.path)
        run.complete()
    assert (status["state"], status["signal"], status["exit_code"]) == ("interrupted", "SIGUSR1", 138)
    assert "the last checkpoint on disk is kept" in status["error"]
    assert guard.on_abandon is None  # after the block a signal no longer writes this run's status


# --- the lock ---------------------------------------------------------------------------

REOPEN = """
    import sys
    from kexp.errors import RunDirError
    from kexp.run.lifecycle import reopen_run
    try:
        run, status = reopen_run(sys.argv[1])
    except RunDirError as exc:
        print(exc)
        sys.exit(7)
    print("attempt", run.attempt)
"""


def test_a_run_in_use_is_refused_to_another_process_until_released(tmp_path):
    run = started_run(tmp_path)

    refused = python(REOPEN, run.path)
    assert refused.returncode == 7, refused.stderr
    assert "in use by another kexp process" in refused.stdout
    assert f"pid {os.getpid()} on {socket.gethostname()}" in refused.stdout  # who holds it
    assert status_of(run.path)["attempt"] == 1  # the refused process changed nothing

    run.release()
    again, before = reopen_run(run.path)
    assert before.attempt == 1 and before.state == "running"
    assert again.attempt == 2 and again.started == before.started
    again.begin()
    assert status_of(run.path)["attempt"] == 2
    again.release()


def test_the_lock_of_a_process_that_exited_is_free(tmp_path):
    holder = create_run(tmp_path / "runs", "demo")
    holder.release()
    (holder.path / "config.yaml").write_text("name: demo\n")
    script = """
        import sys
        from kexp.run.lifecycle import reopen_run
        run, status = reopen_run(sys.argv[1])
        run.begin()
    """
    write_status(holder.path, "interrupted", attempt=1, started="2020-01-01T00:00:00+00:00")
    done = python(script, holder.path)
    assert done.returncode == 0, done.stderr
    assert status_of(holder.path)["attempt"] == 2

    run, before = reopen_run(holder.path)  # that process exited: its lock went with it
    assert before.attempt == 2 and run.attempt == 3
    run.release()


def test_the_lock_of_a_killed_process_is_reclaimed(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    (path / "config.yaml").write_text("name: demo\n")
    script = """
        import sys, time
        from pathlib import Path
        from kexp.run.lifecycle import lock_run
        lock_run(Path(sys.argv[1]))
        print("locked", flush=True)
        time.sleep(60)
    """
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        write_status(path, "running", attempt=4, pid=child.pid, pid_started=process_start_ticks(child.pid), host=socket.gethostname())
        with pytest.raises(RunDirError, match=rf"in use by another kexp process \(pid {child.pid} on "):
            reopen_run(path)
        assert effective_state(Status.from_document(status_of(path))) == "running"
    finally:
        child.kill()  # SIGKILL: no handler, no cleanup
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    assert effective_state(Status.from_document(status_of(path))) == "crashed"
    run, before = reopen_run(path)
    assert before.attempt == 4 and run.attempt == 5
    run.release()


# --- effective_state: `running` whose process is gone is `crashed` ----------------------


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def test_a_running_status_whose_process_is_gone_is_crashed():
    here = socket.gethostname()
    assert effective_state(Status.from_document({"state": "running", "pid": exited_pid(), "host": here})) == "crashed"


def test_a_running_status_of_a_live_process_is_running_unless_the_pid_was_reused():
    here, me = socket.gethostname(), os.getpid()
    started = process_start_ticks(me)
    assert isinstance(started, int)
    assert effective_state(Status.from_document({"state": "running", "pid": me, "pid_started": started, "host": here})) == "running"
    # the same pid, but a process that started at another time: the run's own process is gone
    assert effective_state(Status.from_document({"state": "running", "pid": me, "pid_started": started + 1, "host": here})) == "crashed"


def test_a_running_status_from_another_host_is_judged_by_its_heartbeat():
    now = datetime.now(UTC)
    elsewhere = {"state": "running", "pid": os.getpid(), "host": socket.gethostname() + "-elsewhere.invalid"}
    old = (now - timedelta(seconds=STALE_SECONDS + 60)).isoformat(timespec="seconds")
    recent = (now - timedelta(seconds=5)).isoformat(timespec="seconds")
    assert effective_state(Status.from_document({**elsewhere, "heartbeat": old})) == "crashed"
    assert effective_state(Status.from_document({**elsewhere, "heartbeat": recent})) == "running"
    # an older status.json without a heartbeat field: its last update counts
    assert effective_state(Status.from_document({**elsewhere, "updated": old})) == "crashed"
    assert effective_state(Status.from_document({**elsewhere, "heartbeat": recent}), now=now + timedelta(seconds=STALE_SECONDS + 10)) == "crashed"


def test_final_states_are_reported_as_recorded():
    gone, here = exited_pid(), socket.gethostname()
    for state in ("completed", "failed", "interrupted", "diverged"):
        assert effective_state(Status.from_document({"state": state, "pid": gone, "host": here})) == state


# --- run directories created at the same moment -----------------------------------------


def _create_at_once(barrier, results, runs_dir):
    barrier.wait(timeout=30)
    results.put(str(create_run(runs_dir, "same").path))


def test_sixteen_runs_started_at_once_get_sixteen_directories(tmp_path):
    runs_dir = tmp_path / "runs"
    context = multiprocessing.get_context("fork")  # children inherit the parent's state: the worst case for a clash
    barrier, results = context.Barrier(16), context.Queue()
    workers = [context.Process(target=_create_at_once, args=(barrier, results, runs_dir)) for _ in range(16)]
    for worker in workers:
        worker.start()
    paths = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert [worker.exitcode for worker in workers] == [0] * 16
    assert len(set(paths)) == 16
    assert sorted(str(p) for p in runs_dir.iterdir()) == sorted(paths)
    assert all(Path(p).is_dir() and "-same-" in Path(p).name for p in paths)


# --- check_resumable --------------------------------------------------------------------


def resumable_run_dir(tmp_path: Path):
    """A run directory as `kexp train` leaves it: config.yaml and env.json from the same resolved spec."""
    from kexp.spec import validate_spec

    spec = validate_spec(smoke_spec())  # resolved, as `kexp train` saves it
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"# Resolved spec of run {run_dir.name} (kexp 0.2.0)\n" + spec.to_yaml())
    write_json(run_dir / "env.json", {"spec": spec.model_dump(mode="json"), "kexp": "0.2.0"})
    return run_dir, spec


INTERRUPTED = {"state": "interrupted", "signal": "SIGTERM", "exit_code": 143}


def test_an_unchanged_run_is_resumable(tmp_path):
    run_dir, spec = resumable_run_dir(tmp_path)
    assert check_resumable(run_dir, Status.from_document(INTERRUPTED)) == (spec, [])
    crashed = {"state": "running", "pid": exited_pid(), "host": socket.gethostname()}
    assert check_resumable(run_dir, Status.from_document(crashed)) == (spec, [])


def test_comment_only_edits_to_config_yaml_are_accepted(tmp_path):
    run_dir, spec = resumable_run_dir(tmp_path)
    config = run_dir / "config.yaml"
    config.write_text("# resumed after the cluster maintenance\n" + config.read_text().replace("epochs: 2\n", "epochs: 2  # as planned\n"))
    assert "# as planned" in config.read_text()
    assert check_resumable(run_dir, Status.from_document(INTERRUPTED)) == (spec, [])


def test_an_edited_config_yaml_refuses_resume_naming_the_change(tmp_path):
    run_dir, _ = resumable_run_dir(tmp_path)
    config = run_dir / "config.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["train"]["epochs"] = 5
    raw["model"]["hidden_units"] = [8, 8]
    config.write_text(yaml.safe_dump(raw, sort_keys=False))

    with pytest.raises(ResumeRefused) as info:
        check_resumable(run_dir, Status.from_document(INTERRUPTED))
    message = str(info.value)
    assert f"{config} was edited since the run started" in message
    assert "train.epochs: 2 -> 5" in message
    assert "model.hidden_units: [8] -> [8, 8]" in message
    assert "undo the edit, or train a new run" in message
    assert info.value.exit_code == 2


def test_a_diverged_run_is_not_resumable(tmp_path):
    run_dir, _ = resumable_run_dir(tmp_path)
    with pytest.raises(ResumeRefused) as info:
        check_resumable(run_dir, Status.from_document({"state": "diverged", "error": "loss became nan at epoch 2", "exit_code": 3}))
    assert "diverged (loss became nan at epoch 2)" in str(info.value)
    assert "learning_rate" in str(info.value)


# --- the heartbeat ----------------------------------------------------------------------


def test_a_running_run_rewrites_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(kexp.run.lifecycle, "HEARTBEAT_SECONDS", 0.1)
    run = started_run(tmp_path)
    run.progress(epoch=1)
    stale = "2000-01-01T00:00:00+00:00"
    with run.guarded(SignalGuard()):
        # what a reader on another host would see after a long silence
        write_json(run.path / "status.json", {**status_of(run.path), "heartbeat": stale, "updated": stale})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and status_of(run.path)["heartbeat"] == stale:
            time.sleep(0.05)
        beaten = status_of(run.path)
        run.complete()
    assert beaten["heartbeat"] != stale and beaten["updated"] != stale
    assert datetime.now(UTC) - datetime.fromisoformat(beaten["heartbeat"]) < timedelta(seconds=30)
    assert beaten["state"] == "running" and beaten["epoch"] == 1 and beaten["attempt"] == 1  # a full status, not a partial one

    final = status_of(run.path)
    time.sleep(0.3)  # no heartbeat after the run ended
    assert status_of(run.path) == final and final["state"] == "completed"



def test_a_killed_process_not_yet_reaped_is_not_alive():
    import signal
    import subprocess
    import sys
    import time

    from kexp.run.lifecycle import process_alive, process_start_ticks, process_state

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = process_start_ticks(child.pid)
    assert process_alive(child.pid, started)
    child.send_signal(signal.SIGKILL)
    deadline = time.time() + 10
    while process_state(child.pid) != "Z" and time.time() < deadline:  # not waited for: a zombie
        time.sleep(0.05)
    assert process_state(child.pid) == "Z" and not process_alive(child.pid, started)
    child.wait()
