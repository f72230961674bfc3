"""TensorBoard logs and MLflow runs (kexp.tracking), read back with those tools' own readers.

Two layers: the library (a tiny Keras model fitted in-process with the callbacks, MLflow runs
started and finished directly) and the whole `kexp train` / `kexp resume` in a subprocess.
"""

from __future__ import annotations

import importlib.util
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

import kexp.tracking as tracking
from kexp.errors import KexpError
from kexp.tracking import MlflowRun, MlflowSpec, TensorBoardSpec, flatten, start_mlflow_run, tensorboard_callback

# CI installs both with the test extra; a bare checkout skips, saying what to install
needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed: pip install -e '.[test]' (or '.[mlflow]')")
needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed: pip install -e '.[test]'")

SPEC = smoke_spec(train={"epochs": 3, "batch_size": 16, "validation_split": 0.2, "checkpoint_every": 1})


def kexp(*args: str, cwd: Path, env: dict | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "kexp"]
    # run from a scratch directory: with a SQLite store MLflow keeps artifacts in ./mlruns
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=240, env={**os.environ, **(env or {})}, cwd=cwd)


def train(tmp_path: Path, *args: str, spec: dict = SPEC, **kwargs) -> tuple[subprocess.CompletedProcess, Path | None]:
    path = write_spec(tmp_path / "spec.yaml", spec)
    done = kexp("train", str(path), "--runs-dir", str(tmp_path / "runs"), "--log-format", "plain", *args, cwd=tmp_path, **kwargs)
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and p.name != "mlartifacts"] if (tmp_path / "runs").exists() else []
    return done, runs[0] if runs else None


def history(run: Path) -> dict:
    return json.loads((run / "history.json").read_text())


@pytest.mark.long
@pytest.mark.slow
@needs_tensorboard
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


