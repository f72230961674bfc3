"""kexp.sweep.summary on generated trial directories: metrics.json and status.json only, no training."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from kexp.report.aggregate import summarize_values
from kexp.sweep import summary as sweep_summary
from kexp.sweep.summary import as_number, build_summary, draw_curves, write_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEY = "model.hidden_units.0"


def write_run(run_dir: Path, state: str = "completed", task: str = "classification", **parts: dict | None) -> None:
    """A trial's run directory as kexp train leaves it: status.json, and metrics.json when given parts or completed."""
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"state": state}))
    if state == "completed" or parts:
        metrics = {"train": None, "validation": None, "test": None, "task": task, "protocol": "holdout",
                   "epochs_completed": 5, "fit_seconds": 1.25, "wall_seconds": 2.0, **parts}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))


def trial(trial_id: str, params: dict, seed: int = 0, state: str = "completed", run_dir: str | None = None) -> dict:
    return {"id": trial_id, "params": params, "seed": seed, "state": state, "run_dir": run_dir or trial_id,
            "exit_code": 0 if state == "completed" else None, "attempts": 1}


def seeded_sweep(sweep_dir: Path) -> tuple[list[dict], dict[int, list[dict]]]:
    """hidden units 10 and 100, three seeds each: 100 units has the better accuracy, 10 units the lower loss."""
    results = {
        10: [{"accuracy": 0.90, "loss": 0.20}, {"accuracy": 0.92, "loss": 0.22}, {"accuracy": 0.88, "loss": 0.18}],
        100: [{"accuracy": 0.97, "loss": 0.30}, {"accuracy": 0.95, "loss": 0.34}, {"accuracy": 0.96, "loss": 0.29}],
    }
    trials = []
    for units, runs in results.items():
        for seed, test in enumerate(runs):
            trial_id = f"trial-{len(trials):03d}"
            write_run(sweep_dir / trial_id, train={"accuracy": test["accuracy"] + 0.02, "loss": test["loss"] - 0.05}, test=test)
            trials.append(trial(trial_id, {KEY: units}, seed=seed))
    return trials, results


def one_param_sweep(sweep_dir: Path, values: list, accuracies: list[float]) -> list[dict]:
    trials = []
    for i, (value, accuracy) in enumerate(zip(values, accuracies)):
        write_run(sweep_dir / f"trial-{i:03d}", train={"accuracy": accuracy + 0.01}, test={"accuracy": accuracy})
        trials.append(trial(f"trial-{i:03d}", {KEY: value}))
    return trials


def test_points_hold_mean_std_and_ci_over_seeds_as_summarize_values_computes_them(tmp_path):
    trials, results = seeded_sweep(tmp_path)
    summary = write_summary(tmp_path, trials)
    assert summary["metric"] == "accuracy" and summary["params"] == [KEY]
    assert [p["params"] for p in summary["points"]] == [{KEY: 10}, {KEY: 100}]
    for point, units in zip(summary["points"], (10, 100)):
        assert point["n"] == 3 and point["seeds"] == [0, 1, 2]
        assert point["test"] == summarize_values((r["accuracy"] for r in results[units]), "accuracy")
        assert point["train"] == summarize_values((r["accuracy"] + 0.02 for r in results[units]), "accuracy")
        assert point["validation"] == {"mean": None, "std": None, "ci95": [None, None], "n": 0}
    assert summary["points"][1]["test"]["mean"] == pytest.approx(0.96) and summary["points"][1]["test"]["std"] == pytest.approx(0.01)
    first = summary["trials"][0]
    assert first == {"id": "trial-000", "params": {KEY: 10}, "seed": 0, "state": "completed", "run_dir": "trial-000",
                     "train": pytest.approx(0.92), "validation": None, "test": 0.90, "epochs_completed": 5, "fit_seconds": 1.25}
    assert summary["complete"] is True and summary["counts"] == {"completed": 6}
    assert json.loads((tmp_path / "summary.json").read_text()) == summary  # strict JSON, every number written


