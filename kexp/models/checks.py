"""Checks of Keras names in model options, run by `kexp validate` before any data is read.

A misspelt activation or layer argument would otherwise surface minutes later, after the
data has loaded. The names come from the catalog (`catalog.py`, a JSON file made from the
installed Keras), so nothing here imports Keras or TensorFlow. Each check raises ValueError
with one line; pydantic puts the option's key in front (`model.layers.1: ...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

from kexp.registry import closest

# Lambda wraps arbitrary Python: YAML cannot express the function, and a saved model holding
# one cannot be reopened in Keras safe mode, the only way kexp loads models (saving.py).
REFUSED_LAYERS = {"Lambda": "it runs arbitrary Python code, which a YAML spec cannot hold and Keras safe mode will not load"}


def _catalog() -> dict[str, Any]:
    # Imported here, not at the top, so `python -m kexp.models.catalog` runs a module that
    # importing this package has not already loaded.
    from kexp.models.catalog import load_catalog

    return load_catalog()


def suggest(name: str, choices: list[str] | set[str], otherwise: str | None = None) -> str:
    """The message's tail: "; did you mean 'x'?", else `otherwise`, else every choice."""
    close = closest(name, choices)
    if close:
        return f"; did you mean '{close}'?"
    return f"; {otherwise or 'choose from ' + ', '.join(sorted(choices))}"


def check_activation(name: str | None) -> str | None:
    """A name `keras.activations.get` accepts (None means linear)."""
    names = _catalog()["activations"]
    if name is not None and name not in names:
        raise ValueError(f"unknown activation '{name}'{suggest(name, names)}")
    return name


def check_initializer(name: str) -> str:
    """A name `keras.initializers.get` accepts (`glorot_uniform`, `he_normal`, `zeros`, ...)."""
    names = _catalog()["initializers"]
    if name not in names:
        lowercase = sorted(n for n in names if n.islower())  # the CamelCase twins would double the list
        raise ValueError(f"unknown initializer '{name}'{suggest(name, names, 'choose from ' + ', '.join(lowercase))}")
    return name


def check_layer(item: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One `{LayerClass: {kwargs}}` of a sequential model: a known class, known and complete kwargs."""
    ((class_name, kwargs),) = item.items()
    layers = _catalog()["layers"]
    if class_name in REFUSED_LAYERS:
        raise ValueError(f"{class_name} layers are refused: {REFUSED_LAYERS[class_name]}")
    if class_name not in layers:
        raise ValueError(f"unknown Keras layer '{class_name}'{suggest(class_name, layers, 'see https://keras.io/api/layers/')}")
    accepted, required = layers[class_name]["arguments"], layers[class_name]["required"]
    for key, value in kwargs.items():
        if key not in accepted:
            raise ValueError(f"{class_name} takes no argument '{key}'{suggest(key, accepted, 'it takes ' + ', '.join(accepted))}")
        check_argument_value(class_name, key, value)
    missing = [name for name in required if name not in kwargs]
    if missing:
        raise ValueError(f"{class_name} needs {', '.join(repr(name) for name in missing)}")
    if class_name == "TFSMLayer":
        check_saved_model(kwargs["filepath"])
    return item


def check_saved_model(filepath: Any) -> None:
    """TFSMLayer's `filepath` must be an existing SavedModel folder, resolved like Keras does."""
    if isinstance(filepath, str) and "://" in filepath:
        return  # gs://, s3://: only TensorFlow can look there
    if not isinstance(filepath, str) or not Path(filepath).is_dir():
        raise ValueError(f"TFSMLayer filepath {filepath!r} is not an existing SavedModel folder (relative to {Path.cwd()})")


# Arguments whose type and range Keras checks only when the layer is made (after the data
# has loaded): sizes are positive whole numbers, rates fractions in [0, 1).
POSITIVE_INTEGER_ARGUMENTS = {"units", "filters", "output_dim", "input_dim", "num_heads", "key_dim", "depth_multiplier"}
RATE_ARGUMENTS = {"rate", "dropout", "recurrent_dropout"}


def check_argument_value(class_name: str, key: str, value: Any) -> None:
    """Sizes and rates by type and range; names given as strings to `*activation` and `*_initializer`."""
    if key in POSITIVE_INTEGER_ARGUMENTS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{class_name} {key} must be a positive whole number, got {value!r}")
    if key in RATE_ARGUMENTS and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1):
        raise ValueError(f"{class_name} {key} must be a number in [0, 1), got {value!r}")
    if not isinstance(value, str):
        return
    try:
        if key.endswith("activation"):
            check_activation(value)
        elif key.endswith("_initializer"):
            check_initializer(value)
    except ValueError as exc:
        raise ValueError(f"{class_name} {key}: {exc}") from None


Activation = Annotated[str, AfterValidator(check_activation)]
LayerItem = Annotated[dict[str, dict[str, Any]], AfterValidator(check_layer)]
