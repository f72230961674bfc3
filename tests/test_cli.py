"""`kexp` as a user runs it: exit codes, messages, and every file of a run directory."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kexp.cli import app
from kexp.spec import load_spec
from tests.conftest import smoke_spec, write_pima_csv, write_spec

RUN_FILES = {"config.yaml", "status.json", "env.json", "history.json", "metrics.json", "model.keras", "plots", "preprocessing", "log.txt", ".lock", "events.jsonl"}


def run_dirs(runs: Path) -> list[Path]:
    return sorted(runs.iterdir()) if runs.exists() else []


def test_help_and_validate_do_not_import_tensorflow(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec())
    code = (
        "import sys\nfrom kexp import cli\n"
        f"for argv in (['--help'], ['validate', {str(spec)!r}], ['models'], ['datasets']):\n"
        "    try:\n        cli.app(argv, prog_name='kexp')\n    except SystemExit as e:\n        assert e.code in (0, None), (argv, e.code)\n"
        "print('TF', 'tensorflow' in sys.modules)\n"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("TF False")
    assert time.perf_counter() - start < 5


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("kexp 0.")


def test_validate_reports_ok_and_resolved_spec(runner, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec())
    result = runner.invoke(app, ["validate", str(spec), "--show", "--set", "train.epochs=7"])
    assert result.exit_code == 0, result.output
    assert "valid (synthetic data, mlp model, 7 epochs)" in result.output
    assert "separation: 2.0" in result.output  # defaults are filled in


def test_invalid_spec_exits_2_and_writes_nothing(runner, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(trian={"epochs": 1}))
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs)])
    assert result.exit_code == 2
    assert f"kexp: error: {spec}:" in result.output and "trian: unknown key 'trian' (did you mean 'train'?)" in result.output
    assert run_dirs(runs) == []


def test_bad_override_exits_2(runner, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec())
    result = runner.invoke(app, ["train", str(spec), "--set", "train.epochs", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "kexp: error: --set train.epochs: expected KEY.PATH=VALUE" in result.output


def test_missing_data_exits_1_without_run_dir(runner, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(data={"name": "pima"}))
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs), "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "kexp: error: pima: data file not found" in result.output
    assert run_dirs(runs) == []


def test_gpu_request_without_gpu_is_one_line_error(runner, tmp_path):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(device="gpu"))
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "kexp: error: device 'gpu' was requested but TensorFlow" in result.output
    assert run_dirs(tmp_path / "runs") == []


@pytest.mark.slow
def test_validate_reports_every_problem_in_one_pass(runner, tmp_path):
    spec = smoke_spec(seed=-1, train={"epochs": 0})
    spec["data"]["colour"] = "red"
    spec["model"]["widht"] = 3
    result = runner.invoke(app, ["validate", str(write_spec(tmp_path / "s.yaml", spec))])
    assert result.exit_code == 2
    keys = [line.split(": ")[3] for line in result.output.splitlines()]
    assert keys == ["seed", "train.epochs", "data.colour", "model.widht"], result.output


def test_kfold_with_a_hold_out_is_refused_by_validate(runner, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(data={"name": "pima", "test_fraction": 0.3}, evaluation={"protocol": "kfold"}))
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2
    assert result.output.strip() == f"kexp: error: {spec}:5: data.test_fraction: must be 0 with evaluation.protocol: kfold, which tests on every row in turn (it is 0.3)"


def test_a_lowered_steps_per_execution_is_said(runner, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(train={"epochs": 1, "batch_size": 16, "steps_per_execution": 5}))
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(tmp_path / "runs"), "--log-format", "plain"])
    assert result.exit_code == 0, result.output
    # 96 training rows (120 less the 24 held out): 6 batches, whose largest divisor not above 5 is 3
    assert "warning: train.steps_per_execution 5 lowered to 3: a call never runs past the end of an epoch" in result.output
    (run,) = run_dirs(tmp_path / "runs")
    assert "lowered to 3" in (run / "events.jsonl").read_text()


def test_train_writes_complete_run_directory(runner, tmp_path):
    import keras
    import numpy as np

    spec_path = write_spec(tmp_path / "s.yaml", smoke_spec())
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(spec_path), "--runs-dir", str(runs), "--set", "train.epochs=3"])
    assert result.exit_code == 0, result.output
    [run] = run_dirs(runs)
    assert f"run directory: {run}" in result.output
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    history = json.loads((run / "history.json").read_text())
    assert history["epochs"] == 3 and len(history["loss"]) == 3 and len(history["val_accuracy"]) == 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["train"]) == {"loss", "accuracy"} and metrics["epochs_completed"] == 3
    assert metrics["test"]["accuracy"] > 0.8  # well-separated blobs
    # the validation hold-out comes out of the 90 training rows, before anything is fitted
    assert (metrics["data"]["train_size"], metrics["data"]["validation_size"], metrics["data"]["test_size"]) == (72, 18, 30)
    document = json.loads((run / "preprocessing" / "preprocessing.json").read_text())
    assert document["format"] == 1 and document["kind"] == "table" and document["task"] == "classification"
    assert document["class_names"] == ["class_0", "class_1", "class_2"] and document["state"]["feature_names"] == ["x0", "x1", "x2", "x3"]
    env = json.loads((run / "env.json").read_text())
    assert env["device"] == "/CPU:0" and env["seed"] == 0 and env["tensorflow"] and env["ended"]
    saved = load_spec(run / "config.yaml")
    assert saved.train.epochs == 3 and saved == load_spec(spec_path, ["train.epochs=3"])
    model = keras.models.load_model(run / "model.keras")
    assert model.predict(np.zeros((2, 4), dtype="float32"), verbose=0).shape == (2, 3)
    assert {p.name for p in (run / "plots").iterdir()} == {"loss.png", "accuracy.png"}


@pytest.mark.slow
def test_pima_csv_with_sequential_model_and_data_dir(runner, tmp_path, data_dir):
    write_pima_csv(data_dir / "pima-indians-diabetes.data.csv", rows=80)
    spec = {
        "name": "pima-seq",
        "data": {"name": "pima", "test_fraction": 0.25},
        "model": {"name": "sequential", "layers": [{"Dense": {"units": 4, "activation": "relu"}}, {"Dense": {"units": 1, "activation": "sigmoid"}}]},
        "train": {"epochs": 2, "batch_size": 8, "metrics": ["accuracy", "precision", "recall", "auc"]},
    }
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(write_spec(tmp_path / "p.yaml", spec)), "--runs-dir", str(runs), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    [run] = run_dirs(runs)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) == {"loss", "accuracy", "precision", "recall", "auc"}
    assert metrics["validation"] is None and metrics["data"]["test_size"] == 20
    document = json.loads((run / "preprocessing" / "preprocessing.json").read_text())
    assert document["class_names"] == ["0", "1"] and len(document["state"]["feature_names"]) == 8
    assert metrics["positive_class"] == "1" and metrics["data"]["positive_class"] == "1"


@pytest.mark.slow
def test_nan_loss_stops_the_run_as_diverged_with_exit_3(runner, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "huge.csv").write_text("\n".join(f"{3e38 * (i % 2 * 2 - 1)},{i % 2}" for i in range(40)))
    spec = smoke_spec(data={"name": "csv", "path": "huge.csv"}, train={"epochs": 3, "optimizer": {"name": "sgd", "learning_rate": 1e6}})
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(write_spec(tmp_path / "n.yaml", spec)), "--runs-dir", str(runs), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 3
    assert "kexp: error: loss became nan in epoch 1" in result.output
    [run] = run_dirs(runs)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "diverged" and "loss became nan" in status["error"] and status["exit_code"] == 3
    assert not (run / "model.keras").exists()  # no model from NaN weights
    # strict JSON: a reader that refuses NaN/Infinity (as RFC 8259 does) still parses every file
    for path in run.glob("*.json"):
        json.loads(path.read_text(), parse_constant=lambda name, path=path: pytest.fail(f"{path.name} holds {name}"))
    history = json.loads((run / "history.json").read_text())
    assert history["loss"] == [None] and history["non_finite"] == {"loss.0": "nan"}


@pytest.mark.slow
def test_early_stopping_ends_training_and_is_recorded(runner, tmp_path):
    spec = smoke_spec(train={"epochs": 50, "batch_size": 16, "validation_split": 0.2,
                             "early_stopping": {"monitor": "val_loss", "patience": 0, "min_delta": 10.0}})
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(write_spec(tmp_path / "e.yaml", spec)), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    [run] = run_dirs(runs)
    # epoch 1 sets the best val_loss; epoch 2 cannot improve it by 10, so training stops there
    assert json.loads((run / "metrics.json").read_text())["epochs_completed"] == 2
    assert json.loads((run / "history.json").read_text())["epochs"] == 2


@pytest.mark.long
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_records_interrupted_run_and_keeps_earlier_runs(tmp_path, sig):
    runs = tmp_path / "runs"
    earlier = runs / "20200101-000000-old-abcd"
    earlier.mkdir(parents=True)
    (earlier / "status.json").write_text('{"state": "completed"}')
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(data={"name": "synthetic", "samples": 4000}, train={"epochs": 500, "batch_size": 8}))
    proc = subprocess.Popen([sys.executable, "-m", "kexp", "train", str(spec), "--runs-dir", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    history = None
    while time.time() < deadline and history is None:
        time.sleep(0.2)
        found = [d / "history.json" for d in run_dirs(runs) if (d / "history.json").exists()]
        history = found[0] if found else None
    assert history is not None, "no epoch finished within 60 s"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert f"kexp: error: interrupted by {sig.name}" in err
    run = history.parent
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted" and status["signal"] == sig.name
    assert (run / "model.keras").exists()
    assert json.loads((earlier / "status.json").read_text()) == {"state": "completed"}


def test_datasets_and_models_list_options_as_json(runner):
    result = runner.invoke(app, ["datasets", "--json"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert {"csv", "pima", "mnist", "numpy", "synthetic"} <= set(rows)
    assert {"name": "flatten", "default": True} .items() <= next(o for o in rows["mnist"]["options"] if o["name"] == "flatten").items()
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and "hidden_units" in result.output and "sequential" in result.output


def test_configs_are_valid():
    from kexp.sweep.space import plan_sweep

    for config in sorted(Path("configs").glob("*.yaml")):
        is_sweep = "\nsweep:" in config.read_text()
        spec = plan_sweep(config, [], []).specs["trial-000"] if is_sweep else load_spec(config)
        assert spec.name == config.stem or spec.name.replace("-", "_") == config.stem, config
        first = config.read_text().splitlines()[0]
        assert first.startswith("# "), f"{config} must open with a comment saying what it reproduces"
        assert ("kexp sweep" if is_sweep else "kexp train") in config.read_text(), f"{config} must give its command"


# --- issue 6: checked before any data is read ----------------------------------------------

CRASHED_AFTER_LOADING = [
    ("seed=99999999999", "seed: Input should be less than 4294967296"),
    ("train.loss=mean_squared_error", "train.loss: 'mean_squared_error' is a regression loss and this is a classification task"),
    ("train.loss=hinge", "train.loss: 'hinge' is a margin loss"),
    ("model.activation=relux", "model.activation"),
    # the problem is reported where train.metrics is written: the file's line 10
    ("data.name=mnist", "s.yaml:10: train.metrics: 'precision' needs a binary task with one sigmoid output, but this task has 10 classes"),
    ("model={name: sequential, layers: [{Dense: {unit: 1}}]}", "model.layers"),
    ("model={name: sequential, layers: [{TFSMLayer: {filepath: /no/such/model}}]}", "model.layers"),
    ("train.epochs=true", "train.epochs: Input should be a valid integer"),
]


@pytest.mark.parametrize("override, message", CRASHED_AFTER_LOADING)
@pytest.mark.parametrize("command", ["validate", "train"])
def test_problems_that_crashed_after_loading_exit_2_before_reading_data(runner, tmp_path, command, override, message):
    # pima with no data directory: a command that read data would fail with exit 1 instead
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(data={"name": "pima"}, train={"metrics": ["accuracy", "precision"]}))
    runs = tmp_path / "runs"
    extra = ["--data-dir", str(tmp_path / "nowhere")] if command == "train" else []
    result = runner.invoke(app, [command, str(spec), "--set", override, "--runs-dir", str(runs), *extra])
    assert result.exit_code == 2, result.output
    origin = f"{spec.parent}/" if message.startswith("s.yaml") else f"--set {override}: "
    assert f"kexp: error: {origin}{message}" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert run_dirs(runs) == []


def test_alias_bomb_answers_in_under_a_second(tmp_path):
    from tests.test_spec import alias_bomb

    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kexp", "validate", str(path)], capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - start
    assert done.returncode == 2 and "YAML anchor '&a0' is not allowed in a spec" in done.stderr
    assert took < 5  # the process, Python start-up included; the check itself is timed in test_spec


@pytest.mark.parametrize("command", ["validate", "train"])
def test_unusable_runs_dir_is_found_before_the_data(runner, tmp_path, command):
    (tmp_path / "a-file").write_text("")
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(data={"name": "pima"}))
    result = runner.invoke(app, [command, str(spec), "--runs-dir", str(tmp_path / "a-file" / "runs"), "--data-dir", str(tmp_path / "nowhere")][: 4 if command == "validate" else 6])
    assert result.exit_code == 1
    assert result.output == f"kexp: error: cannot create the runs directory {tmp_path / 'a-file' / 'runs'}: {tmp_path / 'a-file'} is not a directory; choose another with --runs-dir\n"


@pytest.mark.slow
def test_run_files_respect_the_umask(runner, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        result = runner.invoke(app, ["train", str(write_spec(tmp_path / "s.yaml", smoke_spec())), "--runs-dir", str(tmp_path / "runs"), "--set", "train.epochs=1"])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    [run] = run_dirs(tmp_path / "runs")
    modes = {p.relative_to(run).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*") if p.is_file()}
    assert {"config.yaml", "status.json", "metrics.json", "history.json", "env.json", "model.keras"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes


@pytest.mark.parametrize("override, message", [
    ("train.metrics=[accuracy, recall]", "train.metrics: 'recall' needs a binary task with one sigmoid output, but this task has 3 classes"),
    ("train.loss=binary_crossentropy", "train.loss: binary_crossentropy needs 2 classes, the data has 3"),
])
def test_task_checks_that_need_the_data_exit_2_before_a_run_directory(runner, tmp_path, data_dir, override, message):
    (data_dir / "three.csv").write_text("".join(f"{i},{i % 5},{'abc'[i % 3]}\n" for i in range(30)))
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(data={"name": "csv", "path": "three.csv"}))
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(spec), "--set", override, "--runs-dir", str(runs), "--data-dir", str(data_dir)])
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"kexp: error: {message}") and line.endswith("(found after reading the data)")
    assert run_dirs(runs) == []


def test_validation_split_leaving_no_training_rows_exits_2_without_a_run_directory(runner, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(data={"name": "synthetic", "samples": 30, "classes": 3}))
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(spec), "--set", "train.validation_split=0.95", "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    assert "kexp: error: train.validation_split: class 'class_0' (3 rows) has no row in the train split at 0.95; use at most" in result.output
    assert run_dirs(runs) == []


@pytest.mark.slow
def test_csv_regression_trains_a_linear_output_and_reports_regression_metrics(runner, tmp_path, data_dir):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = x @ [1.5, -2.0, 0.5] + 3.0
    (data_dir / "reg.csv").write_text("a,b,c,target\n" + "".join(f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{t:.4f}\n" for r, t in zip(x, y)))
    spec = smoke_spec(data={"name": "csv", "path": "reg.csv", "task": "regression", "label_column": "target", "test_fraction": 0.2},
                      train={"epochs": 60, "batch_size": 16, "optimizer": {"name": "adam", "learning_rate": 0.05}})
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(write_spec(tmp_path / "r.yaml", spec)), "--runs-dir", str(runs), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    [run] = run_dirs(runs)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "regression" and metrics["loss_function"] == "mean_squared_error"
    assert set(metrics["test"]) == {"loss", "mae", "rmse", "r2"}
    assert metrics["test"]["r2"] > 0.9  # a linear target: nearly all variance explained
    assert metrics["data"]["test_size"] == 40 and "test_target" in metrics["data"]
    document = json.loads((run / "preprocessing" / "preprocessing.json").read_text())
    assert document["task"] == "regression" and document["class_names"] == []


def test_messages_print_text_as_written_not_as_emoji(runner, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", smoke_spec(data={"name": "csv", "path": "no:x:.csv"}))
    result = runner.invoke(app, ["train", str(spec), "--data-dir", str(tmp_path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and f"looked for {tmp_path}/no:x:.csv" in result.output


# --- issue 8: evaluation protocols and repeats -----------------------------------------------


@pytest.mark.long
@pytest.mark.slow
def test_kfold_run_keeps_each_fold_and_aggregates_them(runner, tmp_path):
    import statistics

    spec = smoke_spec(data={"name": "synthetic", "samples": 120, "features": 4, "classes": 3, "test_fraction": 0.0},
                      train={"epochs": 1, "batch_size": 16}, evaluation={"protocol": "kfold", "k": 3, "save_models": True})
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(write_spec(tmp_path / "k.yaml", spec)), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "kfold: mean ± std [95% CI] over 3 members" in result.output
    [run] = run_dirs(runs)
    metrics = json.loads((run / "metrics.json").read_text())
    folds = [json.loads((run / "folds" / str(i) / "metrics.json").read_text()) for i in range(3)]
    accuracies = [fold["test"]["accuracy"] for fold in folds]
    summary = metrics["aggregate"]["test"]["accuracy"]
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(statistics.mean(accuracies))
    assert summary["std"] == pytest.approx(statistics.stdev(accuracies))
    assert metrics["test"]["accuracy"] == pytest.approx(summary["mean"]) and metrics["protocol"] == "kfold"
    assert sum(fold["data"]["test_size"] for fold in folds) == 120  # every row tested once
    assert all((run / "folds" / str(i) / name).exists() for i in range(3) for name in ("history.json", "model.keras", "preprocessing"))
    assert not (run / "model.keras").exists()  # no single model for a k-fold run
    assert "balanced_accuracy" in metrics["aggregate"]["report"]
    reuse = runner.invoke(app, ["evaluate", str(run)])
    assert reuse.exit_code == 1 and "a kfold run of 3 members has no single model" in reuse.output


@pytest.mark.long
@pytest.mark.slow
def test_repeat_trains_distinct_seeds_on_one_split(runner, tmp_path):
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(write_spec(tmp_path / "s.yaml", smoke_spec(train={"epochs": 1}))), "--repeat", "3", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    [run] = run_dirs(runs)
    metrics = json.loads((run / "metrics.json").read_text())
    assert [m["seed"] for m in metrics["members"]] == [0, 1, 2] and metrics["protocol"] == "holdout"
    assert sorted(p.name for p in (run / "repeats").iterdir()) == ["0", "1", "2"]
    assert "seeds:\n- 0\n- 1\n- 2" in (run / "config.yaml").read_text()  # the saved spec repeats the run exactly


@pytest.mark.slow
def test_score_on_training_rows_is_labelled_and_balanced_weights_train(runner, tmp_path, data_dir):
    write_pima_csv(data_dir / "pima-indians-diabetes.data.csv", rows=60)
    spec = smoke_spec(data={"name": "pima"}, train={"epochs": 1, "batch_size": 8, "class_weight": "balanced"}, evaluation={"protocol": "train"})
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(write_spec(tmp_path / "p.yaml", spec)), "--runs-dir", str(runs), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "scored on its training rows" in result.output and "scored on the training rows, not an estimate" in result.output
    metrics = json.loads(next(runs.iterdir()).joinpath("metrics.json").read_text())
    assert metrics["protocol"] == "train" and metrics["test"] is None and metrics["report"]["part"] == "train"
    assert set(metrics["report"]["per_class"]) == {"0", "1"}


FAST_EXIT_PROBE = (
    "import atexit, sys\n"
    "sys.modules.setdefault('tensorflow', type(sys)('tensorflow'))  # as after training: TensorFlow loaded\n"
    "class Finalized:\n"
    "    def __del__(self):\n"
    "        print('interpreter teardown ran', flush=True)\n"
    "keep = Finalized()\n"
    "atexit.register(lambda: print('atexit ran', flush=True))\n"
    "sys.argv = ['kexp', 'validate', 'missing.yaml']\n"
    "print('buffered line', end='')\n"
    "from kexp.cli import main\n"
    "main()\n"
)


@pytest.mark.parametrize("fast", [True, False])
def test_exit_after_tensorflow_skips_interpreter_teardown_but_not_atexit(tmp_path, fast):
    env = {**__import__("os").environ, "KEXP_FAST_EXIT": "1" if fast else "0"}
    done = subprocess.run([sys.executable, "-c", FAST_EXIT_PROBE], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert "kexp: error: missing.yaml: file not found" in done.stderr
    assert "buffered line" in done.stdout and "atexit ran" in done.stdout  # flushed, handlers run
    # the second of teardown is skipped only on the fast path
    assert ("interpreter teardown ran" in done.stdout) is (not fast)
