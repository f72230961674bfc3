"""kexp: Keras experiments from YAML specs."""

__version__ = "0.2.0"
