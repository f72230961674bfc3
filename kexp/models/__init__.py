"""Model builders, one module per registered name (`model: {name: <module>}`).

A builder is `fn(options, input_shape, num_outputs) -> keras.Model` (uncompiled).
`num_outputs` is 1 for a binary task with a sigmoid output, else the class count.
Builders import Keras inside the function so listing and validating stay fast.
"""

from kexp.models import cnn, mlp, sequential  # noqa: F401  (registers builders)
