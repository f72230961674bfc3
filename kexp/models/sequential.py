"""`sequential`: any Keras Sequential model written as a list of layers in YAML.

    model:
      name: sequential
      layers:
        - Dense: {units: 12, activation: relu}
        - Dense: {units: 8, activation: relu}
        - Dense: {units: 1, activation: sigmoid}

The input layer comes from the dataset; the last layer is the user's, so its size
must match the task (1 for binary, the class count otherwise).
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import Field, field_validator

from kexp.registry import model
from kexp.spec import Options


class SequentialOptions(Options):
    layers: list[dict[str, dict[str, Any]]] = Field(min_length=1, description="one {LayerClass: {kwargs}} per layer")

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


def make_layer(index: int, item: dict[str, dict[str, Any]]):
    import keras

    (class_name, kwargs), = item.items()
    layer_class = getattr(keras.layers, class_name, None)
    if not isinstance(layer_class, type) or not issubclass(layer_class, keras.layers.Layer):
        known = [n for n in dir(keras.layers) if n[:1].isupper()]
        close = difflib.get_close_matches(class_name, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"model.layers.{index}: unknown Keras layer '{class_name}'.{hint}")
    try:
        return layer_class(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model.layers.{index}: {class_name}({kwargs}): {exc}") from None


@model("sequential", SequentialOptions)
def build_sequential(options: SequentialOptions, input_shape: tuple[int, ...], num_outputs: int):
    """A keras.Sequential of the listed layers, e.g. `- Dense: {units: 12, activation: relu}`."""
    import keras

    layers = [keras.Input(shape=input_shape)] + [make_layer(i, item) for i, item in enumerate(options.layers)]
    net = keras.Sequential(layers, name="sequential")
    if net.output_shape[-1] != num_outputs:
        raise ValueError(
            f"model.layers: the last layer gives {net.output_shape[-1]} outputs but this task needs {num_outputs} "
            "(1 sigmoid unit for binary_crossentropy, one unit per class otherwise)"
        )
    return net