@pytest.mark.long  # 17 s of MLflow start-up
@pytest.mark.slow
@needs_mlflow
def test_mlflow_store_gets_params_metrics_tags_and_files(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done, run = train(tmp_path, "--mlflow-uri", uri)
    assert done.returncode == 0, done.stderr
    check_mlflow_run(uri, run, epochs=3)


@pytest.mark.long
@pytest.mark.slow
@needs_mlflow
@pytest.mark.parametrize("form", ["./mlruns", "file"])
def test_a_local_mlflow_folder_works_and_the_run_says_where_it_logged(tmp_path, form, monkeypatch):
    """`--mlflow-uri ./mlruns`, every MLflow user's habit: MLflow 3 refuses its file store unless allowed."""
    uri = "./mlruns" if form == "./mlruns" else (tmp_path / "mlruns").as_uri()
    done, run = train(tmp_path, "--mlflow-uri", uri, env={"MLFLOW_ALLOW_FILE_STORE": ""})
    assert done.returncode == 0, done.stderr
    store = (tmp_path / "mlruns").as_uri()
    assert f"mlflow: logging to {store} (experiment smoke, run " in done.stdout
    assert f"MLFLOW_ALLOW_FILE_STORE=true set for this run, as MLflow 3 asks); view it with `MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {store}`" in done.stdout
    assert json.loads((run / "mlflow.json").read_text())["tracking_uri"] == store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # to read the store back here
    check_mlflow_run(store, run, epochs=3)


@needs_mlflow
def test_a_store_mlflow_refuses_is_one_whole_line_before_any_run_folder(tmp_path):
    done, run = train(tmp_path, "--mlflow-uri", "nosuch://host/store")
    assert done.returncode == 1 and run is None
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("kexp: error: MLflow at nosuch://host/store: ")
    assert line.endswith("against one of the supported backend storage locations.")  # MLflow's hint comes last: never cut


@pytest.mark.long
@needs_mlflow
def test_mlflow_without_a_uri_logs_beside_the_runs_and_says_where(tmp_path):
    done, run = train(tmp_path, "--mlflow", env={"MLFLOW_TRACKING_URI": ""})
    assert done.returncode == 0, done.stderr
    store = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert f"mlflow: logging to {store} (experiment smoke, run " in done.stdout and "a SQLite store beside the runs" in done.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()  # nothing where kexp was started
    check_mlflow_run(store, run, epochs=3)
    assert (tmp_path / "runs" / "mlartifacts").is_dir()
    (tmp_path / "other").mkdir()
    done, _ = train(tmp_path / "other", "--mlflow", env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"})
    assert f"mlflow: logging to sqlite:///{tmp_path / 'm.db'} (experiment smoke, run " in done.stdout


@pytest.mark.long
@needs_mlflow
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
    port = free_port()
    log = open(root / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}", "--default-artifact-root", (root / "artifacts").as_uri()],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "MLFLOW_TRUNCATE_LONG_VALUES": "false"})
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{uri}/health") or server.poll() is not None, seconds=90)
        assert server.poll() is None, (root / "server.log").read_text()[-2000:]
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        log.close()


def free_port() -> int:
    """A port nothing listens on once the probing socket closes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.long
@pytest.mark.slow
@needs_mlflow
def test_mlflow_server_gets_the_same_run(tmp_path, mlflow_server):
    done, run = train(tmp_path, "--mlflow-uri", mlflow_server)
    assert done.returncode == 0, done.stderr
    check_mlflow_run(mlflow_server, run, epochs=3)


@pytest.mark.slow
@needs_mlflow
def test_a_server_that_is_not_there_is_one_line_before_any_run_directory(tmp_path):
    port = free_port()  # nothing listens there
    done, run = train(tmp_path, "--mlflow-uri", f"http://127.0.0.1:{port}")  # MLflow's own retries left at their default (minutes)
    assert done.returncode == 1
    assert f"MLflow at http://127.0.0.1:{port}: cannot connect" in done.stderr and "Traceback" not in done.stderr
    assert run is None  # nothing left behind for `kexp runs` to list as failed


def test_an_unreachable_server_is_found_before_the_data_is_read(tmp_path):
    port = free_port()
    missing = smoke_spec(data={"name": "pima"})  # no Pima file in tmp_path: reading it would fail second
    done, run = train(tmp_path, "--mlflow-uri", f"http://127.0.0.1:{port}", "--data-dir", str(tmp_path), spec=missing)
    assert done.returncode == 1 and "cannot connect" in done.stderr and "pima" not in done.stderr.lower(), done.stderr
    assert run is None


@pytest.mark.long  # 11 s of MLflow start-up
def test_a_sqlite_store_adds_no_mlflow_log_lines_without_verbose(tmp_path):
    done, run = train(tmp_path, "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert done.returncode == 0, done.stderr
    assert "mlflow" not in done.stderr.lower(), done.stderr


BLOCK = "import sys; sys.modules[{name!r}] = None\nfrom kexp.cli import main\nsys.argv = ['kexp', *sys.argv[1:]]\nmain()\n"


@pytest.mark.slow
@pytest.mark.parametrize(("module", "option", "extra"), [("mlflow", "--mlflow", "kexp[mlflow]"), ("tensorboard", "--tensorboard", "kexp[tensorboard]")])
def test_a_missing_extra_is_one_line_before_any_run_directory(tmp_path, module, option, extra):
    done, run = train(tmp_path, option, code=BLOCK.format(name=module))
    assert done.returncode == 1 and f"pip install '{extra}'" in done.stderr and "Traceback" not in done.stderr
    assert run is None


# ---- the library on its own: a tiny Keras model fitted in-process with the callbacks ----

ROWS = 64


def tiny_fit(callbacks: list, epochs: int = 3, initial_epoch: int = 0, model=None):
    """Two Dense layers on 64 seeded random rows; returns the model and fit's history."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(ROWS, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    if model is None:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    fitted = model.fit(x, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=16, validation_split=0.25, verbose=0, callbacks=callbacks)
    return model, fitted.history


def read_tensorboard(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], set[str]]:
    """Every scalar tag's (step, value) list and all tags, as TensorBoard's own loader reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    tags = set(events.Tags()["tensors"])
    scalars = {tag: [(e.step, tf_value(e)) for e in events.Tensors(tag)] for tag in tags if tag.startswith("epoch_")}
    return scalars, tags


@pytest.mark.slow
@needs_tensorboard
@pytest.mark.parametrize("options", [TensorBoardSpec(histograms=True, profile_batches="2,3"), TensorBoardSpec(write_graph=False)], ids=["all", "scalars-only"])
def test_tensorboard_callback_writes_each_epoch_as_fit_saw_it(tmp_path, options):
    _, seen = tiny_fit([tensorboard_callback(tmp_path, options)])
    for part, prefix in (("train", ""), ("validation", "val_")):
        scalars, _ = read_tensorboard(tmp_path / "tensorboard" / part)
        assert [step for step, _ in scalars["epoch_loss"]] == [0, 1, 2]
        assert [value for _, value in scalars["epoch_loss"]] == pytest.approx(seen[f"{prefix}loss"], rel=1e-6)
        assert [value for _, value in scalars["epoch_accuracy"]] == pytest.approx(seen[f"{prefix}accuracy"], rel=1e-6)
    _, tags = read_tensorboard(tmp_path / "tensorboard" / "train")
    assert ("keras" in tags) == options.write_graph  # Keras 3's graph: the model's conceptual graph
    assert any(tag.endswith("kernel/histogram") for tag in tags) == options.histograms
    assert any((tmp_path / "tensorboard" / "train" / "plugins" / "profile").glob("*/*.xplane.pb")) == (options.profile_batches is not None)


def test_tensorboard_options_refuse_what_keras_would_ignore_or_reject():
    """A range starting at 0 would profile nothing without a word; a bool is not a batch number."""
    assert TensorBoardSpec(profile_batches=3).profile_batches == 3
    for bad in ("0,3", "3", "a,b", 0, True):
        with pytest.raises(ValueError):
            TensorBoardSpec(profile_batches=bad)
    with pytest.raises(ValueError, match="unexpected_keyword|Extra inputs"):
        TensorBoardSpec(histogram=True)


@needs_tensorboard
def test_tensorboard_without_profiling_leaves_keras_profiler_off(tmp_path):
    callback = tensorboard_callback(tmp_path, TensorBoardSpec())
    assert (callback._start_batch, callback._stop_batch, callback.histogram_freq) == (0, 0, 0)
    assert callback.log_dir == str(tmp_path / "tensorboard")


def test_importing_tracking_loads_neither_mlflow_nor_tensorflow():
    code = "import sys, kexp.tracking; print(sorted(m for m in ('mlflow', 'tensorflow', 'keras', 'tensorboard') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


SPEC_DOCUMENT = {"name": "tiny", "seed": 0, "model": {"name": "mlp", "hidden_units": [8, 4]},
                 "train": {"epochs": 5, "optimizer": {"name": "adam", "learning_rate": 0.01}, "note": "x" * 7000, "precision": None}}


def write_run_files(run_dir: Path, model, epochs: int) -> dict:
    """What a finished kexp run leaves: the files finish() copies, and metrics.json's content."""
    metrics = {"test": {"loss": 0.5, "accuracy": 0.75}, "report": {"balanced_accuracy": 0.7, "per_class": {"a": 1}}, "epochs_completed": epochs}
    for name, text in (("config.yaml", "name: tiny\n"), ("env.json", "{}"), ("history.json", "{}"), ("metrics.json", json.dumps(metrics))):
        (run_dir / name).write_text(text)
    (run_dir / "plots").mkdir(exist_ok=True)
    (run_dir / "plots" / "loss.png").write_bytes(b"\x89PNG\r\n")
    model.save(run_dir / "model.keras")
    return metrics


def artifact_paths(client, run_id: str, folder: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, folder):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.fixture(params=["file", "sqlite", "server"])
def store(request, tmp_path, monkeypatch) -> str:
    """A tracking URI: a local file store, a SQLite store, or a real `mlflow server`."""
    monkeypatch.setenv("MLFLOW_TRUNCATE_LONG_VALUES", "false")  # newer MLflow cuts long params itself; older ones refuse them
    if request.param == "server":
        return request.getfixturevalue("mlflow_server")
    monkeypatch.chdir(tmp_path)  # a SQLite store keeps artifacts in ./mlruns
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store without this opt-in
    return (tmp_path / "mlruns").as_uri()


def new_run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "runs" / "20260101-000000-tiny-ab12"
    run_dir.mkdir(parents=True)
    return run_dir


@pytest.mark.long
@pytest.mark.slow
@needs_mlflow
def test_an_mlflow_run_holds_params_epochs_tags_files_and_continues_on_resume(tmp_path, store):
    from mlflow.tracking import MlflowClient

    from kexp.train.callbacks import MlflowEpochs

    run_dir = new_run_dir(tmp_path)
    first = start_mlflow_run(run_dir, SPEC_DOCUMENT, MlflowSpec(uri=store), "tiny", "9.9.9")
    model, seen = tiny_fit([MlflowEpochs(first)])
    first.finish(run_dir, "interrupted", None)
    client = MlflowClient(store)
    stopped = client.get_run(first.run_id)
    assert (stopped.info.status, stopped.data.tags["kexp.status"]) == ("KILLED", "interrupted")
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == first.run_id

    again = start_mlflow_run(run_dir, SPEC_DOCUMENT, MlflowSpec(uri=store), "tiny", "9.9.9")
    assert again.run_id == first.run_id
    resumed = client.get_run(first.run_id)
    assert (resumed.info.status, resumed.data.tags["kexp.status"]) == ("RUNNING", "running")
    model, more = tiny_fit([MlflowEpochs(again)], epochs=5, initial_epoch=3, model=model)
    again.finish(run_dir, "completed", write_run_files(run_dir, model, epochs=5))
    assert first.failures == again.failures == []

    found = client.get_run(first.run_id)
    assert (found.info.status, found.data.tags["kexp.status"]) == ("FINISHED", "completed")
    assert {k: found.data.tags[k] for k in ("kexp.run_id", "kexp.version", "kexp.name")} == {"kexp.run_id": run_dir.name, "kexp.version": "9.9.9", "kexp.name": "tiny"}
    assert client.get_experiment(found.info.experiment_id).name == "tiny"
    params = found.data.params
    assert params["train.optimizer.name"] == "adam" and params["train.optimizer.learning_rate"] == "0.01"
    assert params["model.hidden_units"] == "[8, 4]" and params["train.precision"] == "null"
    assert params["train.note"] == "x" * tracking.PARAM_LIMIT and len(params) == len(flatten(SPEC_DOCUMENT))
    for key in ("loss", "val_loss", "accuracy"):
        history = sorted(client.get_metric_history(first.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == [1, 2, 3, 4, 5]  # both attempts, step = epoch number
        assert [m.value for m in history] == pytest.approx(seen[key] + more[key], rel=1e-6)
    assert found.data.metrics["final.test.accuracy"] == 0.75 and found.data.metrics["final.report.balanced_accuracy"] == 0.7
    assert {"config.yaml", "env.json", "metrics.json", "history.json", "plots/loss.png", "model/model.keras"} <= artifact_paths(client, first.run_id)


@needs_mlflow
@pytest.mark.parametrize(("state", "status"), [("completed", "FINISHED"), ("interrupted", "KILLED"), ("failed", "FAILED"), ("diverged", "FAILED")])
def test_kexp_states_become_mlflow_statuses(tmp_path, monkeypatch, state, status):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = new_run_dir(tmp_path)
    run = start_mlflow_run(run_dir, SPEC_DOCUMENT, MlflowSpec(uri=uri, experiment="elsewhere"), "tiny", "9.9.9")
    run.finish(run_dir, state, None)
    found = MlflowClient(uri).get_run(run.run_id)
    assert (found.info.status, found.data.tags["kexp.status"]) == (status, state)
    assert MlflowClient(uri).get_experiment(found.info.experiment_id).name == "elsewhere"


@needs_mlflow
def test_a_resume_finds_the_mlflow_run_where_it_was_created(tmp_path, monkeypatch):
    """With no uri in the spec, the resuming shell's $MLFLOW_TRACKING_URI must not send it elsewhere."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    first_store = f"sqlite:///{tmp_path / 'first.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", first_store)
    run_dir = new_run_dir(tmp_path)
    first = start_mlflow_run(run_dir, SPEC_DOCUMENT, MlflowSpec(), "tiny", "9.9.9")
    first.finish(run_dir, "interrupted", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    again = start_mlflow_run(run_dir, SPEC_DOCUMENT, MlflowSpec(), "tiny", "9.9.9")
    assert again.run_id == first.run_id and MlflowClient(first_store).get_run(first.run_id).info.status == "RUNNING"


@needs_mlflow
@pytest.mark.parametrize("resume", [False, True], ids=["start", "resume"])
def test_an_unreachable_server_is_one_kexp_error_in_seconds(tmp_path, resume):
    uri = f"http://127.0.0.1:{free_port()}"
    run_dir = new_run_dir(tmp_path)
    if resume:
        (run_dir / "mlflow.json").write_text(json.dumps({"run_id": "abc", "experiment_id": "1", "tracking_uri": uri}))
    started = time.monotonic()
    with pytest.raises(KexpError, match=f"MLflow at {uri}: cannot connect"):
        start_mlflow_run(run_dir, SPEC_DOCUMENT, MlflowSpec(uri=uri), "tiny", "9.9.9")
    assert time.monotonic() - started < tracking.PROBE_SECONDS  # MLflow's own retries would take about four minutes
    assert (run_dir / "mlflow.json").is_file() == resume


@needs_mlflow
def test_a_store_mlflow_refuses_is_one_kexp_error(tmp_path):
    with pytest.raises(KexpError, match=r"MLflow at nosuch://x: UnsupportedModelRegistryStoreURIException: .* Supported URI schemes are"):
        start_mlflow_run(new_run_dir(tmp_path), SPEC_DOCUMENT, MlflowSpec(uri="nosuch://x"), "tiny", "9.9.9")


def test_a_folder_uri_is_mlflows_file_store_allowed_for_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    tracked = start_mlflow_run(new_run_dir(tmp_path), SPEC_DOCUMENT, MlflowSpec(uri=uri), "tiny", "9.9.9")
    assert tracked.client.tracking_uri == uri and (tmp_path / "mlruns").is_dir()


class DeadClient:
    """Stands in for an MlflowClient whose server went away after the run started."""

    tracking_uri = "http://mlflow.invalid"

    def __init__(self) -> None:
        self.calls = 0

    def log_batch(self, *args, **kwargs) -> None:
        self.calls += 1
        raise ConnectionError("Max retries exceeded")


@needs_mlflow
@pytest.mark.parametrize(("stall", "calls"), [(3600, 3), (-1, 1)], ids=["quick-failures", "stalled"])
def test_a_server_gone_mid_run_is_not_waited_for_every_epoch(monkeypatch, stall, calls):
    """A call that failed quickly is tried again next epoch; one that took MLflow's minutes of retries is the last."""
    monkeypatch.setattr(tracking, "STALL_SECONDS", stall)
    client = DeadClient()
    run = MlflowRun(client, "abc")
    for epoch in (1, 2, 3):
        run.log_metrics({"loss": 1.0}, step=epoch)
    assert client.calls == calls and run.failures[0] == "ConnectionError: Max retries exceeded"
    assert any("not logged to MLflow" in f for f in run.failures) == (calls == 1)


def test_without_mlflow_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets when the extra is missing
    run_dir = new_run_dir(tmp_path)
    with pytest.raises(KexpError, match=r"pip install 'kexp\[mlflow\]'"):
        start_mlflow_run(run_dir, SPEC_DOCUMENT, MlflowSpec(uri="sqlite:///x.db"), "tiny", "9.9.9")
    assert not any(run_dir.iterdir())
