import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from kexp.errors import ModelError, RunDirError, SpecError
from kexp.models import catalog
from kexp.models.cnn import CnnOptions
from kexp.models.mlp import MlpOptions
from kexp.models.saving import load_model
from kexp.models.sequential import SequentialOptions
from kexp.spec import validate_spec
from kexp.train.compile import build_model


def spec_with(model: dict):
    return validate_spec({"name": "m", "data": {"name": "synthetic"}, "model": model})


def spec_problems(model: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        spec_with(model)
    return info.value.problems


def layer_error(*layers: dict) -> str:
    """The one message validating a sequential model with these layers gives."""
    with pytest.raises(ValidationError) as info:
        SequentialOptions.model_validate({"layers": list(layers)})
    (error,) = info.value.errors()
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


def test_mlp_binary_head_is_one_sigmoid_unit():
    net = build_model(spec_with({"name": "mlp", "hidden_units": [12, 8]}), (8,), 1)
    assert net.output_shape == (None, 1)
    assert net.layers[-1].activation.__name__ == "sigmoid"
    assert [layer.units for layer in net.layers if hasattr(layer, "units")] == [12, 8, 1]


def test_mlp_multiclass_flattens_images_and_uses_softmax():
    net = build_model(spec_with({"name": "mlp", "hidden_units": [100], "activation": "sigmoid", "dropout": 0.2}), (28, 28, 1), 10)
    assert net.output_shape == (None, 10)
    assert net.layers[-1].activation.__name__ == "softmax"
    assert net.count_params() == 784 * 100 + 100 + 100 * 10 + 10
    assert any(layer.__class__.__name__ == "Dropout" for layer in net.layers)


def test_cnn_default_is_the_tutorial_network():
    net = build_model(spec_with({"name": "cnn"}), (28, 28, 1), 10)
    assert net.output_shape == (None, 10)
    assert net.count_params() == 1_199_882  # the Keras MNIST CNN example's parameter count


def test_cnn_rejects_flat_input():
    with pytest.raises(ModelError, match="cnn needs image inputs"):
        build_model(spec_with({"name": "cnn"}), (784,), 10)


def test_usual_yaml_forms_validate_under_strict_options():
    # Options are strict (no coercion); these are the forms the configs and README use.
    assert MlpOptions.model_validate({"hidden_units": [64, 32], "dropout": 0, "activation": "relu"}).dropout == 0
    assert MlpOptions.model_validate({"hidden_units": [50, 50], "dropout": [0.3, 0], "output_activation": None})
    cnn = CnnOptions.model_validate(
        {"conv_blocks": [{"filters": 32, "kernel_size": 3}, {"filters": 64, "pool": 2, "dropout": 0.25}], "dense_dropout": 0}
    )
    assert cnn.conv_blocks[1].pool == 2
    assert SequentialOptions.model_validate({"layers": [{"Flatten": None}, {"Dense": {"units": 1, "activation": "sigmoid"}}]})


def test_mlp_unknown_activation_suggests_the_closest():
    with pytest.raises(ValidationError, match=r"unknown activation 'relux'; did you mean 'relu'\?"):
        MlpOptions.model_validate({"activation": "relux"})
    (problem,) = spec_problems({"name": "mlp", "output_activation": "sigmod"})
    assert problem.startswith("<spec>: model.output_activation: ") and "did you mean 'sigmoid'?" in problem


def test_cnn_unknown_activation_in_a_block_or_the_head():
    with pytest.raises(ValidationError) as info:
        CnnOptions.model_validate({"conv_blocks": [{"filters": 8, "activation": "rleu"}], "dense_activation": "tahn", "output_activation": "softmx"})
    found = {".".join(map(str, e["loc"])): e["msg"] for e in info.value.errors()}
    assert "did you mean 'relu'?" in found["conv_blocks.0.activation"]
    assert "did you mean 'tanh'?" in found["dense_activation"]
    assert "did you mean 'softmax'?" in found["output_activation"]


def test_sequential_unknown_argument_suggests_the_closest():
    message = layer_error({"Dense": {"units": 1}}, {"Dense": {"unit": 1}})
    assert message == "layers.1: Value error, Dense takes no argument 'unit'; did you mean 'units'?"


def test_sequential_accepts_arguments_of_the_base_layer():
    layers = [{"Dense": {"units": 4, "name": "hidden", "dtype": "float32", "trainable": False, "kernel_initializer": "he_normal"}}]
    assert SequentialOptions.model_validate({"layers": layers})
    # SpatialDropout1D's constructor has no **kwargs, so it really does not take `trainable`
    assert "takes no argument 'trainable'" in layer_error({"SpatialDropout1D": {"rate": 0.1, "trainable": False}})


def test_sequential_missing_required_argument():
    assert layer_error({"Dense": {"activation": "relu"}}) == "layers.0: Value error, Dense needs 'units'"
    assert "Conv2D needs 'filters', 'kernel_size'" in layer_error({"Conv2D": None})


def test_sequential_unknown_layer_suggests():
    (problem,) = spec_problems({"name": "sequential", "layers": [{"Dens": {"units": 1}}]})
    assert problem.startswith("<spec>: model.layers.0: ") and "unknown Keras layer 'Dens'; did you mean 'Dense'?" in problem


def test_sequential_activation_and_initializer_arguments_are_names():
    assert "Dense activation: unknown activation 'relux'; did you mean 'relu'?" in layer_error({"Dense": {"units": 1, "activation": "relux"}})
    message = layer_error({"LSTM": {"units": 4, "recurrent_initializer": "orthogonl"}})
    assert "LSTM recurrent_initializer: unknown initializer 'orthogonl'; did you mean 'orthogonal'?" in message


def test_sequential_refuses_lambda_layers():
    assert "Lambda layers are refused" in layer_error({"Lambda": {"function": "lambda x: x"}})


def test_sequential_tfsmlayer_needs_an_existing_saved_model(tmp_path):
    missing = str(tmp_path / "no_such_model")
    assert f"TFSMLayer filepath '{missing}' is not an existing SavedModel folder" in layer_error({"TFSMLayer": {"filepath": missing}})
    assert SequentialOptions.model_validate({"layers": [{"TFSMLayer": {"filepath": str(tmp_path)}}]})


def test_catalog_matches_the_installed_keras():
    """Fails after a Keras upgrade until `python -m kexp.models.catalog --write` is run."""
    assert catalog.read_catalog() == catalog.build_catalog()


def test_catalog_of_another_keras_version_is_not_trusted(tmp_path, monkeypatch):
    stale = tmp_path / "catalog.json"
    stale.write_text(json.dumps({"keras_version": "0.0.1", "layers": {}, "activations": [], "initializers": []}))
    monkeypatch.setattr(catalog, "CATALOG_PATH", stale)
    catalog.load_catalog.cache_clear()
    try:
        assert "Dense" in catalog.load_catalog()["layers"]  # introspected from the installed Keras
    finally:
        catalog.load_catalog.cache_clear()


def test_validating_model_names_imports_neither_keras_nor_tensorflow():
    code = (
        "import sys, time\nstart = time.perf_counter()\nfrom kexp.errors import SpecError\nfrom kexp.spec import validate_spec\n"
        "layers = [{'Dense': {'units': 8, 'activation': 'relu', 'kernel_initializer': 'he_normal'}}, {'Dropout': {'rate': 0.5}}, {'Dense': {'units': 1}}]\n"
        "for model in ({'name': 'sequential', 'layers': layers}, {'name': 'mlp', 'activation': 'gelu'}, {'name': 'cnn'}):\n"
        "    validate_spec({'name': 'm', 'data': {'name': 'synthetic'}, 'model': model})\n"
        "try:\n    validate_spec({'name': 'm', 'data': {'name': 'synthetic'}, 'model': {'name': 'sequential', 'layers': [{'Dense': {'unit': 1}}]}})\n"
        "except SpecError as e:\n    print(e)\n"
        "print(time.perf_counter() - start, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert "did you mean 'units'?" in out[0]
    seconds, tensorflow, keras = out[1].split()
    assert (tensorflow, keras) == ("False", "False")
    assert float(seconds) < 2


def test_sequential_from_yaml_layers():
    layers = [{"Dense": {"units": 12, "activation": "relu"}}, {"Dense": {"units": 8, "activation": "relu"}}, {"Dense": {"units": 1, "activation": "sigmoid"}}]
    net = build_model(spec_with({"name": "sequential", "layers": layers}), (8,), 1)
    assert net.output_shape == (None, 1)
    assert net.count_params() == (8 * 12 + 12) + (12 * 8 + 8) + (8 + 1)


def test_sequential_value_keras_refuses_names_the_layer():
    # a value the catalog does not know the rules of (a regularizer name) is still caught when the layer is made
    with pytest.raises(ModelError, match=r"model.layers.0: Dense\(\{'units': 4, 'kernel_regularizer': 'l3'\}\): Could not interpret regularizer identifier: l3"):
        build_model(spec_with({"name": "sequential", "layers": [{"Dense": {"units": 4, "kernel_regularizer": "l3"}}, {"Dense": {"units": 1}}]}), (8,), 1)


def test_sequential_layer_that_cannot_take_the_shape_names_it():
    layers = [{"Dense": {"units": 4}}, {"Conv2D": {"filters": 1, "kernel_size": 3}}]
    with pytest.raises(ModelError, match=r"model.layers.1: Conv2D cannot take the previous output, shape \(None, 4\)"):
        build_model(spec_with({"name": "sequential", "layers": layers}), (8,), 1)


def test_sequential_output_must_fit_task():
    with pytest.raises(ModelError, match="the last layer gives 3 outputs but this task needs 1"):
        build_model(spec_with({"name": "sequential", "layers": [{"Dense": {"units": 3}}]}), (8,), 1)
    with pytest.raises(ModelError, match=r"shape \(None, 6, 6, 1\) but this task needs \(None, 1\).*Flatten"):
        build_model(spec_with({"name": "sequential", "layers": [{"Conv2D": {"filters": 1, "kernel_size": 3}}]}), (8, 8, 1), 1)


def test_load_model_refuses_lambda_layers(tmp_path):
    import keras

    net = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(1)])
    path = tmp_path / "model.keras"
    net.save(path)
    with pytest.raises(RunDirError, match=rf"{path}: cannot load the model .*safe mode.*Lambda"):
        load_model(path)


def test_load_model_reopens_a_plain_model_and_names_a_missing_file(tmp_path):
    import keras

    path = tmp_path / "model.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(path)
    assert load_model(path).count_params() == 8
    with pytest.raises(RunDirError, match="no saved model here"):
        load_model(tmp_path / "missing.keras")


@pytest.mark.parametrize("layer, message", [
    ({"Dense": {"units": "12"}}, "Dense units must be a positive whole number, got '12'"),
    ({"Dense": {"units": 2.5}}, "Dense units must be a positive whole number, got 2.5"),
    ({"Dropout": {"rate": 1.5}}, "Dropout rate must be a number in [0, 1), got 1.5"),
])
def test_sequential_sizes_and_rates_are_checked_at_validation(layer, message):
    from pydantic import ValidationError

    from kexp.models.sequential import SequentialOptions

    with pytest.raises(ValidationError) as info:
        SequentialOptions(layers=[layer])
    assert message in str(info.value)
