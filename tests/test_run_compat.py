"""Run directories written by kexp 0.2.0 (tests/fixtures/v0.2.0, made by make_v020_runs.py from
that version's code) still open in every command that reads runs, with the same numbers."""

import json
import shutil
from pathlib import Path

import pytest
from fixtures.make_v020_runs import write_data

FIXTURE = Path(__file__).parent / "fixtures" / "v0.2.0"
MADE_AT = "/work/main/tests/fixtures/v0.2.0"  # where the fixture was written; its outputs name those paths
STAMPED = {"created", "results", "plots"}  # when evaluate ran (its plot files are named by that time), and the numbers, compared apart
RUNS = json.loads((FIXTURE / "runs.json").read_text())["runs"]


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> Path:
    """A copy (evaluate and resume write into a run directory), with the runs' data written again:
    the same bytes 0.2.0 trained on, generated (no data file is kept in the repository)."""
    copy = tmp_path_factory.mktemp("v020") / "v0.2.0"
    shutil.copytree(FIXTURE, copy)
    write_data(copy / "data")
    return copy


def kexp(*args: str):
    """In this process (TensorFlow loads once for the module): the same commands a user types."""
    from typer.testing import CliRunner

    from kexp.cli import app

    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return done


def same(a, b) -> bool:
    """Equal, floats to 1e-6 (the same model and data: only float rounding could differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-6, abs=1e-7)
    return a == b


def expected(name: str, old: Path):
    text = (FIXTURE / "expected" / name).read_text().replace(MADE_AT, str(old))
    return json.loads(text) if name.endswith(".json") and not name.endswith("predict.json") else text


@pytest.mark.parametrize("kind", ["table", "images", "text"])
def test_an_old_run_evaluates_to_what_it_recorded(old, kind):
    run = old / "runs" / RUNS[kind]
    then = expected(f"{kind}.evaluate.json", old)
    now = json.loads(kexp("evaluate", str(run), "--json", "--data-dir", str(old / "data")).stdout)
    assert same(now["results"], then["results"])
    recorded = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    assert now["results"]["test"]["metrics"]["accuracy"] == pytest.approx(recorded, abs=1e-6)
    assert {k: v for k, v in now.items() if k not in STAMPED} == {k: v for k, v in then.items() if k not in STAMPED}


@pytest.mark.parametrize("kind, inputs", [("table", "predict_rows.csv"), ("images", "predict_images.npy"), ("text", "predict_texts.txt")])
def test_an_old_run_predicts_what_it_predicted_then(old, kind, inputs):
    now = kexp("predict", str(old / "runs" / RUNS[kind]), str(old / "data" / inputs), "--json").stdout
    assert [json.loads(line) for line in now.splitlines()] == [json.loads(line) for line in expected(f"{kind}.predict.json", old).splitlines()]


def test_old_runs_list_and_compare_as_they_did(old):
    listed = json.loads(kexp("runs", str(old / "runs"), "--format", "json").stdout)
    then = expected("runs.json", old)
    dropped = {"age"}  # seconds since the run ended: grows by itself
    assert [{k: v for k, v in r.items() if k not in dropped} for r in listed] == [{k: v for k, v in r.items() if k not in dropped} for r in then]
    runs = old / "runs"
    compared = [str(runs / RUNS["table"]), str(runs / RUNS["kfold"]), *map(str, sorted(runs.glob("sweeps/*/trial-*")))]
    now = json.loads(kexp("compare", *compared, "--format", "json", "-o", str(old / "compare.png")).stdout)
    assert now == expected("compare.json", old)


def test_an_old_stopped_run_resumes_to_the_end(old):
    # Its checkpoint arrays are not kept (no arrays in the repository): it resumes from its first epoch.
    run = old / "runs" / RUNS["stopped"]
    stopped = json.loads((run / "status.json").read_text())
    assert stopped["state"] == "interrupted"
    kexp("resume", str(run), "--data-dir", str(old / "data"))
    status = json.loads((run / "status.json").read_text())
    history = json.loads((run / "history.json").read_text())
    assert status["state"] == "completed" and status["attempt"] == 2
    assert history["epochs"] == 30 and len(history["loss"]) == 30
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] > 0.9