def test_best_point_is_the_highest_accuracy_but_the_lowest_loss(tmp_path):
    trials, _ = seeded_sweep(tmp_path)
    by_accuracy = build_summary(tmp_path, trials, metric="accuracy")["best"]
    assert by_accuracy["params"] == {KEY: 100} and by_accuracy["part"] == "test"
    assert by_accuracy["value"] == pytest.approx(0.96) and by_accuracy["n"] == 3
    by_loss = build_summary(tmp_path, trials, metric="loss")
    assert by_loss["best"]["params"] == {KEY: 10} and by_loss["best"]["value"] == pytest.approx(0.20)
    assert by_loss["higher_is_better"] is False and by_loss["trials"][0]["test"] == 0.20


def test_best_point_falls_back_to_validation_then_train_when_no_test_part(tmp_path):
    write_run(tmp_path / "a", train={"accuracy": 0.99}, validation={"accuracy": 0.80})
    write_run(tmp_path / "b", train={"accuracy": 0.90}, validation={"accuracy": 0.85})
    trials = [trial("a", {KEY: 10}, run_dir="a"), trial("b", {KEY: 20}, run_dir="b")]
    best = build_summary(tmp_path, trials)["best"]
    assert best["part"] == "validation" and best["params"] == {KEY: 20}
    write_run(tmp_path / "c", train={"accuracy": 0.70})
    write_run(tmp_path / "d", train={"accuracy": 0.75})
    best = build_summary(tmp_path, [trial("c", {KEY: 1}, run_dir="c"), trial("d", {KEY: 2}, run_dir="d")])["best"]
    assert best["part"] == "train" and best["params"] == {KEY: 2}


def test_regression_defaults_to_compares_main_metric_and_lower_mae_wins(tmp_path):
    for name, r2, mae in (("a", 0.6, 3.0), ("b", 0.8, 2.0)):
        write_run(tmp_path / name, task="regression", train={"loss": 1.0, "mae": mae, "r2": r2}, test={"loss": 1.0, "mae": mae, "r2": r2})
    trials = [trial("a", {"train.optimizer.learning_rate": 0.1}, run_dir="a"), trial("b", {"train.optimizer.learning_rate": 0.01}, run_dir="b")]
    summary = build_summary(tmp_path, trials)
    assert summary["metric"] == "r2" and summary["best"]["params"] == {"train.optimizer.learning_rate": 0.01}
    write_run(tmp_path / "c", task="regression", test={"mae": 1.0})
    summary = build_summary(tmp_path, trials + [trial("c", {"train.optimizer.learning_rate": 1.0}, run_dir="c")], metric="mae")
    assert summary["best"]["params"] == {"train.optimizer.learning_rate": 1.0} and summary["best"]["value"] == 1.0


def test_csv_has_one_row_per_trial_with_each_param_and_the_metric_per_part(tmp_path):
    trials, _ = seeded_sweep(tmp_path)
    trials.append(trial("trial-006", {KEY: 1000}, state="failed"))
    write_summary(tmp_path, trials, metric="loss")
    rows = list(csv.reader(io.StringIO((tmp_path / "summary.csv").read_text())))
    assert rows[0] == ["id", KEY, "seed", "state", "train_loss", "validation_loss", "test_loss", "epochs", "fit_seconds"]
    assert [r[0] for r in rows[1:]] == [f"trial-{i:03d}" for i in range(7)]
    assert rows[1][:4] == ["trial-000", "10", "0", "completed"]
    assert float(rows[1][4]) == pytest.approx(0.15) and rows[1][5] == "" and float(rows[1][6]) == 0.20
    assert rows[1][7:] == ["5", "1.25"]
    assert rows[7] == ["trial-006", "1000", "0", "failed", "", "", "", "", ""]


