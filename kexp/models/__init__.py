"""Model builders, one module per registered name (`model: {name: <module>}`).

A builder is `fn(options, input_shape, num_outputs, task) -> keras.Model` (uncompiled).
`num_outputs` is 1 for a binary task with a sigmoid output or for regression (a linear
output), else the class count; heads.py picks the output activation from the task.
Builders import Keras inside the function so listing and validating stay fast; the
options' Keras names (activations, layer arguments) are checked against catalog.py's JSON
by checks.py without importing Keras. saving.py reopens saved models, in safe mode only.
"""

from kexp.models import cnn, mlp, sequential  # noqa: F401  (registers builders)
