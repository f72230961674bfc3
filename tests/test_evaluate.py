"""kexp evaluate: a run's saved model on its own data parts reproduces metrics.json, and says why when it cannot."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kexp.cli import app
from tests.conftest import smoke_spec, write_pima_csv, write_spec

pytestmark = pytest.mark.slow


# --- trained runs (module scope: training is the slow part) ----------------------------------


def train(tmp: Path, spec: dict, data_dir: Path) -> Path:
    runs = tmp / "runs"
    result = CliRunner().invoke(app, ["train", str(write_spec(tmp / f"{spec['name']}.yaml", spec)), "--runs-dir", str(runs), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    return run


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory) -> Path:
    """Synthetic blobs, 3 classes, a validation part."""
    tmp = tmp_path_factory.mktemp("three")
    return train(tmp, smoke_spec(), tmp)


@pytest.fixture(scope="module")
def binary_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("binary_data")
    write_pima_csv(folder / "pima.csv", rows=80)
    return folder


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory, binary_data) -> Path:
    """A binary CSV run, standardized (so skipping the saved preprocessing would change the numbers), no validation part."""
    spec = {
        "name": "binary", "seed": 0,
        "data": {"name": "csv", "path": "pima.csv", "standardize": True, "test_fraction": 0.3},
        "model": {"name": "mlp", "hidden_units": [8]},
        "train": {"epochs": 2, "batch_size": 8, "metrics": ["accuracy", "precision", "recall", "auc"]},
    }  # fmt: skip
    return train(tmp_path_factory.mktemp("binary"), spec, binary_data)


def evaluate(run: Path, *args: str, data_dir: Path | None = None):
    extra = ["--data-dir", str(data_dir if data_dir is not None else run.parent.parent)]
    return CliRunner().invoke(app, ["evaluate", str(run), *args, *extra])


def evaluate_json(run: Path, *args: str, data_dir: Path | None = None) -> dict:
    result = evaluate(run, "--json", *args, data_dir=data_dir)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def training_files(run: Path) -> dict[str, str]:
    """sha256 of every file training wrote (everything outside evaluations/)."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.relative_to(run).parts[0] != "evaluations"
    }


def copy_run(run: Path, tmp_path: Path) -> Path:
    """A copy beside the original's data (same runs-dir layout), so damage never reaches the shared fixture."""
    target = tmp_path / "runs" / run.name
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("evaluations"))
    return target


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kexp: error: ")
    return lines[0]


# --- reproducing training's numbers ----------------------------------------------------------


@pytest.mark.parametrize("which", ["three_class_run", "binary_run"])
def test_evaluate_reproduces_the_test_metrics_of_metrics_json(which, request, binary_data):
    run = request.getfixturevalue(which)
    data_dir = binary_data if which == "binary_run" else run.parent.parent
    recorded = json.loads((run / "metrics.json").read_text())["test"]
    result = evaluate_json(run, data_dir=data_dir)
    assert result["splits"] == ["test"]
    measured = result["results"]["test"]["metrics"]
    assert set(measured) == set(recorded)
    for name in recorded:
        assert measured[name] == pytest.approx(recorded[name], abs=1e-6), name
    # the prediction-based accuracy agrees with Keras' own (same 0.5 threshold / argmax)
    assert result["results"]["test"]["accuracy"] == pytest.approx(measured["accuracy"], abs=1e-6)


def new_files(folder: Path, before: set[Path]) -> list[Path]:
    return sorted(set(folder.glob("*")) - before) if folder.exists() else []


def test_evaluation_json_and_confusion_png_are_written_and_training_files_untouched(three_class_run):
    before = training_files(three_class_run)
    folder = three_class_run / "evaluations"
    existing = set(folder.glob("*"))
    result = evaluate_json(three_class_run)
    assert training_files(three_class_run) == before
    (path,) = [p for p in new_files(folder, existing) if p.suffix == ".json"]
    assert re.fullmatch(r"\d{8}T\d{6}Z(-\d+)?", path.stem)
    on_disk = json.loads(path.read_text())
    assert on_disk == result  # --json prints the file
    assert on_disk["kexp"] and on_disk["split"] == "test" and on_disk["data"]["data_dir"]
    png = path.parent / result["plots"]["test"]
    assert png.name == f"{path.stem}-confusion-test.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_confusion_matrix_rows_are_true_classes_with_per_class_table(three_class_run):
    data = json.loads((three_class_run / "metrics.json").read_text())["data"]
    test = evaluate_json(three_class_run)["results"]["test"]
    matrix = np.array(test["confusion_matrix"])
    names = data["class_names"]
    assert matrix.shape == (3, 3) and test["class_names"] == names
    assert matrix.sum(axis=1).tolist() == [data["test_classes"][n] for n in names]
    assert [test["per_class"][n]["support"] for n in names] == [data["test_classes"][n] for n in names]
    recalls = np.diag(matrix) / matrix.sum(axis=1)
    assert [test["per_class"][n]["recall"] for n in names] == pytest.approx(recalls.tolist())
    assert test["balanced_accuracy"] == pytest.approx(recalls.mean())