def test_summary_png_is_written_as_a_png(tmp_path):
    trials, _ = seeded_sweep(tmp_path)
    write_summary(tmp_path, trials)
    assert (tmp_path / "summary.png").read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob(".summary.png*"))  # the temporary file was renamed into place


def test_two_parameters_draw_an_annotated_heat_map(tmp_path, monkeypatch):
    trials = []
    for i, (units, rate) in enumerate((u, r) for u in (10, 100) for r in (0.1, 0.01, 0.001)):
        write_run(tmp_path / f"t{i}", train={"accuracy": 0.9}, test={"accuracy": 0.5 + i / 20})
        trials.append(trial(f"t{i}", {KEY: units, "train.optimizer.learning_rate": rate}, run_dir=f"t{i}"))
    drawn = []
    heat_map = sweep_summary.draw_heat_map

    def spy(fig, ax, points, params, metric):
        heat_map(fig, ax, points, params, metric)
        drawn.append({"image": ax.get_images()[0].get_array(), "texts": [t.get_text() for t in ax.texts],
                      "labels": (ax.get_ylabel(), ax.get_xlabel()), "xticks": [t.get_text() for t in ax.get_xticklabels()]})

    monkeypatch.setattr(sweep_summary, "draw_heat_map", spy)
    summary = write_summary(tmp_path, trials)
    assert (tmp_path / "summary.png").read_bytes()[:8] == PNG_MAGIC
    assert len(drawn) == 1 and drawn[0]["labels"] == (KEY, "train.optimizer.learning_rate")
    assert drawn[0]["image"].shape == (2, 3) and drawn[0]["image"][1, 2] == pytest.approx(0.75)
    assert drawn[0]["xticks"] == ["0.1", "0.01", "0.001"] and "0.75" in drawn[0]["texts"] and len(drawn[0]["texts"]) == 6
    assert summary["best"]["params"] == {KEY: 100, "train.optimizer.learning_rate": 0.001}


def test_failed_and_pending_trials_are_counted_with_no_values(tmp_path):
    write_run(tmp_path / "ok", train={"accuracy": 0.9}, test={"accuracy": 0.8})
    write_run(tmp_path / "bad", state="failed", train={"accuracy": 0.1})  # numbers of a failed run are not its result
    trials = [trial("ok", {KEY: 10}, run_dir=str(tmp_path / "ok")),  # an absolute run_dir works like a relative one
              trial("bad", {KEY: 10}, seed=1, state="failed", run_dir="bad"),
              trial("later", {KEY: 50}, state="pending", run_dir="later"),
              trial("now", {KEY: 200}, state="running", run_dir="now")]
    summary = write_summary(tmp_path, trials)
    assert summary["complete"] is False and summary["counts"] == {"completed": 1, "running": 1, "pending": 1, "failed": 1}
    rows = {r["id"]: r for r in summary["trials"]}
    assert rows["ok"]["test"] == 0.8
    for trial_id in ("bad", "later", "now"):
        assert rows[trial_id]["train"] is None and rows[trial_id]["test"] is None and rows[trial_id]["epochs_completed"] is None
    assert [p["n"] for p in summary["points"]] == [1, 0, 0]
    assert summary["points"][0]["test"] == summarize_values([0.8]) and summary["points"][1]["test"]["mean"] is None
    assert summary["best"]["params"] == {KEY: 10}
    assert (tmp_path / "summary.png").read_bytes()[:8] == PNG_MAGIC


def test_a_sweep_with_no_completed_trial_still_writes_every_file(tmp_path):
    trials = [trial("a", {KEY: 10}, state="pending"), trial("b", {KEY: 20}, state="pending")]
    summary = write_summary(tmp_path, trials)
    assert summary["best"] is None and summary["metric"] == "accuracy" and summary["counts"] == {"pending": 2}
    assert (tmp_path / "summary.png").read_bytes()[:8] == PNG_MAGIC
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 3
    two = [trial("c", {KEY: 10, "model.activation": "relu"}, state="pending"), trial("d", {KEY: 20, "model.activation": "tanh"}, state="failed")]
    assert write_summary(tmp_path, two)["counts"] == {"pending": 1, "failed": 1}  # an empty heat map is not drawn
    assert (tmp_path / "summary.png").read_bytes()[:8] == PNG_MAGIC


