"""`cnn`: convolution blocks then a dense head (the MNIST CNN tutorial)."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from kexp.models.checks import Activation
from kexp.models.heads import dense_output
from kexp.registry import Options, model


class ConvBlock(Options):
    filters: PositiveInt
    kernel_size: PositiveInt = 3
    activation: Activation = "relu"
    pool: PositiveInt | None = Field(default=None, description="max-pool size after the convolution")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class CnnOptions(Options):
    conv_blocks: list[ConvBlock] = Field(
        default=[ConvBlock(filters=32), ConvBlock(filters=64, pool=2, dropout=0.25)], min_length=1
    )
    dense_units: list[PositiveInt] = [128]
    dense_activation: Activation = "relu"
    dense_dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    output_activation: Activation | None = None


@model("cnn", CnnOptions)
def build_cnn(options: CnnOptions, input_shape: tuple[int, ...], num_outputs: int, task: str = "classification"):
    """Conv2D blocks (optional max-pool and dropout each), flatten, Dense head."""
    import keras

    if len(input_shape) != 3:
        raise ValueError(f"cnn needs image inputs (height, width, channels), got shape {input_shape}; for mnist set data.flatten=false")
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = inputs
    for i, block in enumerate(options.conv_blocks, 1):
        x = keras.layers.Conv2D(block.filters, block.kernel_size, activation=block.activation, name=f"conv_{i}")(x)
        if block.pool:
            x = keras.layers.MaxPooling2D(block.pool, name=f"pool_{i}")(x)
        if block.dropout:
            x = keras.layers.Dropout(block.dropout, name=f"conv_dropout_{i}")(x)
    x = keras.layers.Flatten()(x)
    for i, units in enumerate(options.dense_units, 1):
        x = keras.layers.Dense(units, activation=options.dense_activation, name=f"dense_{i}")(x)
        if options.dense_dropout:
            x = keras.layers.Dropout(options.dense_dropout, name=f"dense_dropout_{i}")(x)
    return keras.Model(inputs, dense_output(num_outputs, options.output_activation, task)(x), name="cnn")
