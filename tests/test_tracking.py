"""TensorBoard logs and MLflow runs (kexp.tracking), read back with those tools' own readers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import smoke_spec, write_spec

from kexp.tracking import TensorBoardSpec, flatten

pytestmark = pytest.mark.slow
mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'kexp[mlflow]')")

SPEC = smoke_spec(train={"epochs": 3, "batch_size": 16, "validation_split": 0.2, "checkpoint_every": 1})


def kexp(*args: str, cwd: Path, env: dict | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "kexp"]
    # run from a scratch directory: with a SQLite store MLflow keeps artifacts in ./mlruns
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=240, env={**os.environ, **(env or {})}, cwd=cwd)


def train(tmp_path: Path, *args: str, spec: dict = SPEC, **kwargs) -> tuple[subprocess.CompletedProcess, Path | None]:
    path = write_spec(tmp_path / "spec.yaml", spec)
    done = kexp("train", str(path), "--runs-dir", str(tmp_path / "runs"), "--log-format", "plain", *args, cwd=tmp_path, **kwargs)
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()] if (tmp_path / "runs").exists() else []
    return done, runs[0] if runs else None


def history(run: Path) -> dict:
    return json.loads((run / "history.json").read_text())


def test_tensorboard_logs_read_back_with_tensorboards_reader_match_the_history(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    done, run = train(tmp_path, "--tensorboard")
    assert done.returncode == 0, done.stderr
    expected = history(run)
    for part, prefix in (("train", ""), ("validation", "val_")):
        events = EventAccumulator(str(run / "tensorboard" / part))
        events.Reload()
        # Keras writes scalars as tensors; one per epoch, at step = epoch index
        loss = [(e.step, float(tf_value(e))) for e in events.Tensors("epoch_loss")]
        assert [step for step, _ in loss] == [0, 1, 2]
        assert [value for _, value in loss] == pytest.approx(expected[f"{prefix}loss"], rel=1e-6)


def tf_value(event) -> float:
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(event.tensor_proto).item()


def test_tensorboard_options_are_checked():
    assert TensorBoardSpec(profile_batches="2,4").profile_batches == "2,4"
    with pytest.raises(ValueError, match="give one batch number or 'first,last'"):
        TensorBoardSpec(profile_batches="4,2")


def read_mlflow(uri: str, run: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run_id = json.loads((run / "mlflow.json").read_text())["run_id"]
    return client, client.get_run(run_id)


def check_mlflow_run(uri: str, run: Path, epochs: int) -> None:
    client, found = read_mlflow(uri, run)
    assert found.info.status == "FINISHED" and found.data.tags["kexp.status"] == "completed"
    assert found.data.tags["kexp.run_id"] == run.name
    spec = json.loads((run / "env.json").read_text())["spec"]
    assert found.data.params["train.epochs"] == str(epochs) and found.data.params["model.hidden_units"] == str(spec["model"]["hidden_units"])
    assert len(found.data.params) == len(flatten(spec))
    steps = client.get_metric_history(found.info.run_id, "val_accuracy")
    assert sorted(m.step for m in steps) == list(range(1, epochs + 1))
    assert [m.value for m in sorted(steps, key=lambda m: m.step)] == pytest.approx(history(run)["val_accuracy"], rel=1e-6)
    metrics = json.loads((run / "metrics.json").read_text())
    assert found.data.metrics["final.test.accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.yaml", "metrics.json", "history.json", "events.jsonl", "model", "plots"} <= artifacts


def test_mlflow_store_gets_params_metrics_tags_and_files(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done, run = train(tmp_path, "--mlflow-uri", uri)
    assert done.returncode == 0, done.stderr
    check_mlflow_run(uri, run, epochs=3)


def test_a_resumed_run_continues_the_same_mlflow_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = {**SPEC, "data": {"name": "synthetic", "samples": 2000, "features": 4, "classes": 3},
            "train": {**SPEC["train"], "epochs": 5, "batch_size": 8}}
    path = write_spec(tmp_path / "spec.yaml", spec)
    marker = tmp_path / "paused"
    env = {**os.environ, "KEXP_TEST_PAUSE": f"checkpoint@2:{marker}"}  # holds the run 2 s in its second checkpoint
    process = subprocess.Popen([sys.executable, "-m", "kexp", "train", str(path), "--runs-dir", str(tmp_path / "runs"), "--mlflow-uri", uri,
                                "--log-format", "plain"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    wait_for(marker.exists)
    run = wait_for_run(tmp_path / "runs")
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 143
    first_id = json.loads((run / "mlflow.json").read_text())["run_id"]
    _, stopped = read_mlflow(uri, run)
    assert stopped.info.status == "KILLED" and stopped.data.tags["kexp.status"] == "interrupted"
    done = kexp("resume", str(run), "--log-format", "plain", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "mlflow.json").read_text())["run_id"] == first_id
    check_mlflow_run(uri, run, epochs=5)


def wait_for_run(runs: Path) -> Path:
    wait_for(lambda: runs.exists() and any(p.is_dir() for p in runs.iterdir()))
    return next(p for p in runs.iterdir() if p.is_dir())


def wait_for(ready, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a SQLite store, for this module's tests."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(root / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}", "--default-artifact-root", (root / "artifacts").as_uri()],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{uri}/health") or server.poll() is not None, seconds=90)
        assert server.poll() is None, (root / "server.log").read_text()[-2000:]
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        log.close()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_mlflow_server_gets_the_same_run(tmp_path, mlflow_server):
    done, run = train(tmp_path, "--mlflow-uri", mlflow_server)
    assert done.returncode == 0, done.stderr
    check_mlflow_run(mlflow_server, run, epochs=3)


def test_a_server_that_is_not_there_fails_the_run_with_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket closes
    done, run = train(tmp_path, "--mlflow-uri", f"http://127.0.0.1:{port}", env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    assert done.returncode == 1
    assert f"MLflow at http://127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
    assert json.loads((run / "status.json").read_text())["state"] == "failed"


BLOCK = "import sys; sys.modules[{name!r}] = None\nfrom kexp.cli import main\nsys.argv = ['kexp', *sys.argv[1:]]\nmain()\n"


@pytest.mark.parametrize(("module", "option", "extra"), [("mlflow", "--mlflow", "kexp[mlflow]"), ("tensorboard", "--tensorboard", "kexp[tensorboard]")])
def test_a_missing_extra_is_one_line_before_any_run_directory(tmp_path, module, option, extra):
    done, run = train(tmp_path, option, code=BLOCK.format(name=module))
    assert done.returncode == 1 and f"pip install '{extra}'" in done.stderr and "Traceback" not in done.stderr
    assert run is None
