"""kexp: Keras experiments from YAML specs.

The public API for plugins, the one the built-in datasets and models use:

    import kexp

    @kexp.model("two_tower", TwoTowerOptions)       # options: a kexp.Options subclass (unknown keys refused)
    def build(options, input_shape, num_outputs, task): ...   # -> any keras.Model, uncompiled

    @kexp.dataset("my_data", MyOptions)
    def read(options, data_dir, seed): ...          # -> kexp.Examples(x=..., y=..., class_names=...)
"""

__version__ = "0.2.0"

# Read lazily, so `import kexp` stays as fast as the CLI needs (numpy only when a plugin asks).
_PUBLIC = {
    "dataset": "kexp.registry",
    "model": "kexp.registry",
    "Options": "kexp.registry",
    "Examples": "kexp.datasets.base",
    "RawData": "kexp.datasets.base",
}
__all__ = ["Examples", "Options", "RawData", "__version__", "dataset", "model"]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'kexp' has no attribute '{name}'")