def test_binary_run_names_its_positive_class(binary_run, binary_data):
    result = evaluate_json(binary_run, data_dir=binary_data)
    assert result["class_names"] == ["0", "1"] and result["positive_class"] == "1"
    test = result["results"]["test"]
    # Keras' precision is the positive class's precision
    assert test["per_class"]["1"]["precision"] == pytest.approx(test["metrics"]["precision"], abs=1e-6)
    assert test["per_class"]["1"]["recall"] == pytest.approx(test["metrics"]["recall"], abs=1e-6)


def test_table_output_shows_each_split_and_the_evaluation_path(three_class_run):
    result = evaluate(three_class_run, "--split", "all")
    assert result.exit_code == 0, result.output
    for text in ("train:", "validation:", "test:", "per class", "balanced_accuracy", "class_2", "evaluation: "):
        assert text in result.stdout


# --- choosing parts --------------------------------------------------------------------------


def test_split_all_evaluates_every_part_the_run_has(three_class_run, binary_run, binary_data):
    three = evaluate_json(three_class_run, "--split", "all")
    assert three["splits"] == ["train", "validation", "test"]
    recorded = json.loads((three_class_run / "metrics.json").read_text())
    assert recorded["train_metrics_from"] == "last_epoch"  # training saved its own pass over the train part...
    for part in three["splits"]:
        if part != "train":
            assert three["results"][part]["metrics"]["loss"] == pytest.approx(recorded[part]["loss"], abs=1e-6)
        assert three["results"][part]["rows"] == recorded["data"][f"{part}_size"]
    assert three["results"]["train"]["metrics"]["loss"] != recorded["train"]["loss"]  # ...which kexp evaluate makes, dropout off
    stem = three["plots"]["test"].removesuffix("-confusion-test.png")
    assert three["plots"] == {part: f"{stem}-confusion-{part}.png" for part in ("train", "validation", "test")}
    assert all((three_class_run / "evaluations" / name).is_file() for name in three["plots"].values())
    assert evaluate_json(binary_run, "--split", "all", data_dir=binary_data)["splits"] == ["train", "test"]


def test_a_part_the_run_does_not_have_is_a_one_line_error(binary_run, binary_data):
    result = evaluate(binary_run, "--split", "validation", data_dir=binary_data)
    assert result.exit_code == 2
    line = error_line(result)
    assert "--split validation" in line and "train.validation_split is 0" in line


def test_without_split_a_run_with_no_test_part_evaluates_the_part_it_was_scored_on(binary_data, tmp_path_factory):
    """Pima's tutorial scores its training rows: a bare `kexp evaluate` must not fail on it."""
    spec = {"name": "trainonly", "seed": 0, "data": {"name": "csv", "path": "pima.csv", "test_fraction": 0},
            "model": {"name": "mlp", "hidden_units": [4]}, "train": {"epochs": 1, "batch_size": 8}}  # fmt: skip
    run = train(tmp_path_factory.mktemp("trainonly"), spec, binary_data)
    result = evaluate(run, data_dir=binary_data)
    assert result.exit_code == 0, result.output
    assert "no --split given and the run has no test part (data.test_fraction is 0): evaluating the train part" in result.stdout
    assert "train: 80 rows" in result.stdout
    document = evaluate_json(run, data_dir=binary_data)
    assert document["split"] == "train" and document["splits"] == ["train"] and document["split_note"].startswith("no --split given")


def test_without_split_a_run_with_a_test_part_evaluates_it_and_says_so(binary_run, binary_data):
    result = evaluate(binary_run, data_dir=binary_data)
    assert result.exit_code == 0, result.output
    assert "no --split given: evaluating the test part" in result.stdout and "test: 24 rows" in result.stdout


def test_the_table_says_why_train_differs_and_fills_balanced_accuracys_recorded_value(three_class_run):
    recorded = json.loads((three_class_run / "metrics.json").read_text())
    result = evaluate(three_class_run, "--split", "all")
    assert result.exit_code == 0, result.output
    assert "note: metrics.json's train figures are the last epoch's running means over its batches" in result.stdout
    rows = [line.split("│") for line in result.stdout.splitlines() if "balanced_accuracy" in line]
    recorded_column = [row[-2].strip() for row in rows]  # train, validation, test: only the test part was reported in metrics.json
    assert recorded_column == ["-", "-", f"{recorded['report']['balanced_accuracy']:.4f}"]
    document = evaluate_json(three_class_run, "--split", "all")
    assert document["results"]["test"]["recorded_metrics"]["balanced_accuracy"] == recorded["report"]["balanced_accuracy"]
    assert document["results"]["test"]["recorded_note"] is None and document["results"]["train"]["recorded_note"]


