"""kexp sweep: the space, the manifest, thread budgets, and whole sweeps as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import smoke_spec, write_spec

from kexp.errors import SpecError
from kexp.sweep.space import RangeSpec, SweepSpec, expand_points, parse_param, plan_sweep
from kexp.sweep.trials import reconcile, slot_environments, thread_budget


def sweep_spec(tmp_path: Path, sweep: dict | None = None, **changes) -> Path:
    spec = smoke_spec(**changes)
    if sweep is not None:
        spec["sweep"] = sweep
    return write_spec(tmp_path / "sweep.yaml", spec)


def test_param_values_are_yaml_and_ranges_are_low_high():
    assert parse_param("model.hidden_units.0=10,25,50") == ("model.hidden_units.0", [10, 25, 50])
    assert parse_param("train.optimizer=adam, {name: sgd, momentum: 0.9}") == ("train.optimizer", ["adam", {"name": "sgd", "momentum": 0.9}])
    assert parse_param("model.hidden_units=[8, 8],[16]") == ("model.hidden_units", [[8, 8], [16]])
    assert parse_param("train.optimizer.learning_rate=log:0.0001..0.1") == ("train.optimizer.learning_rate", RangeSpec(low=0.0001, high=0.1, log=True))
    assert parse_param("train.batch_size=16..128")[1].integer
    with pytest.raises(SpecError, match="expected KEY=V1,V2"):
        parse_param("model.hidden_units.0")
    with pytest.raises(SpecError, match="a log range needs low > 0"):
        parse_param("x=log:0..1")


def test_grid_is_every_combination_in_order_and_random_draws_from_the_seed():
    grid = SweepSpec(params={"a": [1, 2], "b": ["x", "y", "z"]})
    assert expand_points(grid, 0) == [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y", "z")]
    space = SweepSpec(method="random", samples=20, params={"lr": RangeSpec(low=1e-4, high=1e-1, log=True), "units": [8, 16]})
    points = expand_points(space, 3)
    assert len(points) == 20 and points == expand_points(space, 3) and points != expand_points(space, 4)
    assert all(1e-4 <= p["lr"] <= 1e-1 and p["units"] in (8, 16) for p in points)
    assert sum(p["lr"] < 1e-2 for p in points) >= 8  # log-uniform: two of the three decades lie below 0.01
    with pytest.raises(SpecError, match="a range needs random search"):
        expand_points(SweepSpec(params={"lr": RangeSpec(low=0.1, high=1.0)}), 0)


def test_every_trial_is_validated_before_anything_starts_and_the_bad_point_is_named(tmp_path):
    config = sweep_spec(tmp_path, {"params": {"model.hidden_units.0": [4, 0, 8]}})
    with pytest.raises(SpecError) as info:
        plan_sweep(config, [], [])
    assert info.value.problems == ["trial-001 (model.hidden_units.0=0): sweep point: model.hidden_units.0: Input should be greater than 0"]
    assert not (tmp_path / "runs").exists()


def test_plan_combines_the_yaml_section_params_seeds_and_set(tmp_path):
    config = sweep_spec(tmp_path, {"params": {"model.hidden_units.0": [4, 8]}})
    plan = plan_sweep(config, ["train.epochs=1"], ["train.batch_size=8,16"], seeds=2)
    assert len(plan.trials) == 8
    first = plan.trials[:2]
    assert [t["params"] for t in first] == [{"model.hidden_units.0": 4, "train.batch_size": 8}] * 2
    assert [t["seed"] for t in first] == [0, 1]
    spec = plan.specs["trial-007"]
    assert spec.train.epochs == 1 and spec.model.options.hidden_units == [8] and spec.train.batch_size == 16 and spec.seed == 1
    assert plan.fingerprint != plan_sweep(config, ["train.epochs=2"], ["train.batch_size=8,16"], seeds=2).fingerprint


def test_thread_budget_divides_the_cores_among_parallel_trials():
    assert thread_budget(16, 4) == {"TF_NUM_INTRAOP_THREADS": "4", "OMP_NUM_THREADS": "4", "TF_NUM_INTEROP_THREADS": "2"}
    assert thread_budget(2, 2)["TF_NUM_INTRAOP_THREADS"] == "1" and thread_budget(2, 8)["TF_NUM_INTRAOP_THREADS"] == "1"
    assert [e["CUDA_VISIBLE_DEVICES"] for e in slot_environments(4, ["0", "1"], 2)] == ["0", "0", "1", "1"]
    assert len(slot_environments(3, [], 1)) == 3


def test_a_running_trial_of_a_dead_driver_is_read_back_from_its_run(tmp_path):
    trial = {"id": "trial-000", "state": "running", "run_dir": "trial-000"}
    assert reconcile(tmp_path, trial)["state"] == "interrupted"  # no run directory yet
    (tmp_path / "trial-000").mkdir()
    (tmp_path / "trial-000" / "status.json").write_text(json.dumps({"state": "completed"}))
    assert reconcile(tmp_path, trial)["state"] == "completed"
    (tmp_path / "trial-000" / "status.json").write_text(json.dumps({"state": "running", "pid": 2**22 + 7, "host": os.uname().nodename}))
    assert reconcile(tmp_path, trial)["state"] == "interrupted"


# --- whole sweeps, as a user runs them -----------------------------------------------------


def kexp(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kexp", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def only_sweep(runs: Path) -> Path:
    [sweep_dir] = (runs / "sweeps").iterdir()
    return sweep_dir


@pytest.mark.long
@pytest.mark.slow
def test_a_parallel_sweep_writes_a_run_per_trial_a_manifest_and_a_summary(tmp_path):
    config = sweep_spec(tmp_path, {"params": {"model.hidden_units.0": [2, 16]}, "metric": "accuracy"}, train={"epochs": 2, "batch_size": 16})
    done = kexp("sweep", str(config), "--parallel", "2", "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr + done.stdout
    sweep_dir = only_sweep(tmp_path / "runs")
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert [(t["id"], t["state"], t["attempts"], t["exit_code"]) for t in manifest["trials"]] == [("trial-000", "completed", 1, 0), ("trial-001", "completed", 1, 0)]
    for trial in manifest["trials"]:
        run = sweep_dir / trial["run_dir"]
        assert json.loads((run / "status.json").read_text())["state"] == "completed"
        env = json.loads((run / "env.json").read_text())
        assert env["environment_variables"]["TF_NUM_INTRAOP_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["params"] == ["model.hidden_units.0"] and len(summary["points"]) == 2
    assert (sweep_dir / "summary.png").read_bytes()[:4] == b"\x89PNG" and (sweep_dir / "summary.csv").is_file()
    assert "trial-001  model.hidden_units.0=16  seed 0  completed" in done.stdout

    again = kexp("sweep", str(config), "--parallel", "2", "--runs-dir", str(tmp_path / "runs"))  # the same command: nothing to do
    assert again.returncode == 0 and "2 trials, 2 already done" in again.stdout
    assert json.loads((sweep_dir / "manifest.json").read_text())["trials"][0]["attempts"] == 1


@pytest.mark.long
@pytest.mark.slow
def test_a_sweep_stopped_mid_trial_resumes_without_rerunning_finished_trials(tmp_path):
    config = sweep_spec(tmp_path, {"params": {"model.hidden_units.0": [4, 8, 12]}},
                        data={"name": "synthetic", "samples": 2000, "features": 4, "classes": 3},
                        # Keras' loop: compiled as one XLA loop, a trial's epochs take milliseconds
                        # and it ends before the signal can catch it mid-fit
                        train={"epochs": 6, "batch_size": 8, "checkpoint_every": 1, "loop": "keras"})
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "kexp", "sweep", str(config), "--runs-dir", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:  # wait until the third trial has a checkpoint
        hits = list(runs.glob("sweeps/*/trial-002/checkpoints/epoch-*"))
        if hits:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    sweep_dir = only_sweep(runs)
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert [t["state"] for t in manifest["trials"]] == ["completed", "completed", "interrupted"]
    finished = {i: (sweep_dir / f"trial-00{i}" / "metrics.json").read_bytes() for i in (0, 1)}

    resumed = kexp("sweep", "--resume", str(sweep_dir))
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert [(t["state"], t["attempts"]) for t in manifest["trials"]] == [("completed", 1), ("completed", 1), ("completed", 2)]
    assert all((sweep_dir / f"trial-00{i}" / "metrics.json").read_bytes() == finished[i] for i in (0, 1))
    history = json.loads((sweep_dir / "trial-002" / "history.json").read_text())
    assert history["epochs"] == 6 and len(history["loss"]) == 6
    assert json.loads((sweep_dir / "trial-002" / "status.json").read_text())["attempt"] == 2
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["complete"] and len(summary["points"]) == 3


@pytest.mark.long
@pytest.mark.slow
def test_two_sweeps_at_once_in_one_runs_directory_get_their_own_directories(tmp_path):
    runs = tmp_path / "runs"
    configs = [sweep_spec(tmp_path / name, {"params": {"model.hidden_units.0": [4]}}, name=name) for name in ("one", "two") if (tmp_path / name).mkdir() is None]
    procs = [subprocess.Popen([sys.executable, "-m", "kexp", "sweep", str(c), "--runs-dir", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in configs]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    sweeps = sorted(p.name.split("-")[2] for p in (runs / "sweeps").iterdir())
    assert sweeps == ["one", "two"]


@pytest.fixture
def local_ray():
    """A real Ray head on 127.0.0.1 (2 CPUs) in its own process group, stopped (only it) after the test."""
    pytest.importorskip("ray")  # installed with .[test]; a plain install has no Ray
    import shutil
    import socket
    import tempfile

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="kr", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", f"--temp-dir={temp}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert head.poll() is None, head.stderr.read().decode()
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
                break
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.long
@pytest.mark.slow
def test_the_ray_backend_runs_trials_as_tasks_and_matches_the_local_results(tmp_path, local_ray):
    config = sweep_spec(tmp_path, {"params": {"model.hidden_units.0": [4, 8]}}, train={"epochs": 2, "batch_size": 16})
    runs = tmp_path / "runs"
    done = kexp("sweep", str(config), "--backend", "ray", "--address", local_ray, "--parallel", "2", "--runs-dir", "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    ray_sweep = only_sweep(runs)
    local = kexp("sweep", str(config), "--runs-dir", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    local_sweep = only_sweep(tmp_path / "local")
    for trial in ("trial-000", "trial-001"):
        on_ray = json.loads((ray_sweep / trial / "metrics.json").read_text())
        here = json.loads((local_sweep / trial / "metrics.json").read_text())
        assert on_ray["test"]["accuracy"] == pytest.approx(here["test"]["accuracy"], abs=1e-6)
        assert (ray_sweep / "logs" / f"{trial}.txt").read_text().startswith("kexp sweep: Ray task on node ")
    manifest = json.loads((ray_sweep / "manifest.json").read_text())
    assert [t["state"] for t in manifest["trials"]] == ["completed", "completed"]
    assert all(Path(t["command"].split()[3]).is_absolute() for t in manifest["trials"])  # resolved before submitting


@pytest.mark.long
@pytest.mark.slow
def test_a_trial_process_killed_mid_trial_is_resumed_from_its_checkpoint_by_the_same_sweep(tmp_path):
    config = sweep_spec(tmp_path, {"params": {"model.hidden_units.0": [4, 8]}},
                        data={"name": "synthetic", "samples": 2000, "features": 4, "classes": 3},
                        # Keras' loop: compiled as one XLA loop, a trial's epochs take milliseconds
                        # and it ends before the signal can catch it mid-fit
                        train={"epochs": 6, "batch_size": 8, "checkpoint_every": 1, "loop": "keras"})
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "kexp", "sweep", str(config), "--runs-dir", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    status = None
    while time.time() < deadline and status is None:  # trial-001 training, with two checkpoints on disk
        found = list(runs.glob("sweeps/*/trial-001/status.json"))
        if found and len(list(found[0].parent.glob("checkpoints/epoch-*"))) >= 2:
            status = json.loads(found[0].read_text())
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    assert status is not None and status["state"] == "running"
    os.kill(status["pid"], signal.SIGKILL)  # the trial, not the sweep
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    sweep_dir = only_sweep(runs)
    [first, second] = json.loads((sweep_dir / "manifest.json").read_text())["trials"]
    assert (first["state"], first["attempts"]) == ("completed", 1)
    assert (second["state"], second["attempts"], second["failures"]) == ("completed", 2, 1)
    assert "trial-001  model.hidden_units.0=8  seed 0  failed" in out and "killed by SIGKILL" in out
    history = json.loads((sweep_dir / "trial-001" / "history.json").read_text())
    assert history["epochs"] == 6 and len(history["loss"]) == 6
    assert json.loads((sweep_dir / "trial-001" / "status.json").read_text())["attempt"] == 2  # resumed, not retrained
