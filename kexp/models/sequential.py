"""`sequential`: any Keras Sequential model written as a list of layers in YAML.

    model:
      name: sequential
      layers:
        - Dense: {units: 12, activation: relu}
        - Dense: {units: 8, activation: relu}
        - Dense: {units: 1, activation: sigmoid}

The input layer comes from the dataset; the last layer is the user's, so its size
must match the task (1 for binary, the class count otherwise). Class names, argument names,
required arguments and activation/initializer names are checked against the Keras catalog
when the spec is validated (checks.py); the output size only once the data is known.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from kexp.models.checks import LayerItem
from kexp.registry import Options, model


class SequentialOptions(Options):
    layers: list[LayerItem] = Field(min_length=1, description="one {LayerClass: {kwargs}} per layer")

    @field_validator("layers", mode="before")
    @classmethod
    def _one_layer_per_item(cls, layers: Any) -> Any:
        if isinstance(layers, list):
            for i, item in enumerate(layers):
                if not isinstance(item, dict) or len(item) != 1:
                    raise ValueError(f"item {i} must be a single `LayerName: {{arguments}}` mapping, got {item!r}")
                key = next(iter(item))
                if item[key] is None:
                    item[key] = {}
        return layers


@model("sequential", SequentialOptions)
def build_sequential(options: SequentialOptions, input_shape: tuple[int, ...], num_outputs: int, task: str = "classification"):
    """A keras.Sequential of the listed layers, e.g. `- Dense: {units: 12, activation: relu}`."""
    import keras

    net = keras.Sequential([keras.Input(shape=input_shape)], name="sequential")
    shape = (None, *input_shape)
    for index, item in enumerate(options.layers):
        shape = add_layer(net, index, item, shape)
    check_output_shape(shape, num_outputs)
    return net


def add_layer(net, index: int, item: dict[str, dict[str, Any]], shape: tuple) -> tuple:
    """Append one `{LayerClass: {kwargs}}` to `net` and return the new output shape.

    The names were checked when the spec was validated; what is left can only fail here:
    a value Keras refuses, or a layer that cannot take the shape the one before gives.
    """
    import keras

    ((class_name, kwargs),) = item.items()
    try:
        layer = getattr(keras.layers, class_name)(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model.layers.{index}: {class_name}({kwargs}): {one_line(exc)}") from None
    try:
        net.add(layer)
    except ValueError as exc:
        raise ValueError(f"model.layers.{index}: {class_name} cannot take the previous output, shape {shape}: {one_line(exc)}") from None
    return tuple(net.output_shape)


def check_output_shape(shape: tuple, num_outputs: int) -> None:
    """The last layer must give one row of `num_outputs` per example, as the loss expects."""
    needs = "(1 sigmoid unit for binary_crossentropy, one unit per class otherwise)"
    if len(shape) != 2:
        raise ValueError(
            f"model.layers: the last layer gives outputs of shape {shape} but this task needs (None, {num_outputs}) {needs}; "
            "put Flatten or a global pooling layer before the last Dense"
        )
    if shape[-1] != num_outputs:
        raise ValueError(f"model.layers: the last layer gives {shape[-1]} outputs but this task needs {num_outputs} {needs}")


def one_line(exc: Exception) -> str:
    """Keras' message on one line (some span several)."""
    return " ".join(str(exc).split())
