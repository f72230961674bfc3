import time
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
    assert spec.model.options.hidden_units == [12, 8]
    # every option of the chosen entries is written out, so the saved spec is complete
    assert spec.data.options.model_dump() == {"path": "pima-indians-diabetes.data.csv", "standardize": False, "test_fraction": 0.0}
    assert spec.model.options.activation == "relu"


def write_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_unknown_top_level_key_names_key_and_line(tmp_path):
    path = write_text(tmp_path, GOOD + "epochs: 3\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:11: epochs: unknown key 'epochs'; valid keys: name, seed, seeds, plugins, data, model, train, evaluation, tracking, device")


def test_misspelled_dataset_option_is_named(tmp_path):
    path = write_text(tmp_path, GOOD.replace("  name: pima\n", "  name: pima\n  standardise: true\n"))
    assert problems(path) == [
        f"{path}:5: data.standardise: unknown key 'standardise' (did you mean 'standardize'?); valid keys: path, standardize, test_fraction"
    ]


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
    assert spec.model.options.hidden_units == [64, 32]
    assert spec.train.optimizer.name == "adam" and spec.train.optimizer.learning_rate == 0.01


def test_override_is_validated_like_the_file(tmp_path):
    path = write_text(tmp_path, GOOD)
    [problem] = problems(path, ["train.epochz=2"])
    assert problem.startswith("--set train.epochz=2: train.epochz: unknown key 'epochz' (did you mean 'epochs'?); valid keys: optimizer,")
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
    assert "'seed' holds int 3, not a mapping or list" in problem


def test_override_reaches_list_items(tmp_path):
    path = write_text(tmp_path, GOOD)
    assert load_spec(path, ["model.hidden_units.0=64"]).model.options.hidden_units == [64, 8]
    assert load_spec(path, ["model.hidden_units.-1=4"]).model.options.hidden_units == [12, 4]
    [problem] = problems(path, ["model.hidden_units.2=5"])
    assert "'model.hidden_units' has 2 item(s) ([12, 8]); index 2 is out of range" in problem
    [problem] = problems(path, ["model.hidden_units.first=5"])
    assert "'model.hidden_units' is a list; address an item by its index, e.g. model.hidden_units.0" in problem
    [problem] = problems(path, ["model.dropout.0=0.5"])
    assert "'model.dropout' is not in the spec (its default applies); set the whole list" in problem


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
    assert problem == "--set model.dropout=[0.1]: model: dropout lists 1 rates for 2 hidden layers"


def test_component_shorthand_by_name(tmp_path):
    path = write_text(tmp_path, "name: s\ndata: synthetic\nmodel: mlp\n")
    spec = load_spec(path)
    assert spec.data.name == "synthetic" and spec.model.options.hidden_units == [64]


# --- issue 6: nothing bad gets through ---------------------------------------------------


