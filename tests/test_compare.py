"""`kexp runs` and `kexp compare` on generated run directories: small JSON and YAML files, no training."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from kexp.cli import app
from kexp.report.compare import compare_runs, write_compare
from kexp.report.runs import list_runs, render_runs, select_runs
from kexp.run.lifecycle import process_start_ticks

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def resolved_spec(name: str = "pima", seed: int = 0, hidden_units=(12, 8), learning_rate: float = 0.001, **changes) -> dict:
    """A spec as config.yaml holds it: every default filled in."""
    spec = {
        "name": name,
        "seed": seed,
        "seeds": None,
        "data": {"name": "pima", "path": "pima.csv", "test_fraction": 0.2, "split_seed": None},
        "model": {"name": "mlp", "hidden_units": list(hidden_units), "activation": "relu", "dropout": 0.0},
        "train": {"optimizer": {"name": "adam", "learning_rate": learning_rate}, "loss": "auto", "metrics": ["accuracy"], "epochs": 3, "batch_size": 10},
        "evaluation": {"protocol": "holdout", "k": 5, "repeats": 1, "save_models": False},
        "device": "auto",
    }
    spec.update(changes)
    return spec


def history_for(epochs: int, start: float = 0.7) -> dict:
    loss = [round(start - 0.1 * i, 4) for i in range(epochs)]
    accuracy = [round(0.5 + 0.05 * i, 4) for i in range(epochs)]
    return {"epochs": epochs, "epoch_seconds": [0.1] * epochs, "loss": loss, "accuracy": accuracy,
            "val_loss": [v + 0.05 for v in loss], "val_accuracy": [v - 0.02 for v in accuracy]}


def write_run(
    runs: Path,
    run_id: str,
    spec: dict | None = None,
    state: str = "completed",
    minutes_ago: float = 10,
    seconds: float = 30,
    epochs: int = 3,
    test: dict | None = None,
    train: dict | None = None,
    metrics_extra: dict | None = None,
    error: str | None = None,
    write_metrics: bool | None = None,
) -> Path:
    """A run directory as `kexp train` leaves it (model files left out: nothing here reads them)."""
    run = runs / run_id
    run.mkdir(parents=True)
    spec = spec or resolved_spec()
    (run / "config.yaml").write_text(f"# Resolved spec of run {run_id} (kexp 0.2.0)\n" + yaml.safe_dump(spec, sort_keys=False))
    started = NOW - timedelta(minutes=minutes_ago)
    status = {"state": state, "updated": started.isoformat(), "started": started.isoformat()}
    if state != "running":
        status["ended"] = (started + timedelta(seconds=seconds)).isoformat()
    else:  # alive: this very process, on this host
        status.update(pid=os.getpid(), pid_started=process_start_ticks(os.getpid()), host=socket.gethostname())
    if error:
        status["error"] = error
    (run / "status.json").write_text(json.dumps(status))
    (run / "env.json").write_text(json.dumps({"kexp": "0.2.0", "seed": spec["seed"], "started": status["started"], "ended": status.get("ended")}))
    (run / "history.json").write_text(json.dumps(history_for(epochs)))
    if write_metrics if write_metrics is not None else state in ("completed", "interrupted"):
        metrics = {
            "train": train or {"accuracy": 0.8, "loss": 0.4},
            "validation": {"accuracy": 0.76, "loss": 0.5},
            "test": test if test is not None else {"accuracy": 0.75, "loss": 0.52},
            "epochs_completed": epochs, "fit_seconds": seconds - 2, "wall_seconds": seconds,
            "task": "classification", "positive_class": "1", "data": {"task": "classification"},
        }
        metrics.update(metrics_extra or {})
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def kfold_extra() -> dict:
    """A 5-fold run's metrics.json additions: members and their aggregate, means at the top."""
    accuracies = [0.70, 0.74, 0.76, 0.78, 0.82]
    members = [{"name": f"fold-{i}", "seed": 0, "train": {"accuracy": 0.9}, "validation": None,
                "test": {"accuracy": a, "loss": 0.5}, "epochs_completed": 3} for i, a in enumerate(accuracies)]
    mean, std = statistics.mean(accuracies), statistics.stdev(accuracies)
    return {
        "protocol": "kfold", "members": members, "validation": None,
        "aggregate": {"test": {"accuracy": {"mean": mean, "std": std, "ci95": [mean - 0.05, mean + 0.05], "n": 5}}},
        "test": {"accuracy": mean, "loss": 0.5},
    }


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Seven runs: completed ones, failed, interrupted, running, damaged, a 5-fold and a train-protocol one."""
    runs = tmp_path / "runs"
    write_run(runs, "20261123-100000-pima-aaaa", minutes_ago=120, epochs=150, test={"accuracy": 0.74, "loss": 0.5})
    write_run(runs, "20261123-103000-mnist-bbbb", resolved_spec("mnist_mlp"), minutes_ago=90, epochs=20, test={"accuracy": 0.975, "loss": 0.08})
    write_run(runs, "20261123-110000-pima-cccc", state="failed", minutes_ago=60, epochs=2, error="TrainingError: loss became NaN at epoch 3")
    write_run(runs, "20261123-111000-sms-dddd", resolved_spec("sms_spam"), state="interrupted", minutes_ago=50, epochs=5, error="interrupted by SIGTERM")
    write_run(runs, "20261123-113000-imdb-eeee", resolved_spec("imdb"), state="running", minutes_ago=30, epochs=1)
    damaged = write_run(runs, "20261123-114000-pima-ffff", minutes_ago=20)
    (damaged / "metrics.json").write_text('{"train": {"accuracy": 0.8')  # truncated: the disk filled up mid-copy
    write_run(runs, "20261123-115000-pima_cv-gggg", resolved_spec("pima_cv"), minutes_ago=10, epochs=150, metrics_extra=kfold_extra())
    write_run(runs, "20261123-115500-pima_tutorial-hhhh", resolved_spec("pima_tutorial"), minutes_ago=5, epochs=150,
              test={}, train={"accuracy": 0.79, "loss": 0.45}, metrics_extra={"protocol": "train", "test": None, "validation": None})
    (runs / "notes.txt").write_text("not a run")
    (runs / "archive").mkdir()  # an unrelated folder: skipped, not "damaged"
    return runs


ALL_IDS = {
    "20261123-100000-pima-aaaa", "20261123-103000-mnist-bbbb", "20261123-110000-pima-cccc", "20261123-111000-sms-dddd",
    "20261123-113000-imdb-eeee", "20261123-114000-pima-ffff", "20261123-115000-pima_cv-gggg", "20261123-115500-pima_tutorial-hhhh",
}


def invoke(runner, *args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


# --------------------------------------------------------------------------- kexp runs


def test_runs_lists_every_run_in_every_format(runner, runs):
    table = invoke(runner, "runs", runs).splitlines()  # one line per run, columns aligned
    assert table[0].split() == ["id", "name", "dataset", "model", "status", "epochs", "measured", "metric", "duration", "age", "note"]
    assert sorted(line.split()[0] for line in table[1:]) == sorted(ALL_IDS)
    assert len({line.index(" pima ") for line in table if line.split()[1] == "pima"}) == 1
    kfold = next(line for line in table if "pima_cv" in line)
    assert re.search(r"completed +150  test accuracy \(kfold, n=5\) +0\.7600 ± 0\.0447 +30s  ", kfold)

    rows = json.loads(invoke(runner, "runs", runs, "--format", "json"))
    assert {r["id"]: r["status"] for r in rows} == {
        "20261123-100000-pima-aaaa": "completed", "20261123-103000-mnist-bbbb": "completed", "20261123-110000-pima-cccc": "failed",
        "20261123-111000-sms-dddd": "interrupted", "20261123-113000-imdb-eeee": "running", "20261123-114000-pima-ffff": "damaged",
        "20261123-115000-pima_cv-gggg": "completed", "20261123-115500-pima_tutorial-hhhh": "completed",
    }

    with_csv = list(csv.DictReader(io.StringIO(invoke(runner, "runs", runs, "--format", "csv"))))
    assert {r["id"] for r in with_csv} == ALL_IDS
    first = next(r for r in with_csv if r["id"] == "20261123-100000-pima-aaaa")
    assert (first["name"], first["dataset"], first["model"], first["epochs"], float(first["metric"]), float(first["duration"])) == ("pima", "pima", "mlp", "150", 0.74, 30.0)

    markdown = invoke(runner, "runs", runs, "--format", "markdown").splitlines()
    assert markdown[0].startswith("| id | name | dataset | model | status | epochs |") and markdown[1].startswith("|---|")
    assert len(markdown) == 2 + len(ALL_IDS) and all(any(run_id in line for line in markdown) for run_id in ALL_IDS)


def test_runs_main_metric_duration_and_age(runs):
    rows = {r["id"]: r for r in list_runs(runs, now=NOW)}
    holdout, kfold, tutorial = rows["20261123-100000-pima-aaaa"], rows["20261123-115000-pima_cv-gggg"], rows["20261123-115500-pima_tutorial-hhhh"]
    assert (holdout["measured"], holdout["metric"], holdout["metric_std"]) == ("test accuracy", 0.74, None)
    assert (holdout["duration"], holdout["age"]) == (30.0, 7200.0)
    assert kfold["measured"] == "test accuracy (kfold, n=5)"
    assert kfold["metric"] == pytest.approx(0.76) and kfold["metric_std"] == pytest.approx(statistics.stdev([0.70, 0.74, 0.76, 0.78, 0.82]))
    assert (tutorial["measured"], tutorial["metric"]) == ("train accuracy (on training rows)", 0.79)
    running = rows["20261123-113000-imdb-eeee"]
    assert (running["status"], running["epochs"], running["duration"], running["metric"]) == ("running", 1, None, None)
    assert "TrainingError: loss became NaN" in rows["20261123-110000-pima-cccc"]["note"]
    markdown = render_runs([kfold, tutorial], "markdown")
    assert "| 0.7600 ± 0.0447 |" in markdown and "| 10m00s |" in markdown and "| 5m00s |" in markdown


def test_runs_regression_shows_test_r2(tmp_path):
    write_run(tmp_path, "20261123-100000-houses-aaaa", resolved_spec("houses"), test={"loss": 3.1, "mae": 1.2, "rmse": 1.7, "r2": 0.64},
              metrics_extra={"task": "regression", "positive_class": None})
    [row] = list_runs(tmp_path, now=NOW)
    assert (row["measured"], row["metric"]) == ("test r2", 0.64)


def test_runs_damaged_directories_are_listed_with_a_note(runner, tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "20261123-100000-a-aaaa")
    (write_run(runs, "20261123-100100-b-bbbb") / "status.json").unlink()
    (write_run(runs, "20261123-100200-c-cccc") / "config.yaml").write_text("name: [unclosed\n")
    (write_run(runs, "20261123-100300-d-dddd") / "metrics.json").unlink()  # completed, yet no metrics
    (write_run(runs, "20261123-100400-e-eeee") / "status.json").write_text('{"state": "runn')
    (runs / "20261123-100500-f-ffff").mkdir()  # killed before it wrote a file
    rows = {r["id"]: r for r in list_runs(runs, now=NOW)}
    assert rows["20261123-100000-a-aaaa"]["status"] == "completed"
    notes = {run_id[-4:]: row["note"] for run_id, row in rows.items() if row["status"] == "damaged"}
    assert notes == {
        "bbbb": "status.json missing", "cccc": "config.yaml unreadable (ParserError)", "dddd": "metrics.json missing",
        "eeee": "status.json unreadable (JSONDecodeError)", "ffff": "config.yaml missing; status.json missing",
    }
    assert rows["20261123-100300-d-dddd"]["name"] == "pima"  # what could be read is still shown
    table = invoke(runner, "runs", runs).splitlines()
    assert len(table) == 7 and sum(" damaged " in line for line in table) == 5 and "config.yaml unreadable (ParserError)" in table[3]


def test_runs_filters_sorts_and_limits(runner, runs):
    def ids(*options):
        return [r["id"][-4:] for r in json.loads(invoke(runner, "runs", runs, "--format", "json", *options))]

    assert ids() == ["hhhh", "gggg", "ffff", "eeee", "dddd", "cccc", "bbbb", "aaaa"]  # newest first
    assert ids("--status", "failed") == ["cccc"]
    assert ids("--status", "running", "--status", "interrupted") == ["eeee", "dddd"]
    assert ids("--name", "pima") == ["hhhh", "gggg", "ffff", "cccc", "aaaa"]  # substring
    assert ids("--name", "pima_*") == ["hhhh", "gggg"]  # glob
    # epochs: 150, 20, 2, 5, 1, 3 (damaged: from history.json), 150, 150; ties keep newest first
    assert ids("--sort", "-epochs") == ["hhhh", "gggg", "aaaa", "bbbb", "dddd", "ffff", "cccc", "eeee"]
    assert ids("--sort", "epochs", "--limit", "3") == ["eeee", "cccc", "ffff"]
    assert ids("--sort", "-metric", "--limit", "2") == ["bbbb", "hhhh"]  # runs without a metric last
    assert ids("--sort", "name")[:2] == ["eeee", "bbbb"]  # imdb, mnist_mlp
    assert ids("--sort", "age") == ids()  # youngest first = newest first


def test_runs_bad_options_and_missing_directory(runner, tmp_path):
    result = runner.invoke(app, ["runs", str(tmp_path), "--sort", "speed"])
    assert result.exit_code == 2 and "sort by one of id, name" in result.output
    result = runner.invoke(app, ["runs", str(tmp_path), "--status", "done"])
    assert result.exit_code == 2 and "'done' is not one of running, completed" in result.output
    result = runner.invoke(app, ["runs", str(tmp_path / "nope")])
    assert result.exit_code == 1 and f"kexp: error: {tmp_path / 'nope'}: no such runs directory" in result.output


def test_runs_and_compare_never_import_tensorflow(runs, tmp_path):
    code = (
        "import sys\nfrom kexp import cli\n"
        f"for argv in (['runs', {str(runs)!r}], ['compare', {str(runs)!r} + '/*pima-*', '-o', {str(tmp_path / 'c.png')!r}]):\n"
        "    try:\n        cli.app(argv, prog_name='kexp')\n    except SystemExit as e:\n        assert e.code in (0, None), (argv, e.code)\n"
        "print('TF', 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("TF False False")


def test_runs_of_500_directories_takes_under_a_second(tmp_path):
    template = write_run(tmp_path / "template", "20261123-000000-pima-xxxx", metrics_extra=kfold_extra())
    files = {name: (template / name).read_bytes() for name in ("config.yaml", "status.json", "env.json", "history.json", "metrics.json")}
    runs = tmp_path / "runs"
    for i in range(500):
        run = runs / f"20261123-{i:06d}-pima-{i:04d}"
        run.mkdir(parents=True)
        for name, data in files.items():
            (run / name).write_bytes(data)
    start = time.perf_counter()
    rows = select_runs(list_runs(runs), sort="-metric")
    text = render_runs(rows, "markdown")
    seconds = time.perf_counter() - start
    assert len(rows) == 500 and text.count("\n") == 502
    assert seconds < 1.0, f"kexp runs over 500 directories took {seconds:.2f}s"


# --------------------------------------------------------------------------- kexp compare


def test_compare_shows_only_the_spec_keys_that_differ(runner, tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "20261123-100000-pima-aaaa", resolved_spec(hidden_units=[12, 8]), test={"accuracy": 0.74, "loss": 0.5})
    write_run(runs, "20261123-100100-pima-bbbb", resolved_spec(hidden_units=[64]), test={"accuracy": 0.77, "loss": 0.48})
    write_run(runs, "20261123-100200-pima-cccc", resolved_spec(hidden_units=[64], learning_rate=0.01), test={"accuracy": 0.71, "loss": 0.6})
    result = compare_runs(sorted(runs.iterdir()))
    assert result["differing_keys"] == ["model.hidden_units", "train.optimizer.learning_rate"]
    assert [r["label"] for r in result["runs"]] == ["hidden_units=[12, 8], learning_rate=0.001", "hidden_units=[64], learning_rate=0.001",
                                                    "hidden_units=[64], learning_rate=0.01"]
    assert [r["metrics"]["test accuracy"]["value"] for r in result["runs"]] == [0.74, 0.77, 0.71]
    assert result["groups"] == []  # no two runs differ only in seed

    table = invoke(runner, "compare", *sorted(runs.iterdir()), "-o", tmp_path / "c.png")
    header = next(line for line in table.splitlines() if "hidden_units" in line)
    assert "learning_rate" in header and "epochs" not in header and "activation" not in header and "seed" not in header
    assert "0.7700" in table and "0.7100" in table


def test_reruns_of_one_seed_are_named_as_reruns_not_as_seed_variation(runner, tmp_path):
    runs = tmp_path / "runs"
    for i, acc in enumerate([0.74, 0.74]):
        write_run(runs, f"20261123-10000{i}-pima-r{i}r{i}", resolved_spec(seed=3), test={"accuracy": acc, "loss": 0.5})
    (group,) = json.loads(invoke(runner, "compare", *sorted(runs.iterdir()), "--format", "json", "-o", tmp_path / "c.png"))["groups"]
    assert group["same_seed"] is True and group["label"].endswith("(reruns of seed 3, not other seeds)")


def test_compare_groups_runs_that_differ_only_in_seed(runner, tmp_path):
    runs = tmp_path / "runs"
    accuracies, losses = [0.74, 0.77, 0.71], [0.5, 0.45, 0.6]
    for i, (acc, loss) in enumerate(zip(accuracies, losses)):
        write_run(runs, f"20261123-10000{i}-pima-s{i}s{i}", resolved_spec(seed=i + 1), test={"accuracy": acc, "loss": loss})
    write_run(runs, "20261123-100100-pima-wide", resolved_spec(seed=1, hidden_units=[64]), test={"accuracy": 0.8, "loss": 0.4})
    write_run(runs, "20261123-100101-pima-wid2", resolved_spec(seed=2, hidden_units=[64], data={**resolved_spec()["data"], "split_seed": 7}),
              test={"accuracy": 0.78, "loss": 0.42})
    result = json.loads(invoke(runner, "compare", f"{runs}/*", "--format", "json", "-o", tmp_path / "c.png"))  # a quoted glob
    assert result["differing_keys"] == ["seed", "data.split_seed", "model.hidden_units"]
    first, second = result["groups"]
    assert (first["runs"], first["seeds"], first["label"]) == (["20261123-100000-pima-s0s0", "20261123-100001-pima-s1s1", "20261123-100002-pima-s2s2"], [1, 2, 3], "hidden_units=[12, 8]")
    mean, std = statistics.mean(accuracies), statistics.stdev(accuracies)
    half = 4.302652729911275 * std / 3**0.5  # t(0.975, df=2)
    summary = first["metrics"]["test accuracy"]
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(mean) and summary["std"] == pytest.approx(std)
    assert summary["ci95"] == pytest.approx([mean - half, mean + half])
    assert first["metrics"]["test loss"]["mean"] == pytest.approx(statistics.mean(losses))
    assert second["runs"] == ["20261123-100100-pima-wide", "20261123-100101-pima-wid2"]  # split_seed is a seed too
    assert second["metrics"]["test accuracy"]["mean"] == pytest.approx(0.79)

    table = invoke(runner, "compare", *sorted(runs.iterdir()), "-o", tmp_path / "c.png")
    assert "differ only in seed" in table and f"{mean:.4f} ± {std:.4f}" in table
    markdown = invoke(runner, "compare", *sorted(runs.iterdir()), "--format", "markdown", "-o", tmp_path / "c.png")
    assert f"| 3 | 3 | 1, 2, 3 | hidden_units=[12, 8] | {mean:.4f} ± {std:.4f} |" in markdown
    rows = list(csv.DictReader(io.StringIO(invoke(runner, "compare", *sorted(runs.iterdir()), "--format", "csv", "-o", tmp_path / "c.png"))))
    assert [r["kind"] for r in rows] == ["run"] * 5 + ["group"] * 2
    assert float(rows[5]["test accuracy"]) == pytest.approx(mean) and float(rows[5]["test accuracy std"]) == pytest.approx(std)


def test_compare_pools_the_members_of_a_repeated_run(tmp_path):
    runs = tmp_path / "runs"
    members = [{"name": f"seed-{seed}", "seed": seed, "train": {"accuracy": 0.9}, "validation": None, "test": {"accuracy": acc}, "epochs_completed": 3}
               for seed, acc in ((1, 0.7), (2, 0.8), (3, 0.9))]
    write_run(runs, "20261123-100000-pima-rep3", resolved_spec(seed=1, seeds=[1, 2, 3]), test={"accuracy": 0.8},
              metrics_extra={"protocol": "holdout", "members": members, "aggregate": {"test": {"accuracy": {"mean": 0.8, "std": 0.1, "n": 3}}}})
    write_run(runs, "20261123-100100-pima-one4", resolved_spec(seed=4), test={"accuracy": 0.6})
    result = compare_runs(sorted(runs.iterdir()))
    assert result["runs"][0]["protocol"] == "repeats"
    [group] = result["groups"]
    summary = group["metrics"]["test accuracy"]
    # four trainings (three seeds of one run and one run), not the mean of two runs' numbers
    assert (group["trainings"], group["seeds"], summary["n"]) == (4, [1, 2, 3, 4], 4)
    assert summary["mean"] == pytest.approx(0.75) and summary["std"] == pytest.approx(statistics.stdev([0.7, 0.8, 0.9, 0.6]))
    assert group["metrics"]["train accuracy"]["mean"] == pytest.approx((3 * 0.9 + 0.8) / 4)
    [row] = [r for r in list_runs(runs, now=NOW) if r["id"].endswith("rep3")]
    assert row["measured"] == "test accuracy (repeats, n=3)"


def test_compare_of_ten_runs_writes_png_and_json_in_under_3_seconds(runner, tmp_path):
    runs = tmp_path / "runs"
    for i in range(10):
        write_run(runs, f"20261123-1000{i:02d}-pima-r{i:03d}", resolved_spec(seed=i % 2, hidden_units=[8 * (i // 2 + 1)]), epochs=30 + i,
                  test={"accuracy": 0.7 + i / 100, "loss": 0.5})
    write_run(runs, "20261123-110000-pima-fold", resolved_spec("pima_cv"), metrics_extra=kfold_extra())
    (runs / "20261123-110000-pima-fold" / "history.json").unlink()
    (runs / "20261123-110000-pima-fold" / "folds" / "0").mkdir(parents=True)
    (runs / "20261123-110000-pima-fold" / "folds" / "0" / "history.json").write_text(json.dumps(history_for(4, start=1.0)))
    (runs / "20261123-110000-pima-fold" / "folds" / "1").mkdir()
    (runs / "20261123-110000-pima-fold" / "folds" / "1" / "history.json").write_text(json.dumps(history_for(2, start=0.8)))
    paths = sorted(runs.iterdir())
    (tmp_path / "out").mkdir()
    start = time.perf_counter()
    written = write_compare(compare_runs(paths), tmp_path / "out" / "curves.png")
    seconds = time.perf_counter() - start
    assert seconds < 3.0, f"compare of 11 runs took {seconds:.2f}s"
    assert written == {"png": tmp_path / "out" / "curves.png", "json": tmp_path / "out" / "curves.json"}
    assert written["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(written["json"].read_text())
    assert len(saved["runs"]) == 11 and saved["curve_metric"] == "accuracy" and len(saved["groups"]) == 5
    # a run of folds without its own history: each epoch's mean over the folds that reached it
    fold_curve = saved["curves"]["20261123-110000-pima-fold"]["loss"]
    assert fold_curve == pytest.approx([0.9, 0.8, 0.8, 0.7]) and saved["runs"][-1]["curves_averaged_over"] == 2

    # every number the table prints is in compare.json
    table = invoke(runner, "compare", *paths, "-o", tmp_path / "compare.png")
    saved = json.loads((tmp_path / "compare.json").read_text())
    numbers = {f"{v:.4f}" for r in saved["runs"] for m in r["metrics"].values() for v in (m["value"], m["std"]) if v is not None}
    numbers |= {f"{v:.4f}" for g in saved["groups"] for m in g["metrics"].values() for v in (m["mean"], m["std"]) if v is not None}
    assert set(re.findall(r"\d+\.\d{4}", table)) == numbers


def test_compare_legend_names_runs_by_their_differing_keys(tmp_path):
    runs = tmp_path / "runs"
    base = resolved_spec()
    mnist = {**base["data"], "name": "mnist"}
    write_run(runs, "20261123-100000-pima-aaaa", base)
    write_run(runs, "20261123-100100-pima-bbbb", resolved_spec(data=mnist, model={**base["model"], "name": "cnn", "dropout": 0.25}))
    write_run(runs, "20261123-100200-pima-cccc", resolved_spec(data=mnist, model={**base["model"], "name": "cnn", "dropout": 0.25}))
    labels = [r["label"] for r in compare_runs(sorted(runs.iterdir()))["runs"]]
    # data.name and model.name keep their section (a bare "name" would be ambiguous); dropout needs none; identical specs get their id
    assert labels == [
        "data.name=pima, model.name=mlp, dropout=0",
        "data.name=mnist, model.name=cnn, dropout=0.25 [20261123-100100-pima-bbbb]",
        "data.name=mnist, model.name=cnn, dropout=0.25 [20261123-100200-pima-cccc]",
    ]


def test_compare_errors_name_the_directory(runner, runs, tmp_path):
    result = runner.invoke(app, ["compare", str(runs), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 1 and f"kexp: error: {runs}: not a kexp run directory (config.yaml missing); to compare the runs in it: kexp compare '{runs}/*'" in result.output
    result = runner.invoke(app, ["compare", f"{runs}/*nothing*"])
    assert result.exit_code == 1 and f"{runs}/*nothing*: no run directories match" in result.output
    result = runner.invoke(app, ["compare", str(runs / "20261123-100000-pima-aaaa"), "-o", str(tmp_path / "no" / "c.png")])
    assert result.exit_code == 1 and f"{tmp_path / 'no'}: no such directory for c.png" in result.output
    result = runner.invoke(app, ["compare", str(runs / "20261123-100000-pima-aaaa"), "--format", "html"])
    assert result.exit_code == 2 and "'html' is not one of table, csv, json," in result.output


def test_compare_shows_failed_running_and_damaged_runs(runner, runs, tmp_path):
    result = json.loads(invoke(runner, "compare", f"{runs}/2026*", "--format", "json", "-o", tmp_path / "c.png"))
    statuses = {r["id"][-4:]: (r["status"], r["note"]) for r in result["runs"]}
    assert statuses["cccc"] == ("failed", "") and statuses["eeee"] == ("running", "")
    assert statuses["ffff"] == ("damaged", "metrics.json unreadable (JSONDecodeError)")
    failed = next(r for r in result["runs"] if r["id"].endswith("cccc"))
    assert all(cell["value"] is None for cell in failed["metrics"].values())
    assert result["curves"]["20261123-110000-pima-cccc"]["loss"] == history_for(2)["loss"]  # its finished epochs still drawn


def test_short_names_keep_a_top_level_key_that_is_the_tail_of_others():
    from kexp.report.compare import short_names

    assert short_names(["name", "data.name", "model.hidden_units"]) == {"name": "name", "data.name": "data.name", "model.hidden_units": "hidden_units"}


def test_compare_writes_beside_the_runs_by_default_and_names_the_file_it_wrote(runner, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    for i in range(2):
        write_run(runs, f"20261123-10000{i}-pima-d{i}d{i}", resolved_spec(seed=i), test={"accuracy": 0.7, "loss": 0.5})
    monkeypatch.chdir(tmp_path)
    compared = sorted(runs.iterdir())
    out = invoke(runner, "compare", *compared)
    assert (runs / "compare.png").is_file() and (runs / "compare.json").is_file() and not (tmp_path / "compare.png").exists()
    assert f"learning curves: {runs / 'compare.png'}" in out
    out = invoke(runner, "compare", *compared, "-o", tmp_path / "x")
    assert (tmp_path / "x.png").is_file() and f"learning curves: {tmp_path / 'x.png'}" in out and (tmp_path / "x.json").is_file()


def test_kexp_runs_says_how_many_sweep_trials_it_does_not_list(runner, tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "20261123-100000-pima-a0a0", resolved_spec(seed=0), test={"accuracy": 0.7, "loss": 0.5})
    for i in range(3):
        write_run(runs / "sweeps" / "20261123-110000-grid-abcd", f"trial-{i:03d}", resolved_spec(seed=i), test={"accuracy": 0.7, "loss": 0.5})
    result = runner.invoke(app, ["runs", str(runs)])
    assert result.exit_code == 0 and "20261123-100000-pima-a0a0" in result.stdout and "trial-000" not in result.stdout
    assert f"3 sweep trials in 1 sweep under {runs / 'sweeps'}/, not listed here (kexp runs {runs / 'sweeps'}/<sweep> lists" in result.stderr
