"""`two_tower`: a functional Keras model with two towers over the same input, merged before the output.

A convolutional tower reads the input as an image and a dense tower reads it flattened, so it
suits MNIST-like data given either as [n, 28, 28] images or as [n, 784] rows (a square number
of features is read as a square image); for other tables the convolutional tower is left out.
"""

from __future__ import annotations

import math

from pydantic import Field

import kexp


class TwoTowerOptions(kexp.Options):
    filters: int = Field(default=32, ge=1, le=512, description="filters of the convolutional tower's two layers")
    units: int = Field(default=128, ge=1, le=4096, description="units of the dense tower")
    dropout: float = Field(default=0.25, ge=0.0, lt=1.0, description="after the merge")


@kexp.model("two_tower", TwoTowerOptions)
def build_two_tower(options: TwoTowerOptions, input_shape: tuple[int, ...], num_outputs: int, task: str = "classification"):
    """Two towers (convolutional on the image, dense on the flattened input), concatenated, then the output layer."""
    import keras

    inputs = keras.Input(shape=input_shape, name="inputs")
    flat = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    dense = keras.layers.Dense(options.units, activation="relu", name="dense_tower")(flat)
    towers = [dense]
    image = image_shape(input_shape)
    if image is not None:
        x = keras.layers.Reshape(image)(inputs)
        x = keras.layers.Conv2D(options.filters, 3, activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Conv2D(options.filters, 3, activation="relu")(x)
        towers.append(keras.layers.GlobalAveragePooling2D(name="conv_tower")(x))
    merged = keras.layers.Concatenate()(towers) if len(towers) > 1 else dense
    merged = keras.layers.Dropout(options.dropout)(merged)
    if task == "regression":
        outputs = keras.layers.Dense(1, name="output")(merged)
    else:
        outputs = keras.layers.Dense(num_outputs, activation="sigmoid" if num_outputs == 1 else "softmax", name="output")(merged)
    return keras.Model(inputs, outputs, name="two_tower")


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(h, w, channels) for an image input ([h, w], [h, w, c], or a square number of features); None for a table."""
    if len(input_shape) == 3:
        return tuple(input_shape)
    if len(input_shape) == 2:
        return (*input_shape, 1)
    side = math.isqrt(input_shape[0])
    return (side, side, 1) if side * side == input_shape[0] and side >= 8 else None
