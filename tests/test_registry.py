import pytest

from kexp.registry import DATASETS, MODELS, Registry, load_components
from kexp.spec import Options


def test_registered_names_match_modules():
    load_components()
    assert {"csv", "pima", "mnist", "synthetic"} <= set(DATASETS.names())
    assert {"mlp", "cnn", "sequential"} <= set(MODELS.names())


def test_duplicate_name_is_refused():
    registry = Registry("thing")
    registry.register("a", Options)(lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", Options)(lambda: None)


def test_unknown_name_suggests_nearest_and_lists_all():
    load_components()
    with pytest.raises(KeyError) as info:
        MODELS.get("mpl")
    message = info.value.args[0]
    assert "Unknown model 'mpl'. Did you mean 'mlp'?" in message
    assert "Available: cnn, mlp, sequential" in message


def test_unknown_name_without_close_match_lists_choices():
    load_components()
    with pytest.raises(KeyError) as info:
        DATASETS.get("zzzz")
    assert "Did you mean" not in info.value.args[0]
    assert "pima" in info.value.args[0]