def test_an_unknown_split_lists_the_choices(three_class_run):
    result = evaluate(three_class_run, "--split", "tests")
    assert result.exit_code == 2
    assert "--split tests: choose from train, validation, test, all" in error_line(result)


# --- the data ---------------------------------------------------------------------------------


def test_changed_data_is_refused_naming_the_file_unless_allowed(binary_run, binary_data, tmp_path):
    changed = tmp_path / "data"
    shutil.copytree(binary_data, changed)
    csv = changed / "pima.csv"
    csv.write_text(csv.read_text().replace("0.", "0.1", 1))
    refused = evaluate(binary_run, data_dir=changed)
    assert refused.exit_code == 1
    line = error_line(refused)
    assert str(csv) in line and "--allow-changed-data" in line
    allowed = evaluate(binary_run, "--allow-changed-data", "--json", data_dir=changed)
    assert allowed.exit_code == 0, allowed.output
    warnings = json.loads(allowed.stdout)["warnings"]
    assert len(warnings) == 1 and str(csv) in warnings[0]
    assert f"kexp: warning: {warnings[0]}" in " ".join(allowed.stderr.split())


def test_without_data_dir_the_run_reads_where_it_read_when_trained(binary_run, monkeypatch):
    monkeypatch.delenv("KEXP_DATA_DIR", raising=False)
    monkeypatch.chdir(binary_run.parent)  # ./data does not exist here
    result = CliRunner().invoke(app, ["evaluate", str(binary_run), "--json"])
    assert result.exit_code == 0, result.output
    assert Path(json.loads(result.stdout)["data"]["files"][0]["path"]).name == "pima.csv"


# --- damaged runs ----------------------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_text(path.read_text()[: len(path.read_text()) // 2])


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


DAMAGE = {
    "no model.keras": (lambda run: (run / "model.keras").unlink(), "model.keras"),
    "truncated metrics.json": (lambda run: truncate(run / "metrics.json"), "metrics.json"),
    "truncated status.json": (lambda run: truncate(run / "status.json"), "status.json"),
    "preprocessing format 99": (lambda run: edit_json(run / "preprocessing" / "preprocessing.json", format=99), "preprocessing.json"),
    "failed run": (lambda run: edit_json(run / "status.json", state="failed", error="TrainingError: loss became nan"), "status.json"),
    "newer kexp": (lambda run: edit_json(run / "env.json", kexp="99.0.0"), "env.json"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_fails_with_one_line_naming_the_file(damage, three_class_run, tmp_path):
    run = copy_run(three_class_run, tmp_path)
    break_it, file_name = DAMAGE[damage]
    break_it(run)
    result = evaluate(run, data_dir=three_class_run.parent.parent)
    assert result.exit_code == 1, result.output
    assert file_name in error_line(result)
    assert not (run / "evaluations").exists()


def test_an_interrupted_run_evaluates_with_a_warning(three_class_run, tmp_path):
    run = copy_run(three_class_run, tmp_path)
    edit_json(run / "status.json", state="interrupted", error="interrupted by SIGTERM")
    (run / "metrics.json").unlink()  # an interrupted run never got to write it
    result = evaluate(run, "--json", data_dir=three_class_run.parent.parent)
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert any("interrupted by SIGTERM" in w for w in warnings)
    # env.json carries the data's fingerprint from the start, so the data is still checked
    assert not any("cannot be checked" in w for w in warnings)
    assert "kexp: warning:" in result.stderr


# --- the evaluation file ----------------------------------------------------------------------


def test_two_evaluations_in_the_same_second_keep_both_files(tmp_path, monkeypatch):
    from datetime import datetime

    import kexp.reuse.evaluate as evaluate_module

    class FixedClock:
        @staticmethod
        def now(tz=None):
            return datetime(2026, 11, 23, 18, 45, 2, tzinfo=tz)

    monkeypatch.setattr(evaluate_module, "datetime", FixedClock)
    document = {"run": str(tmp_path), "class_names": [], "results": {}}
    first = evaluate_module.write_evaluation(tmp_path, {**document, "n": 1})
    second = evaluate_module.write_evaluation(tmp_path, {**document, "n": 2})
    assert Path(first["path"]).name == "20261123T184502Z.json"
    assert Path(second["path"]).name == "20261123T184502Z-2.json"
    assert json.loads(Path(first["path"]).read_text())["n"] == 1
    assert sorted(p.name for p in (tmp_path / "evaluations").iterdir()) == ["20261123T184502Z-2.json", "20261123T184502Z.json"]