def alias_bomb(levels: int = 9) -> str:
    """The classic 'billion laughs': nine levels of nine aliases (a 2 KB file, 9**9 leaves)."""
    lines = ["name: bomb", 'a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_fast_naming_the_line(tmp_path):
    path = write_text(tmp_path, alias_bomb())
    start = time.perf_counter()
    [problem] = problems(path)
    assert time.perf_counter() - start < 1
    assert problem == f"{path}:2: YAML error: YAML anchor '&a0' is not allowed in a spec; write the value out"


def test_alias_in_override_value_is_refused():
    with pytest.raises(SpecError, match=r"--set model.hidden_units=\[&x 1, \*x\]: value is not valid YAML: YAML anchor '&x'"):
        parse_override("model.hidden_units=[&x 1, *x]")


def test_large_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(GOOD + "# " + "x" * 2_000_000 + "\n")
    start = time.perf_counter()
    [problem] = problems(path)
    assert time.perf_counter() - start < 1
    assert problem == f"{path}: {path.stat().st_size:,} bytes is too large for a spec (limit 64 KiB); is this the right file?"


@pytest.mark.parametrize(
    "override, key",
    [("train.epochs=true", "train.epochs"), ("train.batch_size=2.5", "train.batch_size"), ("model.hidden_units=[true]", "model.hidden_units.0"),
     ("train.shuffle=1", "train.shuffle"), ("data.standardize=yes please", "data.standardize")],
)
def test_types_are_strict(tmp_path, override, key):
    [problem] = problems(write_text(tmp_path, GOOD), [override])
    assert problem.startswith(f"--set {override}: {key}: Input should be a valid")


def test_exponent_floats_are_numbers(tmp_path):
    spec = load_spec(write_text(tmp_path, GOOD), ["train.optimizer.learning_rate=1e-3"])
    assert spec.train.optimizer.learning_rate == 0.001


def test_seed_must_fit_32_bits(tmp_path):
    path = write_text(tmp_path, GOOD)
    assert load_spec(path, [f"seed={2**32 - 1}"]).seed == 2**32 - 1
    [problem] = problems(path, ["seed=99999999999"])
    assert problem.startswith("--set seed=99999999999: seed: Input should be less than 4294967296")


@pytest.mark.parametrize("loss", ["mean_squared_error", "mean_absolute_error"])
def test_regression_losses_on_a_classification_task_say_why(tmp_path, loss):
    [problem] = problems(write_text(tmp_path, GOOD), [f"train.loss={loss}"])
    assert problem.startswith(f"--set train.loss={loss}: train.loss: '{loss}' is a regression loss and this is a classification task")


def test_margin_losses_are_refused_with_the_reason(tmp_path):
    [problem] = problems(write_text(tmp_path, GOOD), ["train.loss=hinge"])
    assert problem.startswith("--set train.loss=hinge: train.loss: 'hinge' is a margin loss that needs -1/+1 targets and a linear output;")


def test_regression_task_takes_regression_losses_and_metrics(tmp_path):
    path = write_text(tmp_path, GOOD.replace("  name: pima\n", "  name: csv\n  path: y.csv\n  task: regression\n"))
    spec = load_spec(path)
    assert spec.train.metrics == ["mae", "rmse", "r2"]  # the task's default, written into the resolved spec
    assert load_spec(path, ["train.loss=huber"]).train.loss == "huber"
    [problem] = problems(path, ["train.loss=binary_crossentropy"])
    assert "'binary_crossentropy' is a classification loss and this is a regression task" in problem
    [problem] = problems(path, ["train.metrics=[accuracy]"])
    assert "'accuracy' is not a regression metric; choose from mae, r2, rmse" in problem
    [problem] = problems(path, ["data.class_names=[a, b]"])
    assert "class_names" in problem


def test_binary_metrics_refused_for_a_multiclass_dataset(tmp_path):
    path = write_text(tmp_path, GOOD.replace("name: pima", "name: mnist"))
    [problem] = problems(path, ["train.metrics=[accuracy, precision]"])
    assert problem == (
        "--set train.metrics=[accuracy, precision]: train.metrics: "
        "'precision' needs a binary task with one sigmoid output, but this task has 10 classes; remove it"
    )
    [problem] = problems(path, ["train.loss=binary_crossentropy"])
    assert "train.loss: binary_crossentropy needs 2 classes, the data has 10" in problem


def test_binary_metrics_need_the_binary_loss(tmp_path):
    [problem] = problems(write_text(tmp_path, GOOD), ["train.metrics=[auc]", "train.loss=sparse_categorical_crossentropy"])
    assert "'auc' needs a binary task with one sigmoid output, but loss sparse_categorical_crossentropy gives 2 outputs" in problem


def test_early_stopping_must_watch_a_logged_value(tmp_path):
    path = write_text(tmp_path, GOOD)
    [problem] = problems(path, ["train.early_stopping={monitor: val_loss}"])
    assert "train.early_stopping.monitor: 'val_loss' needs a validation split" in problem
    [problem] = problems(path, ["train.early_stopping={monitor: val_acc}", "train.validation_split=0.2"])
    assert "'val_acc' is never logged; choose from loss, accuracy, val_loss, val_accuracy" in problem
    assert load_spec(path, ["train.early_stopping={monitor: val_accuracy}", "train.validation_split=0.2"]).train.early_stopping


def test_optimizer_values_are_typed_and_bounded(tmp_path):
    path = write_text(tmp_path, GOOD)
    assert "optimizer argument 'beta_1' must be a finite number, got 'x'" in problems(path, ["train.optimizer.beta_1=x"])[0]
    assert "optimizer argument 'amsgrad' must be true or false" in problems(path, ["train.optimizer.amsgrad=1"])[0]
    assert "sgd momentum must be in [0, 1], got 1.5" in problems(path, ["train.optimizer={name: sgd, momentum: 1.5}"])[0]
    assert "set only one of clipnorm, clipvalue, global_clipnorm" in problems(path, ["train.optimizer.clipnorm=1", "train.optimizer.clipvalue=1"])[0]
    assert "(did you mean 'beta_1'?)" in problems(path, ["train.optimizer.beta1=0.9"])[0]


def test_bad_override_yaml_is_one_line():
    with pytest.raises(SpecError) as info:
        parse_override("train.metrics=[accuracy")
    [problem] = info.value.problems
    assert "\n" not in problem and problem.startswith("--set train.metrics=[accuracy: value is not valid YAML: ")


def test_nested_option_typo_lists_that_sections_keys(tmp_path):
    path = write_text(tmp_path, GOOD.replace("name: pima", "name: imdb"))
    [problem] = problems(path, ["data.text.num_word=5"])
    assert "data.text.num_word: unknown key 'num_word' (did you mean 'num_words'?); valid keys: lowercase," in problem


@pytest.mark.parametrize("text, value", [("032", 32), ("0o10", 8), ("0x10", 16), ("1e-3", 0.001), ("yes", "yes"), ("on", "on"), ("1:00", "1:00"), ("1_000", "1_000")])
def test_yaml_1_2_scalars_no_octal_or_base_60_surprises(text, value):
    from kexp.spec import parse_yaml

    assert parse_yaml(f"a: {text}")[0] == {"a": value}


def test_yaml_1_1_forms_are_refused_not_reinterpreted(tmp_path):
    path = write_text(tmp_path, GOOD)
    assert load_spec(path, ["train.epochs=010"]).train.epochs == 10
    assert "train.shuffle: Input should be a valid boolean (got 'yes')" in problems(path, ["train.shuffle=yes"])[0]
    assert "train.epochs: Input should be a valid integer (got '1:00')" in problems(path, ["train.epochs=1:00"])[0]


def test_complex_and_merge_keys_are_one_line_errors(tmp_path):
    [problem] = problems(write_text(tmp_path, GOOD + "? [a, b]\n: 1\n"))
    assert problem == f"{tmp_path / 'spec.yaml'}:11: YAML error: a key must be a plain name, not a list or mapping"
    [problem] = problems(write_text(tmp_path, GOOD.replace("train:\n", "train:\n  <<: {epochs: 2}\n")))
    assert problem.endswith("YAML error: YAML merge keys (<<) are not allowed in a spec; write the keys out")


def test_empty_spec_says_so(tmp_path):
    assert problems(write_text(tmp_path, "# nothing yet\n")) == [f"{tmp_path / 'spec.yaml'}: the spec is empty; it needs at least name, data and model (see configs/ for examples)"]


def test_union_field_gives_one_problem_without_pydantic_internals(tmp_path):
    [problem] = problems(write_text(tmp_path, GOOD), ["model.dropout=true"])
    assert problem.startswith("--set model.dropout=true: model.dropout: Input should be a valid number")
    assert "list" in problem and ".float" not in problem and "instance of" not in problem


def test_constrained_int_or_auto_is_one_problem(tmp_path):
    assert problems(write_text(tmp_path, GOOD), ["train.steps_per_execution=0"]) == [
        "--set train.steps_per_execution=0: train.steps_per_execution: Input should be greater than 0; or Input should be 'auto' (got 0)"]


def test_training_settings_that_cannot_work_together_fail_validation_before_any_data(tmp_path):
    path = write_text(tmp_path, GOOD)
    assert problems(path, ["train.loop=xla", "train.class_weight=balanced"]) == [
        "--set train.loop=xla: train.loop: xla does not work with train.class_weight (Keras weighs batches one at a time); use loop: keras or auto"]
    [problem] = problems(path, ["device=all", "train.steps_per_execution=4"])
    assert problem.startswith("--set train.steps_per_execution=4: train.steps_per_execution: 4 does not work with device: all")
    assert load_spec(path, ["device=all", "train.steps_per_execution=1", "train.loop=keras"]).train.steps_per_execution == 1


def test_device_lists_the_choices(tmp_path):
    [problem] = problems(write_text(tmp_path, GOOD), ["device=tpu"])
    assert problem == "--set device=tpu: device: unknown device 'tpu'; choose from auto, cpu, gpu, gpu:N (N = 0, 1, ...), all"


def test_duplicate_metrics_and_infinite_learning_rate_are_refused(tmp_path):
    path = write_text(tmp_path, GOOD)
    assert "'accuracy' is listed twice" in problems(path, ["train.metrics=[accuracy, accuracy]"])[0]
    assert "train.optimizer.learning_rate" in problems(path, ["train.optimizer.learning_rate=.inf"])[0]


def test_a_section_created_by_an_override_is_blamed_on_it(tmp_path):
    [problem] = problems(write_text(tmp_path, GOOD), ["train.early_stopping.patience=2"])
    assert problem.startswith("--set train.early_stopping.patience=2: train.early_stopping.monitor: 'val_loss' needs a validation split")


# --- issue 25: options are validated once and travel typed --------------------------------


def test_options_are_validated_once_and_travel_typed(tmp_path, monkeypatch):
    from kexp.datasets.pipeline import read_data
    from kexp.datasets.synthetic import SyntheticOptions
    from kexp.models.mlp import MlpOptions

    calls = []
    validate = SyntheticOptions.model_validate.__func__
    monkeypatch.setattr(SyntheticOptions, "model_validate", classmethod(lambda cls, obj, **kw: calls.append(obj) or validate(cls, obj, **kw)))
    spec = load_spec(write_text(tmp_path, "name: s\ndata: {name: synthetic, samples: 40}\nmodel: {name: mlp, hidden_units: [4]}\n"))
    assert isinstance(spec.data.options, SyntheticOptions) and spec.data.options.samples == 40
    assert isinstance(spec.model.options, MlpOptions) and spec.model.options.hidden_units == [4]
    assert len(read_data(spec, tmp_path)) == 40
    assert calls == [{"samples": 40}]  # once, when the spec was loaded; the reader got the same object


def test_saved_sections_stay_flat(tmp_path):
    spec = load_spec(write_text(tmp_path, "name: s\ndata: {name: synthetic, split_seed: 5}\nmodel: mlp\n"))
    document = spec.model_dump(mode="json")
    assert list(document["data"])[:3] == ["name", "split_seed", "samples"] and "options" not in document["data"]
    assert list(document["model"])[:2] == ["name", "hidden_units"]


def test_a_section_checked_beside_a_top_level_error_keeps_its_own_keys(tmp_path):
    # split_seed is the data section's own key, not a dataset option, even when the top level failed elsewhere
    path = write_text(tmp_path, "name: 'bad name'\ndata: {name: synthetic, split_seed: 3}\nmodel: mlp\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:1: name: String should match pattern")


def test_datasets_say_their_hold_out_and_table_layout(tmp_path):
    from kexp.datasets.csv import PIMA_LABEL_COLUMN

    pima = load_spec(write_text(tmp_path, "name: p\ndata: {name: pima, test_fraction: 0.25}\nmodel: mlp\n")).data.options
    assert pima.held_out_fraction() == 0.25 and pima.table_layout().label_column == PIMA_LABEL_COLUMN
    csv = load_spec(write_text(tmp_path, "name: c\ndata: {name: csv, path: a.csv, delimiter: ';', label_column: y}\nmodel: mlp\n")).data.options
    assert (csv.table_layout().delimiter, csv.table_layout().label_column, csv.held_out_fraction()) == (";", "y", 0.0)
    mnist = load_spec(write_text(tmp_path, "name: m\ndata: mnist\nmodel: mlp\n")).data.options
    assert mnist.held_out_fraction() == 0.0 and mnist.table_layout().delimiter == ","
