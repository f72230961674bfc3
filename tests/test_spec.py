from pathlib import Path

import pytest

from kexp.errors import SpecError
from kexp.spec import load_spec, parse_override
from tests.conftest import smoke_spec, write_spec

GOOD = """\
name: demo
seed: 3
data:
  name: pima
model:
  name: mlp
  hidden_units: [12, 8]
train:
  optimizer: adam
  epochs: 5
"""


def problems(path: Path, overrides=()) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    return info.value.problems


def test_valid_spec_fills_defaults(tmp_path):
    spec = load_spec(write_text(tmp_path, GOOD))
    assert spec.seed == 3 and spec.train.epochs == 5
    assert spec.train.optimizer.name == "adam"
    assert spec.model.options()["hidden_units"] == [12, 8]
    # every option of the chosen entries is written out, so the saved spec is complete
    assert spec.data.options() == {"path": "pima-indians-diabetes.data.csv", "standardize": False, "test_fraction": 0.0}
    assert spec.model.options()["activation"] == "relu"


def write_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_unknown_top_level_key_names_key_and_line(tmp_path):
    path = write_text(tmp_path, GOOD + "epochs: 3\n")
    assert problems(path) == [f"{path}:11: epochs: Extra inputs are not permitted"]


def test_misspelled_dataset_option_is_named(tmp_path):
    path = write_text(tmp_path, GOOD.replace("  name: pima\n", "  name: pima\n  standardise: true\n"))
    assert problems(path) == [f"{path}:5: data.standardise: Extra inputs are not permitted"]


def test_wrong_type_names_key_and_value(tmp_path):
    path = write_text(tmp_path, GOOD.replace("epochs: 5", "epochs: many"))
    [problem] = problems(path)
    assert problem.startswith(f"{path}:10: train.epochs: Input should be a valid integer")
    assert "(got 'many')" in problem


def test_every_problem_is_reported(tmp_path):
    path = write_text(tmp_path, GOOD.replace("epochs: 5", "epochs: 0").replace("seed: 3", "seed: -1"))
    keys = [p.split(": ")[1] for p in problems(path)]
    assert keys == ["seed", "train.epochs"]


def test_yaml_syntax_error_gives_line(tmp_path):
    path = write_text(tmp_path, GOOD + "train: [unclosed\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:12: YAML error: expected ',' or ']'")
    assert problem.endswith("(while parsing a flow sequence started on line 11)")


def test_duplicate_key_gives_both_lines(tmp_path):
    path = write_text(tmp_path, GOOD + "seed: 4\n")
    assert problems(path) == [f"{path}:11: YAML error: duplicate key 'seed' (first on line 2)"]


def test_missing_file(tmp_path):
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: file not found"]


def test_unknown_model_name_suggests(tmp_path):
    path = write_text(tmp_path, GOOD.replace("name: mlp", "name: mpl"))
    [problem] = problems(path)
    assert problem.startswith(f"{path}:6: model.name: Unknown model 'mpl'. Did you mean 'mlp'?")


def test_override_sets_nested_value_and_parses_yaml(tmp_path):
    path = write_text(tmp_path, GOOD)
    spec = load_spec(path, ["train.epochs=2", "model.hidden_units=[64, 32]", "train.optimizer.learning_rate=0.01"])
    assert spec.train.epochs == 2
    assert spec.model.options()["hidden_units"] == [64, 32]
    assert spec.train.optimizer.name == "adam" and spec.train.optimizer.learning_rate == 0.01


def test_override_is_validated_like_the_file(tmp_path):
    path = write_text(tmp_path, GOOD)
    assert problems(path, ["train.epochz=2"]) == ["--set train.epochz=2: train.epochz: Extra inputs are not permitted"]
    [problem] = problems(path, ["train.epochs=0"])
    assert problem.startswith("--set train.epochs=0: train.epochs: Input should be greater than 0")


def test_malformed_override():
    with pytest.raises(SpecError, match="expected KEY.PATH=VALUE"):
        parse_override("train.epochs")
    with pytest.raises(SpecError, match="expected KEY.PATH=VALUE"):
        parse_override("train..epochs=1")


def test_override_through_a_scalar_is_refused(tmp_path):
    path = write_text(tmp_path, GOOD)
    [problem] = problems(path, ["seed.value=1"])
    assert "'seed' is a int, not a mapping" in problem


def test_optimizer_argument_is_checked_per_optimizer(tmp_path):
    path = write_text(tmp_path, GOOD)
    [problem] = problems(path, ["train.optimizer={name: adam, momentum: 0.9}"])
    assert "optimizer 'adam' takes no argument 'momentum'" in problem
    spec = load_spec(path, ["train.optimizer={name: sgd, momentum: 0.9}"])
    assert spec.train.optimizer.kwargs() == {"momentum": 0.9}


def test_unknown_loss_and_metric(tmp_path):
    path = write_text(tmp_path, GOOD)
    assert "unknown loss 'bce'" in problems(path, ["train.loss=bce"])[0]
    assert "unknown metric 'f1'" in problems(path, ["train.metrics=[accuracy, f1]"])[0]


def test_device_pattern(tmp_path):
    path = write_text(tmp_path, GOOD)
    assert load_spec(path, ["device=gpu:1"]).device == "gpu:1"
    assert "device" in problems(path, ["device=tpu"])[0]


def test_resolved_spec_round_trips(tmp_path):
    spec = load_spec(write_spec(tmp_path / "a.yaml", smoke_spec()))
    again = load_spec(write_text(tmp_path, spec.to_yaml()))
    assert again == spec


def test_mlp_dropout_list_must_match_layers(tmp_path):
    path = write_text(tmp_path, GOOD)
    [problem] = problems(path, ["model.dropout=[0.1]"])
    assert problem == "--set model.dropout=[0.1]: model: Value error, dropout lists 1 rates for 2 hidden layers"


def test_component_shorthand_by_name(tmp_path):
    path = write_text(tmp_path, "name: s\ndata: synthetic\nmodel: mlp\n")
    spec = load_spec(path)
    assert spec.data.name == "synthetic" and spec.model.options()["hidden_units"] == [64]
