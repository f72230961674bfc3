import json
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from kexp.errors import RunDirError
from kexp.run.dirs import create_run_dir
from kexp.run.io import write_json
from kexp.run.records import read_json


def test_run_dir_name_and_uniqueness_within_one_second(tmp_path):
    dirs = {create_run_dir(tmp_path / "runs", "exp") for _ in range(50)}
    assert len(dirs) == 50
    for d in dirs:
        assert re.fullmatch(r"\d{8}-\d{6}-exp-[a-z0-9]{4}", d.name) and d.is_dir()


def test_existing_directory_is_never_reused(tmp_path):
    first = create_run_dir(tmp_path, "exp")
    (first / "keep.txt").write_text("x")
    with mock.patch("kexp.run.dirs.secrets.choice", side_effect=list(first.name[-4:]) + list("zzzz")):
        second = create_run_dir(tmp_path, "exp")
    assert second != first and (first / "keep.txt").read_text() == "x"


def test_write_json_is_atomic_and_plain(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"acc": np.float32(0.5), "arr": np.arange(3)})
    assert json.loads(path.read_text()) == {"acc": 0.5, "arr": [0, 1, 2]}
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    # the failed write left the previous file whole and no temp files behind
    assert json.loads(path.read_text())["acc"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(RunDirError, match="status.json: not found"):
        read_json(tmp_path / "status.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(RunDirError, match="x.json: not valid JSON"):
        read_json(tmp_path / "x.json")


def test_write_json_is_strict_json_with_non_finite_listed(tmp_path):
    path = tmp_path / "h.json"
    write_json(path, {"loss": [0.5, float("nan")], "val_loss": np.array([np.inf, 1.0], dtype=np.float32), "epochs": 2})
    data = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert data == {"loss": [0.5, None], "val_loss": [None, 1.0], "epochs": 2, "non_finite": {"loss.1": "nan", "val_loss.0": "inf"}}


def test_check_runs_dir_accepts_a_new_folder_and_refuses_a_file(tmp_path):
    from kexp.run.dirs import check_runs_dir

    check_runs_dir(tmp_path / "new" / "runs")  # not created yet: its nearest existing parent is writable
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "f").write_text("")
    with pytest.raises(RunDirError, match=r"f is not a directory; choose another with --runs-dir"):
        check_runs_dir(tmp_path / "f" / "runs")


def test_check_runs_dir_tries_for_real_where_permissions_do_not_tell(tmp_path):
    from kexp.run.dirs import check_runs_dir

    with pytest.raises(RunDirError, match=r"cannot create the runs directory /proc/kexp-runs: /proc is not writable"):
        check_runs_dir(Path("/proc/kexp-runs"))  # root may "write" /proc by its permissions, yet nothing can be created there
    assert [p.name for p in tmp_path.iterdir()] == []
    check_runs_dir(tmp_path / "runs")
    assert [p.name for p in tmp_path.iterdir()] == []  # the probe leaves nothing behind


def test_open_run_names_a_missing_directory_and_a_damaged_model(tmp_path):
    from kexp.run.saved import open_run

    with pytest.raises(RunDirError, match=r"nope: no such run directory"):
        open_run(tmp_path / "nope")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\ndata: synthetic\nmodel: mlp\n")
    write_json(run / "env.json", {"kexp": "0.2.0"})
    write_json(run / "status.json", {"state": "completed"})
    (run / "model.keras").write_text("hello")
    with pytest.raises(RunDirError, match=r"model.keras: damaged or not a Keras model \(not a .keras zip archive\)"):
        open_run(run)
