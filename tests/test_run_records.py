"""kexp.run.records: each run file read into its typed record and written back byte for byte.

tests/data/run-0.2.0/ holds the small files of a Pima run (3 epochs) as kexp 0.2.0 wrote them.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from kexp.run.files import RunFiles, SweepFiles
from kexp.run.records import (
    History,
    Status,
    read_config,
    read_env,
    read_history,
    read_manifest,
    read_metrics,
    read_small_json,
    read_status,
    write_env,
    write_history,
    write_manifest,
    write_metrics,
    write_status,
)

OLD_RUN = Path(__file__).parent / "data" / "run-0.2.0"


def test_a_0_2_0_run_reads_into_typed_records():
    status, env, metrics, history = read_status(OLD_RUN), read_env(OLD_RUN), read_metrics(OLD_RUN), read_history(OLD_RUN)
    assert status.state == "completed" and status.attempt == 1 and status.exit_code == 0 and status.epoch == 3
    assert env.kexp == "0.2.0" and env.seed == 7 and env.spec["name"] == "pima" and env.data_files[0]["path"].endswith("pima-indians-diabetes.data.csv")
    assert metrics.train["accuracy"] == 0.57421875 and metrics.test is None and metrics.report["part"] == "train"
    assert metrics.part("train") is metrics.train and metrics.protocol == "train" and metrics.members is None
    assert history.epochs == 3 and len(history.epoch_seconds) == 3 and list(history.series) == ["accuracy", "loss"]


def test_records_are_written_back_with_the_bytes_kexp_0_2_0_wrote(tmp_path):
    write_env(tmp_path, read_env(OLD_RUN).document)
    write_metrics(tmp_path, read_metrics(OLD_RUN).document)
    history = read_history(OLD_RUN)
    write_history(tmp_path, history.epoch_seconds, history.series)
    for name in ("env.json", "metrics.json", "history.json"):
        assert (tmp_path / name).read_bytes() == (OLD_RUN / name).read_bytes(), name


def test_status_is_written_in_the_order_kexp_0_2_0_wrote_it(tmp_path):
    old = read_status(OLD_RUN).document
    fields = {k: v for k, v in old.items() if k not in ("state", "updated")}
    written = write_status(tmp_path, "completed", **fields)
    again = json.loads(RunFiles(tmp_path).status.read_text())
    assert list(again) == list(old) and {**again, "updated": old["updated"]} == old
    assert written == read_status(tmp_path) and isinstance(written, Status)
    datetime.fromisoformat(again["updated"]).astimezone(UTC)


def test_history_without_an_epoch_count_reads_its_series():
    history = History.from_document({"loss": [1.0, None], "val_loss": [2.0, 1.5]})
    assert history.epochs is None and history.epoch_seconds == [] and history.series == {"loss": [1.0, None], "val_loss": [2.0, 1.5]}


def test_the_manifest_is_stamped_when_written(tmp_path):
    manifest = {"sweep": "s", "fingerprint": "f", "trials": [{"id": "trial-000", "state": "pending", "run_dir": "trial-000"}]}
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest and "updated" in manifest
    assert SweepFiles(tmp_path).manifest.is_file()


def test_tolerant_readers_say_what_is_wrong_instead_of_raising(tmp_path):
    assert read_small_json(tmp_path / "status.json") == (None, "status.json missing")
    (tmp_path / "status.json").write_text('{"state": "runn')
    assert read_small_json(tmp_path / "status.json") == (None, "status.json unreadable (JSONDecodeError)")
    assert read_config(tmp_path) == (None, "config.yaml missing")
    (tmp_path / "config.yaml").write_text("- a list\n")
    assert read_config(tmp_path) == (None, "config.yaml is not a spec")
    spec, problem = read_config(OLD_RUN)
    assert problem is None and spec["data"]["name"] == "pima"


def test_a_0_2_0_run_is_listed_as_it_was(tmp_path):
    from kexp.report.runs import list_runs

    run = tmp_path / "runs" / "20261207-092011-pima-ih1o"
    shutil.copytree(OLD_RUN, run)
    [row] = list_runs(tmp_path / "runs")
    assert (row["status"], row["dataset"], row["model"], row["epochs"]) == ("completed", "pima", "mlp", 3)
    assert row["metric"] == 0.57421875 and row["measured"] == "train accuracy (on training rows)" and row["note"] == ""
