import pytest

from kexp.errors import ModelError
from kexp.experiment import build_model
from kexp.spec import validate_spec


def spec_with(model: dict):
    return validate_spec({"name": "m", "data": {"name": "synthetic"}, "model": model})


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


def test_sequential_from_yaml_layers():
    layers = [{"Dense": {"units": 12, "activation": "relu"}}, {"Dense": {"units": 8, "activation": "relu"}}, {"Dense": {"units": 1, "activation": "sigmoid"}}]
    net = build_model(spec_with({"name": "sequential", "layers": layers}), (8,), 1)
    assert net.output_shape == (None, 1)
    assert net.count_params() == (8 * 12 + 12) + (12 * 8 + 8) + (8 + 1)


def test_sequential_unknown_layer_suggests():
    with pytest.raises(ModelError, match=r"model.layers.0: unknown Keras layer 'Dens'. Did you mean 'Dense'\?"):
        build_model(spec_with({"name": "sequential", "layers": [{"Dens": {"units": 1}}]}), (8,), 1)


def test_sequential_bad_arguments_name_the_layer():
    with pytest.raises(ModelError, match=r"model.layers.0: Dense\("):
        build_model(spec_with({"name": "sequential", "layers": [{"Dense": {"unitz": 1}}]}), (8,), 1)


def test_sequential_output_must_fit_task():
    with pytest.raises(ModelError, match="the last layer gives 3 outputs but this task needs 1"):
        build_model(spec_with({"name": "sequential", "layers": [{"Dense": {"units": 3}}]}), (8,), 1)