def test_a_one_number_list_is_a_numeric_x_on_a_log_axis_when_it_spans_twenty_times(tmp_path):
    from matplotlib.figure import Figure

    assert as_number([100]) == 100.0 and as_number(100) == 100.0
    assert as_number([100, 50]) is None and as_number(True) is None and as_number("100") is None
    values = [[10], [200], [25], [50], [100], [150]]
    summary = build_summary(tmp_path, one_param_sweep(tmp_path, values, [0.90, 0.97, 0.93, 0.95, 0.96, 0.97]))
    ax = Figure().subplots()
    draw_curves(ax, summary["points"], summary["params"], summary["metric"])
    assert ax.get_xscale() == "log"
    test_line = next(line for line in ax.get_lines() if line.get_label() == "test")
    assert list(test_line.get_xdata()) == [10.0, 25.0, 50.0, 100.0, 150.0, 200.0]  # numeric, so sorted
    assert list(test_line.get_ydata()) == [0.90, 0.93, 0.95, 0.96, 0.97, 0.97]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "25", "50", "100", "150", "200"]
    assert {line.get_label() for line in ax.get_lines()} == {"train", "test"}  # no validation part, no validation line


def test_a_narrow_numeric_range_stays_linear_and_text_values_stay_in_the_given_order(tmp_path):
    from matplotlib.figure import Figure

    summary = build_summary(tmp_path, one_param_sweep(tmp_path, [10, 150, 100], [0.9, 0.95, 0.93]))
    ax = Figure().subplots()
    draw_curves(ax, summary["points"], summary["params"], summary["metric"])
    assert ax.get_xscale() == "linear"
    names = ["relu", "tanh", "elu"]
    sweep = tmp_path / "words"
    sweep.mkdir()
    summary = build_summary(sweep, one_param_sweep(sweep, names, [0.9, 0.8, 0.85]))
    ax = Figure().subplots()
    draw_curves(ax, summary["points"], summary["params"], summary["metric"])
    assert ax.get_xscale() == "linear" and [t.get_text() for t in ax.get_xticklabels()] == names


def test_several_seeds_draw_a_std_band_around_the_mean(tmp_path):
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    trials, _ = seeded_sweep(tmp_path)
    summary = build_summary(tmp_path, trials)
    ax = Figure().subplots()
    draw_curves(ax, summary["points"], summary["params"], summary["metric"])
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # train and test
    test_line = next(line for line in ax.get_lines() if line.get_label() == "test")
    assert list(test_line.get_ydata()) == pytest.approx([0.90, 0.96])
    lowest = min(v[1] for band in bands for v in band.get_paths()[0].vertices)
    assert lowest == pytest.approx(0.90 - 0.02)  # mean 0.90, std 0.02 at 10 units


def test_more_than_two_parameters_plot_each_point_on_a_categorical_axis(tmp_path):
    from matplotlib.figure import Figure

    trials = []
    for i, (units, rate, activation) in enumerate([(10, 0.1, "relu"), (100, 0.01, "tanh")]):
        write_run(tmp_path / f"t{i}", train={"accuracy": 0.9}, test={"accuracy": 0.8 + i / 10})
        trials.append(trial(f"t{i}", {KEY: units, "train.optimizer.learning_rate": rate, "model.activation": activation}, run_dir=f"t{i}"))
    summary = write_summary(tmp_path, trials)
    assert (tmp_path / "summary.png").read_bytes()[:8] == PNG_MAGIC
    ax = Figure().subplots()
    draw_curves(ax, summary["points"], summary["params"], summary["metric"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10, 0.1, relu", "100, 0.01, tanh"]
    assert ax.get_xlabel() == "hidden_units.0, learning_rate, activation"
