"""`kexp init`: a starter spec that validates and shows every option, tutorial copies, no overwrites."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kexp.cli import app, complete_datasets, complete_examples, complete_models, complete_runs
from kexp.registry import DATASETS, MODELS, load_components
from kexp.spec import load_spec, parse_yaml, validate_spec
from kexp.starter import example_names, render_starter

ROOT = Path(__file__).resolve().parent.parent


def test_init_writes_a_spec_that_validates_and_refuses_to_overwrite(runner, tmp_path):
    path = tmp_path / "specs" / "first.yaml"
    result = runner.invoke(app, ["init", "--dataset", "sms_spam", "--model", "mlp", str(path)])
    assert result.exit_code == 0, result.output
    assert f"kexp validate {path}" in result.output
    checked = runner.invoke(app, ["validate", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert checked.exit_code == 0 and "valid (sms_spam data, mlp model, 10 epochs)" in checked.output
    before = path.read_text()

    again = runner.invoke(app, ["init", "--dataset", "pima", str(path)])
    assert again.exit_code == 1
    assert again.output.strip() == f"kexp: error: {path} already exists; add --force to replace it"
    assert path.read_text() == before
    forced = runner.invoke(app, ["init", "--dataset", "pima", "--force", str(path)])
    assert forced.exit_code == 0 and "data:\n  # " in path.read_text() and "name: pima\n" in path.read_text()


def test_starter_shows_every_option_at_its_default_with_comments(runner, tmp_path):
    result = runner.invoke(app, ["init"])  # no PATH: printed
    assert result.exit_code == 0
    text = result.output
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    spec = load_spec(path)
    # every key of the resolved spec is written out, at the value validation resolves it to
    assert parse_yaml(text)[0] == spec.model_dump(mode="json")
    assert text.startswith("# Starter spec: pima data, mlp model") and "kexp validate experiment.yaml" in text
    assert "  # Fraction of the training split held out (seeded, shuffled) for validation metrics.\n  validation_split: 0.0\n" in text
    unwrapped = re.sub(r"\n *# ", " ", text)  # comments are wrapped at 100 columns
    assert "float32, or mixed precision on GPUs with tensor cores (bfloat16 also on recent CPUs). One of float32, mixed_float16, mixed_bfloat16.\n  precision: float32" in unwrapped
    assert "  # sizes of the hidden Dense layers.\n  hidden_units: [64]\n" in text
    assert "# null: off; or a mapping such as {monitor: val_loss, patience: 3," in text
    assert "None" not in text and all(len(line) <= 100 for line in text.splitlines())


@pytest.mark.long
def test_every_dataset_and_model_pair_gives_a_valid_starter():
    load_components()
    for dataset in DATASETS.names():
        for model in MODELS.names():
            text = render_starter(dataset, model)
            spec = validate_spec(parse_yaml(text)[0], f"{dataset}+{model}")
            assert (spec.data.name, spec.model.name) == (dataset, model)
            assert parse_yaml(text)[0] == spec.model_dump(mode="json"), (dataset, model)
    assert "flatten: false" in render_starter("mnist", "cnn")  # the cnn takes images, not 784-vectors
    assert "REQUIRED" in render_starter("csv", "sequential") and "units: 10, activation: softmax" in render_starter("mnist", "sequential")


def test_name_follows_the_file_name_when_it_can(tmp_path):
    assert "\nname: my-run.v2\n" in render_starter(path=tmp_path / "my-run.v2.yaml")
    assert "\nname: pima_mlp\n" in render_starter(path=tmp_path / "has space.yaml")


def test_init_from_copies_a_tutorial_config(runner, tmp_path):
    path = tmp_path / "pima.yaml"
    result = runner.invoke(app, ["init", "--from", "pima", str(path)])
    assert result.exit_code == 0, result.output
    copied, original = path.read_text(), (ROOT / "configs" / "pima.yaml").read_text()
    assert copied.startswith("# copied from kexp's tutorial config configs/pima.yaml (kexp init --from pima)\n")
    assert f"kexp train {path}" in copied and "configs/pima.yaml" not in copied.split("\n", 1)[1]  # its commands name the copy
    assert yaml.safe_load(copied) == yaml.safe_load(original)
    assert set(example_names()) == {p.stem for p in (ROOT / "configs").glob("*.yaml")}

    unknown = runner.invoke(app, ["init", "--from", "pimaa"])
    assert unknown.exit_code == 2 and "--from pimaa: no such tutorial config. Did you mean 'pima'?" in unknown.output
    both = runner.invoke(app, ["init", "--from", "pima", "--model", "cnn"])
    assert both.exit_code == 2 and "without --dataset or --model" in both.output
    bad = runner.invoke(app, ["init", "--dataset", "pmia"])
    assert bad.exit_code == 2 and "Unknown dataset 'pmia'. Did you mean 'pima'?" in bad.output


def test_wheel_ships_configs_as_kexp_configs():
    """configs/ is mapped to the package kexp._configs, so the package list is written out: it must name every package."""
    tomllib = pytest.importorskip("tomllib")
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "kexp").rglob("__init__.py")}
    assert set(settings["packages"]) == on_disk | {"kexp._configs"}
    assert settings["package-dir"] == {"kexp._configs": "configs"}
    assert settings["package-data"]["kexp._configs"] == ["*.yaml"]


def test_completion_offers_names_examples_and_runs(tmp_path, monkeypatch):
    assert complete_datasets("p") == ["pima"] and complete_models("") == ["cnn", "mlp", "sequential"]
    assert complete_examples("pima") == ["pima", "pima_cv"]
    run = tmp_path / "runs" / "20260101-000000-pima-abcd"
    run.mkdir(parents=True)
    (run / "status.json").write_text("{}")
    (tmp_path / "runs" / "not-a-run").mkdir()
    monkeypatch.chdir(tmp_path)
    assert complete_runs("") == complete_runs("runs/2") == ["runs/20260101-000000-pima-abcd"]
    assert complete_runs("ru") == ["runs/"] and complete_runs("./runs/") == ["./runs/20260101-000000-pima-abcd"]


def test_init_and_data_list_do_not_import_tensorflow(tmp_path):
    code = (
        "import sys\nfrom kexp import cli\n"
        f"for argv in (['init'], ['data', 'list', '--data-dir', {str(tmp_path)!r}], ['doctor', '--help']):\n"
        "    try:\n        cli.app(argv, prog_name='kexp')\n    except SystemExit as e:\n        assert e.code in (0, None), (argv, e.code)\n"
        "print('TF', 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("TF False")
