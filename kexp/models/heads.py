"""The output layer every builder ends with, so the task decides it in one place."""

from __future__ import annotations


def output_activation(num_outputs: int, override: str | None = None, task: str = "classification") -> str:
    """linear for regression, sigmoid for one output (binary), softmax for several (one per class)."""
    if override:
        return override
    if task == "regression":
        return "linear"
    return "sigmoid" if num_outputs == 1 else "softmax"


def dense_output(num_outputs: int, override: str | None = None, task: str = "classification"):
    import keras

    return keras.layers.Dense(num_outputs, activation=output_activation(num_outputs, override, task), name="output")
