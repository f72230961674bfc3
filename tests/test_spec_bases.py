"""Base specs (`base: common.yaml`): merged under the spec, errors at the file and line that set the key, recorded in the run."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
import yaml

from kexp.cli import app
from kexp.errors import SpecError
from kexp.spec import Location, load_spec, read_yaml
from kexp.sweep.space import plan_sweep

BASE = """\
data: {name: synthetic, samples: 60, features: 4}
model: {name: mlp, hidden_units: [8, 4]}
train:
  epochs: 5
  batch_size: 16
  optimizer: {name: adam, learning_rate: 0.05}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def spec_error(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides or [])
    return info.value.problems


def test_the_spec_wins_mappings_merge_and_lists_replace(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    spec = write(tmp_path / "spec.yaml", "name: s\nbase: base.yaml\nmodel: {hidden_units: [2]}\ntrain: {epochs: 1, optimizer: {learning_rate: 0.01}}\n")
    loaded = load_spec(spec)
    assert loaded.model.name == "mlp" and loaded.model.options.hidden_units == [2]  # the list replaced, not appended to
    assert (loaded.train.epochs, loaded.train.batch_size) == (1, 16)  # the spec's key wins, the base's other keys stay
    assert (loaded.train.optimizer.name, loaded.train.optimizer.learning_rate) == ("adam", 0.01)
    assert (loaded.data.options.samples, loaded.data.options.features) == (60, 4)


def test_later_bases_win_over_earlier_ones_and_the_spec_over_all(tmp_path):
    write(tmp_path / "a.yaml", BASE)
    write(tmp_path / "b.yaml", "train: {epochs: 2, batch_size: 8}\nmodel: cnn\n")
    spec = write(tmp_path / "spec.yaml", "name: s\nbase: [a.yaml, b.yaml]\ntrain: {batch_size: 4}\nmodel: {name: mlp, hidden_units: [3]}\n")
    loaded = load_spec(spec)
    assert (loaded.train.epochs, loaded.train.batch_size, loaded.train.optimizer.learning_rate) == (2, 4, 0.05)
    assert loaded.model.name == "mlp" and loaded.model.options.hidden_units == [3]


def test_a_shorthand_name_in_a_base_merges_with_the_specs_options(tmp_path):
    write(tmp_path / "base.yaml", "data: {name: synthetic, samples: 60}\nmodel: mlp\n")
    spec = write(tmp_path / "spec.yaml", "name: s\nbase: base.yaml\nmodel: {hidden_units: [3]}\n")
    loaded = load_spec(spec)
    assert loaded.model.name == "mlp" and loaded.model.options.hidden_units == [3]


def test_bases_of_bases_merge_in_order_relative_to_the_file_naming_them(tmp_path):
    write(tmp_path / "shared" / "root.yaml", BASE)
    write(tmp_path / "shared" / "mid.yaml", "base: root.yaml\ntrain: {epochs: 3}\n")
    spec = write(tmp_path / "exp" / "spec.yaml", "name: s\nbase: ../shared/mid.yaml\nseed: 4\n")
    loaded = load_spec(spec)
    assert (loaded.train.epochs, loaded.train.batch_size, loaded.seed) == (3, 16, 4)
    assert [(Path(f.path).name, f.role) for f in loaded.spec_files] == [("spec.yaml", "spec"), ("mid.yaml", "base"), ("root.yaml", "base")]


def test_an_absolute_base_path_is_read_as_it_is(tmp_path):
    base = write(tmp_path / "elsewhere" / "base.yaml", BASE)
    spec = write(tmp_path / "exp" / "spec.yaml", f"name: s\nbase: {base}\n")
    assert load_spec(spec).train.epochs == 5


def test_a_cycle_of_bases_is_refused_naming_the_chain(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n" + BASE)
    write(tmp_path / "b.yaml", "seed: 1\nbase: a.yaml\n")
    spec = write(tmp_path / "spec.yaml", "name: s\nbase: a.yaml\n")
    [problem] = spec_error(spec)
    assert problem == f"{tmp_path}/b.yaml:2: base: a cycle of bases: {spec} -> {tmp_path}/a.yaml -> {tmp_path}/b.yaml -> {tmp_path}/a.yaml"


def test_a_spec_naming_itself_as_its_base_is_a_cycle(tmp_path):
    spec = write(tmp_path / "spec.yaml", "name: s\nbase: spec.yaml\n")
    [problem] = spec_error(spec)
    assert problem.startswith(f"{spec}:2: base: a cycle of bases: {spec} -> {tmp_path}/spec.yaml")


def test_the_same_base_twice_is_not_a_cycle_and_is_recorded_once(tmp_path):
    write(tmp_path / "common.yaml", BASE)
    write(tmp_path / "a.yaml", "base: common.yaml\nseed: 1\n")
    write(tmp_path / "b.yaml", "base: common.yaml\nseed: 2\n")
    loaded = load_spec(write(tmp_path / "spec.yaml", "name: s\nbase: [a.yaml, b.yaml]\n"))
    assert loaded.seed == 2
    assert [Path(f.path).name for f in loaded.spec_files] == ["spec.yaml", "a.yaml", "common.yaml", "b.yaml"]


@pytest.mark.parametrize("base_text, expected", [
    (None, "base: {d}/missing.yaml: file not found"),
    ("- a\n- b\n", "base: {d}/missing.yaml must be a YAML mapping of spec keys, got list"),
    ("", "base: {d}/missing.yaml must be a YAML mapping of spec keys, got nothing (the file is empty)"),
])
def test_a_missing_or_wrong_base_names_the_file_and_line_of_the_base_key(tmp_path, base_text, expected):
    if base_text is not None:
        write(tmp_path / "missing.yaml", base_text)
    spec = write(tmp_path / "spec.yaml", "name: s\ndata: synthetic\nbase: missing.yaml\n")
    assert spec_error(spec) == [f"{spec}:3: " + expected.format(d=tmp_path)]


@pytest.mark.parametrize("value", ["3", "[a.yaml, 4]", "[]", "{a: b}", "''"])
def test_a_base_value_that_is_not_file_names_is_refused_at_its_line(tmp_path, value):
    spec = write(tmp_path / "spec.yaml", f"name: s\nmodel: mlp\nbase: {value}\n")
    [problem] = spec_error(spec)
    assert problem.startswith(f"{spec}:3: base: expected a file name or a list of file names")


def test_a_yaml_error_in_a_base_names_the_base_file_and_line(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  epochs: 1\n  epochs: 2\n")
    [problem] = spec_error(write(tmp_path / "spec.yaml", "name: s\nbase: base.yaml\n"))
    assert problem.startswith(f"{tmp_path}/base.yaml:3: YAML error: ") and "duplicate key 'epochs'" in problem


def test_each_key_keeps_the_location_of_the_file_that_set_it(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    spec = write(tmp_path / "spec.yaml", "name: s\nbase: base.yaml\ntrain:\n  epochs: 1\n")
    raw, lines, _ = read_yaml(spec)
    assert "base" not in raw and "base" not in lines
    assert lines["train"] == Location(str(spec), 3) and lines["train.epochs"] == Location(str(spec), 4)
    assert lines["train.batch_size"] == Location(f"{tmp_path}/base.yaml", 5) and str(lines["model.hidden_units.1"]) == f"{tmp_path}/base.yaml:2"


def test_a_list_in_the_spec_drops_the_base_lists_locations(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    _, lines, _ = read_yaml(write(tmp_path / "spec.yaml", "name: s\nbase: base.yaml\nmodel:\n  hidden_units: [2]\n"))
    assert "model.hidden_units.1" not in lines and lines["model.hidden_units.0"] == Location(f"{tmp_path}/spec.yaml", 4)


def test_a_typo_in_a_base_is_reported_at_the_base_by_kexp_validate(runner, tmp_path, monkeypatch):
    write(tmp_path / "configs" / "base.yaml", BASE.replace("  batch_size: 16", "  epochz: 3"))
    write(tmp_path / "configs" / "spec.yaml", "name: s\nbase: base.yaml\ntrain: {epochs: 1}\n")
    monkeypatch.chdir(tmp_path)  # the user's view: relative names, as typed
    result = runner.invoke(app, ["validate", "configs/spec.yaml"])
    assert result.exit_code == 2
    assert result.output.startswith("kexp: error: configs/base.yaml:5: train.epochz: unknown key 'epochz' (did you mean 'epochs'?)")
    assert len(result.output.strip().splitlines()) == 1


def test_a_typo_in_the_spec_is_still_reported_at_the_spec_and_set_keeps_its_origin(runner, tmp_path, monkeypatch):
    write(tmp_path / "configs" / "base.yaml", BASE)
    write(tmp_path / "configs" / "spec.yaml", "name: s\nbase: base.yaml\ntrain:\n  epochz: 1\n")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", "configs/spec.yaml"])
    assert result.exit_code == 2 and result.output.startswith("kexp: error: configs/spec.yaml:4: train.epochz: unknown key 'epochz'")
    result = runner.invoke(app, ["validate", "configs/base.yaml", "--set", "name=s", "--set", "train.batch_size=0"])
    assert result.exit_code == 2 and "kexp: error: --set train.batch_size=0: train.batch_size:" in result.output


def test_set_applies_after_the_merge(runner, tmp_path):
    write(tmp_path / "base.yaml", BASE)
    spec = write(tmp_path / "spec.yaml", "name: s\nbase: base.yaml\ntrain: {epochs: 1}\n")
    assert load_spec(spec, ["train.epochs=7", "train.optimizer.learning_rate=0.2"]).train.optimizer.learning_rate == 0.2
    result = runner.invoke(app, ["validate", str(spec), "--set", "train.epochs=7"])
    assert result.exit_code == 0 and "valid (synthetic data, mlp model, 7 epochs)" in result.output


def test_plugin_paths_are_made_absolute_from_the_folder_of_the_file_that_set_them(tmp_path):
    write(tmp_path / "shared" / "base.yaml", BASE + "plugins: [my_models.py, lib/data.py, my_pkg.datasets, ../up.py]\n")
    spec = write(tmp_path / "exp" / "spec.yaml", "name: s\nbase: ../shared/base.yaml\n")
    assert read_yaml(spec).raw["plugins"] == [f"{tmp_path}/shared/my_models.py", f"{tmp_path}/shared/lib/data.py", "my_pkg.datasets", f"{tmp_path}/up.py"]
    write(spec, "name: s\nbase: ../shared/base.yaml\nplugins: [mine.py, other.module]\n")  # the spec's list replaces the base's
    assert read_yaml(spec).raw["plugins"] == [f"{tmp_path}/exp/mine.py", "other.module"]


def test_a_sweep_takes_its_spec_from_the_base_and_each_trial_records_the_files(runner, tmp_path):
    base = write(tmp_path / "base.yaml", BASE)
    spec = write(tmp_path / "spec.yaml", "name: s\nbase: base.yaml\nsweep:\n  params: {train.epochs: [1, 2]}\n")
    plan = plan_sweep(spec, [], [])
    assert [s.train.epochs for s in plan.specs.values()] == [1, 2] and {s.train.batch_size for s in plan.specs.values()} == {16}
    assert all([Path(f.path) for f in s.spec_files] == [spec, base] for s in plan.specs.values())
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 0 and "valid sweep of 2 trials over train.epochs" in result.output
    write(base, BASE.replace("epochs: 5", "epochz: 5"))
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and f"{tmp_path}/base.yaml:4: train.epochz: unknown key" in result.output


def test_spec_files_survive_resolution_and_copies_but_are_no_part_of_the_spec(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    loaded = load_spec(write(tmp_path / "spec.yaml", "name: s\nbase: base.yaml\n"))
    assert len(loaded.spec_files) == 2 and loaded.model_copy(update={"seed": 3}).spec_files == loaded.spec_files
    assert "spec_files" not in loaded.model_dump() and "spec_files" not in loaded.to_yaml()
    assert loaded == load_spec(write(tmp_path / "flat.yaml", loaded.to_yaml()))  # where a spec came from is not what it says


def test_a_trained_run_saves_the_merged_spec_and_records_each_file_with_its_hash(runner, tmp_path):
    base = write(tmp_path / "common" / "base.yaml", BASE.replace("samples: 60", "samples: 40"))
    spec = write(tmp_path / "spec.yaml", "name: based\nbase: common/base.yaml\ntrain: {epochs: 1}\n")
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(spec), "--runs-dir", str(runs), "--log-format", "plain"])
    assert result.exit_code == 0, result.output
    [run] = list(runs.iterdir())
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert "base" not in saved and saved["data"]["samples"] == 40 and saved["train"]["epochs"] == 1
    assert load_spec(run / "config.yaml") == load_spec(spec)
    env = json.loads((run / "env.json").read_text())
    assert env["spec_files"] == [
        {"path": str(spec), "sha256": hashlib.sha256(spec.read_bytes()).hexdigest(), "role": "spec"},
        {"path": str(base), "sha256": hashlib.sha256(base.read_bytes()).hexdigest(), "role": "base"},
    ]


def test_a_sweep_directory_records_the_spec_and_its_bases(tmp_path):
    from kexp.sweep.trials import create_sweep_dir

    base = write(tmp_path / "base.yaml", BASE)
    spec = write(tmp_path / "spec.yaml", "name: s\nbase: base.yaml\nsweep:\n  params: {train.epochs: [1, 2]}\n")
    sweep_dir = create_sweep_dir(tmp_path / "runs", plan_sweep(spec, [], []))
    document = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())
    assert [(f["path"], f["role"]) for f in document["spec_files"]] == [(str(spec), "spec"), (str(base), "base")]
    trial = yaml.safe_load(next((sweep_dir / "specs").iterdir()).read_text())
    assert "base" not in trial and trial["train"]["batch_size"] == 16  # each trial's spec is the merged one


def test_a_spec_from_a_pipe_names_its_bases_from_the_working_folder(tmp_path, monkeypatch):
    write(tmp_path / "base.yaml", BASE)
    monkeypatch.chdir(tmp_path)
    fifo = tmp_path / "fd" / "63"  # as bash's <(cat spec.yaml) names it: /dev/fd/63
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    text = b"name: s\nbase: base.yaml\n"
    writer = threading.Thread(target=fifo.write_bytes, args=(text,))
    writer.start()
    loaded = load_spec(fifo)
    writer.join()
    assert loaded.train.batch_size == 16
    assert [(f.role, f.sha256) for f in loaded.spec_files] == [("spec", hashlib.sha256(text).hexdigest()), ("base", hashlib.sha256(BASE.encode()).hexdigest())]
