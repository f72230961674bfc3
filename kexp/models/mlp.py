"""`mlp`: a stack of Dense layers (the Pima, MNIST-dense, IMDB and SMS tutorials)."""

from __future__ import annotations

from pydantic import Field, PositiveInt, model_validator

from kexp.models.checks import Activation
from kexp.models.heads import dense_output
from kexp.registry import Options, model


class MlpOptions(Options):
    hidden_units: list[PositiveInt] = Field(default=[64], description="sizes of the hidden Dense layers")
    activation: Activation = "relu"
    dropout: float | list[float] = Field(default=0.0, description="after each hidden layer; one rate or one per layer")
    output_activation: Activation | None = Field(default=None, description="default: sigmoid for binary, softmax otherwise")

    @model_validator(mode="after")
    def _dropout_matches_layers(self) -> MlpOptions:
        dropout_rates(self.dropout, len(self.hidden_units))
        return self


def dropout_rates(dropout: float | list[float], layers: int) -> list[float]:
    rates = dropout if isinstance(dropout, list) else [dropout] * layers
    if len(rates) != layers:
        raise ValueError(f"dropout lists {len(rates)} rates for {layers} hidden layers")
    if any(not 0.0 <= r < 1.0 for r in rates):
        raise ValueError(f"dropout rates must be in [0, 1), got {rates}")
    return rates


@model("mlp", MlpOptions)
def build_mlp(options: MlpOptions, input_shape: tuple[int, ...], num_outputs: int, task: str = "classification"):
    """Dense layers with optional dropout; inputs of any shape are flattened."""
    import keras

    rates = dropout_rates(options.dropout, len(options.hidden_units))
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for i, (units, rate) in enumerate(zip(options.hidden_units, rates), 1):
        x = keras.layers.Dense(units, activation=options.activation, name=f"dense_{i}")(x)
        if rate > 0:
            x = keras.layers.Dropout(rate, name=f"dropout_{i}")(x)
    return keras.Model(inputs, dense_output(num_outputs, options.output_activation, task)(x), name="mlp")
