"""A search's summary (kexp.sweep.insight, summary_plots): history, importance and pruned trials, on generated sweep
directories written with kexp's own record writers; no training."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from kexp.cli import results as cli_results
from kexp.run.records import read_manifest, read_sweep_metric, write_history, write_manifest, write_metrics, write_status, write_sweep_spec
from kexp.sweep import summary_plots
from kexp.sweep.insight import optimization_history, param_importance, search_order
from kexp.sweep.summary import build_summary, write_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LR, ACT, UNITS = "train.optimizer.learning_rate", "model.activation", "model.hidden_units"
TPE_SPACE = {"method": "tpe", "params": {LR: {"low": 1e-4, "high": 1e-1, "log": True, "integer": False}, ACT: ["relu", "tanh"], UNITS: [[32], [64, 32]]},
             "samples": 10, "seeds": 1, "metric": None, "prune": "median"}
# (learning rate, activation, units, state): accuracy peaks at 1e-2 and hardly depends on the rest
TRIALS = [(1e-4, "relu", [32], "completed"), (3e-2, "tanh", [64, 32], "completed"), (1e-3, "relu", [64, 32], "completed"),
          (5e-4, "tanh", [32], "pruned"), (1.1e-2, "relu", [32], "completed"), (8e-2, "tanh", [32], "completed"),
          (2e-4, "relu", [64, 32], "pruned"), (9e-3, "tanh", [64, 32], "completed"), (5e-2, "relu", [32], "failed"),
          (3e-3, "tanh", [32], "completed")]


def accuracy(rate: float, activation: str) -> float:
    return 0.95 - 0.1 * abs(math.log10(rate) + 2) + (0.002 if activation == "relu" else 0.0)


def write_trial_run(run_dir: Path, rate: float, activation: str, state: str) -> None:
    """A run directory as kexp train leaves it: a pruned one stopped after 2 epochs, with history but no metrics.json."""
    run_dir.mkdir(parents=True)
    epochs = 2 if state == "pruned" else 5
    value = accuracy(rate, activation)
    write_history(run_dir, [0.5] * epochs, {"loss": [1.0 / (e + 1) for e in range(epochs)], "val_accuracy": [value - 0.1 + 0.01 * e for e in range(epochs)]})
    write_status(run_dir, state)
    if state == "completed":
        write_metrics(run_dir, {"train": {"accuracy": value + 0.02}, "validation": {"accuracy": value - 0.01}, "test": {"accuracy": value},
                                "task": "classification", "protocol": "holdout", "epochs_completed": epochs, "fit_seconds": 1.5, "wall_seconds": 2.0})


def tpe_sweep(sweep_dir: Path, space: dict = TPE_SPACE, rows: list = TRIALS) -> list[dict]:
    """sweep.yaml, manifest.json and every trial's run directory, as the tpe driver leaves them; the manifest's trials."""
    sweep_dir.mkdir(exist_ok=True)
    write_sweep_spec(sweep_dir, {"name": "search", "space": space})
    trials = []
    for number, (rate, activation, units, state) in enumerate(rows):
        trial_id = f"trial-{number:03d}"
        write_trial_run(sweep_dir / trial_id, rate, activation, state)
        trials.append({"id": trial_id, "number": number, "params": {LR: rate, ACT: activation, UNITS: units}, "seed": 0, "state": state,
                       "run_dir": trial_id, "started": f"2026-12-07T10:{number:02d}:00Z", "ended": f"2026-12-07T10:{number:02d}:30Z",
                       "command": f"python -m kexp train specs/{trial_id}.yaml", "value": accuracy(rate, activation) - 0.01 if state == "completed" else None,
                       **({"pruned_at": 2} if state == "pruned" else {})})
    write_manifest(sweep_dir, {"sweep": sweep_dir.name, "trials": trials})
    return read_manifest(sweep_dir)["trials"]


def summarize(sweep_dir: Path) -> dict:
    """What the driver does at the end of a sweep."""
    return write_summary(sweep_dir, read_manifest(sweep_dir)["trials"], read_sweep_metric(sweep_dir))


def test_best_names_the_trial_and_the_command_that_trains_its_spec_again(tmp_path):
    tpe_sweep(tmp_path)
    summary = summarize(tmp_path)
    best = summary["best"]
    assert summary["method"] == "tpe" and summary["metric"] == "accuracy"
    assert best["id"] == "trial-004" and best["params"][LR] == 1.1e-2 and best["part"] == "test"
    assert best["value"] == pytest.approx(accuracy(1.1e-2, "relu")) and best["run_dir"] == "trial-004"
    assert best["command"] == f"kexp train {tmp_path / 'specs' / 'trial-004.yaml'}"


def test_best_of_several_seeds_is_the_seed_with_the_best_value(tmp_path):
    rows = [(1e-2, "relu", [32], "completed"), (1e-3, "relu", [32], "completed"), (1e-3, "relu", [32], "completed")]
    trials = tpe_sweep(tmp_path, {**TPE_SPACE, "method": "grid"}, rows)
    trials[0]["params"] = trials[1]["params"]  # one point, three seeds: trial-000 is its best seed
    best = build_summary(tmp_path, trials, space={"method": "grid"})["best"]
    assert best["n"] == 3 and best["id"] == "trial-000"


def test_counts_history_and_pruned_trials(tmp_path):
    tpe_sweep(tmp_path)
    summary = summarize(tmp_path)
    assert summary["counts"] == {"completed": 7, "pruned": 2, "failed": 1}
    history = summary["history"]
    assert [e["id"] for e in history] == [f"trial-{i:03d}" for i in range(10)] and [e["number"] for e in history] == list(range(10))
    assert [e["state"] for e in history] == [t[3] for t in TRIALS]
    assert history[3]["value"] is None and history[8]["value"] is None  # pruned and failed: no final value
    assert history[0]["value"] == pytest.approx(accuracy(1e-4, "relu")) and history[0]["objective"] == pytest.approx(accuracy(1e-4, "relu") - 0.01)
    best_so_far = [e["best_so_far"] for e in history]
    assert best_so_far == sorted(best_so_far) and best_so_far[4] == best_so_far[-1] == pytest.approx(summary["best"]["value"])
    assert summary["pruned"] == [
        {"id": "trial-003", "params": {LR: 5e-4, ACT: "tanh", UNITS: [32]}, "pruned_at": 2, "epochs": 2, "monitor": "val_accuracy",
         "last_value": pytest.approx(accuracy(5e-4, "tanh") - 0.09)},
        {"id": "trial-006", "params": {LR: 2e-4, ACT: "relu", UNITS: [64, 32]}, "pruned_at": 2, "epochs": 2, "monitor": "val_accuracy",
         "last_value": pytest.approx(accuracy(2e-4, "relu") - 0.09)},
    ]
    pruned_row = next(r for r in summary["trials"] if r["id"] == "trial-003")
    assert pruned_row["state"] == "pruned" and pruned_row["test"] is None and pruned_row["epochs_completed"] == 2


def test_importance_ranks_the_learning_rate_first_and_sums_to_one_on_every_rewrite(tmp_path):
    tpe_sweep(tmp_path)
    importance = summarize(tmp_path)["importance"]
    assert set(importance["params"]) == {LR, ACT, UNITS} and sum(importance["params"].values()) == pytest.approx(1.0)
    assert max(importance["params"], key=importance["params"].get) == LR
    assert importance["reason"] is None and importance["trials"] == 7 and importance["part"] == "test"
    assert importance["evaluator"] in ("fanova", "ped-anova")
    assert summarize(tmp_path)["importance"] == importance  # the evaluator's seed is fixed


def test_without_scikit_learn_importance_comes_from_ped_anova(tmp_path, monkeypatch):
    tpe_sweep(tmp_path)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # fANOVA's forest is scikit-learn's
    importance = summarize(tmp_path)["importance"]
    assert importance["evaluator"] == "ped-anova" and sum(importance["params"].values()) == pytest.approx(1.0)
    assert max(importance["params"], key=importance["params"].get) == LR


def test_a_loss_history_keeps_the_lowest_value_so_far():
    trials = [{"id": f"t{i}", "number": i, "state": "completed"} for i in range(4)]
    rows = [{"state": "completed", "test": v} for v in (0.5, 0.7, 0.3, 0.4)]
    assert [e.best_so_far for e in optimization_history(trials, rows, "test", higher_is_better=False)] == [0.5, 0.5, 0.3, 0.3]
    assert [e.best_so_far for e in optimization_history(trials, rows, "test", higher_is_better=True)] == [0.5, 0.7, 0.7, 0.7]


def test_importance_is_none_with_a_reason(tmp_path, monkeypatch):
    rows = [{"id": f"t{i}", "state": "completed", "params": {LR: rate, ACT: "relu"}, "test": 0.9 - i / 10} for i, rate in enumerate((1e-3, 1e-2, 1e-1))]
    assert param_importance(rows[:1], "test", None, True).reason == "fewer than 2 completed trials"
    one = param_importance(rows, "test", None, True)  # the activation never changes: all of it is the learning rate's
    assert (one.params, one.evaluator) == ({LR: 1.0}, "the only parameter that varies")
    assert param_importance([{**r, "params": {ACT: "relu"}} for r in rows], "test", None, True).reason == \
        "no parameter varies among the completed trials"
    varied = [{**r, "params": {**r["params"], ACT: act}} for r, act in zip(rows, ("relu", "tanh", "relu"))]
    assert param_importance([{**r, "test": 0.5} for r in varied], "test", None, True).reason == "every completed trial has the same value"
    assert param_importance(varied, "test", None, True).params is not None  # no space known: the values seen are the choices
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert "optuna is not installed" in param_importance(varied, "test", None, True).reason


def test_csv_marks_pruned_trials_with_their_epoch_and_last_monitored_value(tmp_path):
    tpe_sweep(tmp_path)
    summarize(tmp_path)
    rows = list(csv.reader(io.StringIO((tmp_path / "summary.csv").read_text())))
    assert rows[0] == ["id", LR, ACT, UNITS, "seed", "state", "train_accuracy", "validation_accuracy", "test_accuracy", "epochs", "fit_seconds",
                       "pruned_at_epoch", "pruned_last_val_accuracy"]
    pruned = rows[4]
    assert pruned[:6] == ["trial-003", "0.0005", "tanh", "[32]", "0", "pruned"] and pruned[6:9] == ["", "", ""]
    assert pruned[9:11] == ["2", ""] and pruned[11] == "2" and float(pruned[12]) == pytest.approx(accuracy(5e-4, "tanh") - 0.09)
    assert rows[1][5] == "completed" and rows[1][9] == "5" and rows[1][11:] == ["", ""]


def test_a_tpe_figure_adds_the_history_and_importance_panels(tmp_path, monkeypatch):
    tpe_sweep(tmp_path)
    drawn = {}

    def spy(name, draw):
        def record(ax, summary):
            draw(ax, summary)
            drawn[name] = ax
        monkeypatch.setattr(summary_plots, name, record)

    spy("draw_history", summary_plots.draw_history)
    spy("draw_importance", summary_plots.draw_importance)
    summarize(tmp_path)
    assert (tmp_path / "summary.png").read_bytes()[:8] == PNG_MAGIC
    lines = {line.get_label(): line for line in drawn["draw_history"].get_lines()}
    assert set(lines) == {"trial", "best so far", "pruned (2)"}
    assert list(lines["pruned (2)"].get_xdata()) == [3, 6] and len(lines["trial"].get_xdata()) == 7
    bars = drawn["draw_importance"]
    assert [t.get_text() for t in bars.get_yticklabels()][-1] == "learning_rate"  # the most important on top
    figure = drawn["draw_importance"].figure
    assert [ax.get_xlabel() for ax in figure.axes] == [figure.axes[0].get_xlabel(), "trial", "epoch", "share of importance"]
    curves = json.loads((tmp_path / "summary.json").read_text())["curves"]
    assert {c["id"]: len(c["values"]) for c in curves if c["state"] == "pruned"} == {"trial-003": 2, "trial-006": 2}
    assert all(len(c["values"]) == 5 for c in curves if c["state"] == "completed") and curves[0]["monitor"] == "val_accuracy"
    pruned_lines = [line for line in figure.axes[2].get_lines() if line.get_marker() == "x"]
    assert [list(line.get_xdata()) for line in pruned_lines] == [[2], [2]]  # each pruned curve ends in a cross at its last epoch


def test_search_panels_only_for_tpe_or_a_long_random_search():
    tpe = {"method": "tpe", "history": [{}] * 3, "importance": {"params": {"a": 0.6, "b": 0.4}}}
    assert summary_plots.search_panels(tpe, 8) == ["history", "importance"]
    assert summary_plots.search_panels({**tpe, "curves": [{"id": "t"}]}, 8) == ["history", "curves", "importance"]
    assert summary_plots.search_panels({**tpe, "importance": {"params": {"a": 1.0}}}, 8) == ["history"]  # one parameter: no bars
    assert summary_plots.search_panels({**tpe, "importance": {"params": None, "reason": "x"}}, 8) == ["history"]
    assert summary_plots.search_panels({**tpe, "method": "random"}, 8) == []
    assert summary_plots.search_panels({**tpe, "method": "random", "history": [{}] * 8}, 8) == ["history", "importance"]
    assert summary_plots.search_panels({**tpe, "method": "grid", "history": [{}] * 20}, 8) == []
    assert summary_plots.search_panels({**tpe, "method": None}, 8) == []  # no sweep.yaml: as before


def test_trials_without_a_number_run_in_start_order():
    trials = [{"id": "a", "started": "2026-12-07T10:05:00Z"}, {"id": "b", "started": None}, {"id": "c", "started": "2026-12-07T10:01:00Z"}]
    assert search_order(trials) == [2, 0, 1]


def test_cli_prints_the_best_trial_its_command_the_pruned_count_and_the_importances(tmp_path, monkeypatch):
    tpe_sweep(tmp_path)
    recording = Console(record=True, width=300, soft_wrap=True)
    monkeypatch.setattr(cli_results, "console", recording)
    cli_results.print_sweep_summary(SimpleNamespace(summary=summarize(tmp_path), stopped_by=None, sweep_dir=tmp_path))
    text = recording.export_text()
    assert "trials: 7 completed, 2 pruned, 1 failed" in text
    best = next(line for line in text.splitlines() if line.startswith("best: "))
    assert best.startswith(f"best: trial-004, test accuracy {accuracy(1.1e-2, 'relu'):.4f} ({LR}=0.011, {ACT}=\"relu\", {UNITS}=[32])")
    assert best.endswith(f"reproduce: kexp train {tmp_path / 'specs' / 'trial-004.yaml'}")
    importance = next(line for line in text.splitlines() if line.startswith("parameter importance ("))
    assert "7 trials): " + LR in importance and ACT in importance and UNITS in importance
