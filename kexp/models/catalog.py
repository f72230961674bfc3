"""The Keras names that model options are checked against, readable without importing Keras.

`keras_catalog.json` records, for the Keras version it was made from: every layer class in
`keras.layers` with the keyword arguments its constructor accepts and which are required;
the activation names `keras.activations.get` accepts; the initializer names
`keras.initializers.get` accepts. It is made by introspecting the installed Keras; after
upgrading Keras, rebuild it (a test fails until then):

    python -m kexp.models.catalog --write

Reading the JSON takes milliseconds where importing Keras (and TensorFlow) takes seconds,
which is what keeps `kexp validate` fast. When the installed Keras is another version than
the file's, `load_catalog` introspects the installed one instead: slow, but a newer Keras
never gets errors for names it has gained.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

CATALOG_PATH = Path(__file__).with_name("keras_catalog.json")

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
# `kwargs.pop("input_dim", None)`, `kwargs.get("x")`, `kwargs["x"]`, `"x" in kwargs`: arguments a
# constructor takes through **kwargs without naming them (Layer's input_shape, LSTM's implementation).
_KWARGS_USE = re.compile(r"""kwargs\s*(?:\.(?:pop|get)\(\s*|\[\s*)["'](\w+)["']|["'](\w+)["']\s+in\s+kwargs\b""")


def installed_keras_version() -> str | None:
    """The installed Keras distribution's version, read from its metadata (no import)."""
    try:
        return importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def load_catalog() -> dict[str, Any]:
    """The catalog for the installed Keras: the shipped file if its version matches, else live."""
    shipped = read_catalog()
    if shipped is not None and shipped["keras_version"] == installed_keras_version():
        return shipped
    return build_catalog()


def read_catalog(path: Path | None = None) -> dict[str, Any] | None:
    """The shipped catalog, or None when the file is missing (e.g. left out of a wheel)."""
    try:
        return json.loads((path or CATALOG_PATH).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


# --- building it from the installed Keras ---------------------------------------------------


def build_catalog() -> dict[str, Any]:
    """Introspect the installed Keras (imports it) into the catalog's shape."""
    import keras

    return {
        "keras_version": installed_keras_version() or keras.__version__,
        "layers": {name: describe_layer(cls, keras.layers.Layer) for name, cls in layer_classes(keras).items()},
        "activations": sorted(activation_names(keras)),
        "initializers": sorted(initializer_names(keras)),
    }


def layer_classes(keras) -> dict[str, type]:
    """Every public class in `keras.layers` that is a Layer, aliases (MaxPool2D) included."""
    found = {}
    for name in dir(keras.layers):
        obj = getattr(keras.layers, name)
        if not name.startswith("_") and isinstance(obj, type) and issubclass(obj, keras.layers.Layer):
            found[name] = obj
    return dict(sorted(found.items()))


def describe_layer(cls: type, base: type) -> dict[str, list[str]]:
    """{"arguments": accepted keyword names, "required": those without a default}.

    A constructor with **kwargs passes them on to its parent (`super().__init__(**kwargs)`),
    so the parents' arguments are accepted too, down to `base` (keras.layers.Layer, which
    takes name, dtype, trainable, ...) or the first constructor without **kwargs.
    """
    accepted: set[str] = set()
    required: list[str] | None = None
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]  # drop self
        named = [p for p in params if p.kind in _NAMED]
        if required is None:  # the class's own constructor decides what must be given
            required = [p.name for p in named if p.default is p.empty]
        accepted |= {p.name for p in named} | names_taken_from_kwargs(klass.__init__)
        if klass is base or not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return {"arguments": sorted(accepted), "required": sorted(required or [])}


def names_taken_from_kwargs(init) -> set[str]:
    try:
        source = inspect.getsource(init)
    except (OSError, TypeError):
        return set()
    return {a or b for a, b in _KWARGS_USE.findall(source)}


def activation_names(keras) -> set[str]:
    """Strings `keras.activations.get` accepts: its lookup table, else the public functions that resolve."""
    table = getattr(getattr(getattr(keras, "src", None), "activations", None), "ALL_OBJECTS_DICT", None)
    candidates = set(table or ()) | {n for n in dir(keras.activations) if not n.startswith("_")}
    return {n for n in candidates if _resolves(keras.activations.get, n)}


def initializer_names(keras) -> set[str]:
    """Strings `keras.initializers.get` accepts (`glorot_uniform`, `GlorotUniform`, `zero`, ...)."""
    table = getattr(getattr(getattr(keras, "src", None), "initializers", None), "ALL_OBJECTS_DICT", None)
    candidates = set(table or ()) | {n for n in dir(keras.initializers) if not n.startswith("_")}
    return {n for n in candidates if _resolves(keras.initializers.get, n)}


def _resolves(get, name: str) -> bool:
    # Asking `get` itself is the only faithful test: some table entries fail for a bare
    # name in some versions (Keras 3.15: `constant` needs a value and raises KeyError).
    try:
        return callable(get(name))
    except Exception:
        return False


def format_catalog(catalog: dict[str, Any]) -> str:
    """JSON with one line per layer, so a Keras upgrade shows up as a readable diff."""
    layers = ",\n".join(f"  {json.dumps(name)}: {json.dumps(spec)}" for name, spec in sorted(catalog["layers"].items()))
    return (
        "{\n"
        f' "keras_version": {json.dumps(catalog["keras_version"])},\n'
        f' "activations": {json.dumps(catalog["activations"])},\n'
        f' "initializers": {json.dumps(catalog["initializers"])},\n'
        f' "layers": {{\n{layers}\n }}\n'
        "}\n"
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m kexp.models.catalog [--write]`: check the shipped catalog against Keras, or rebuild it."""
    # A command-line entry of its own (a developer's check, not part of `kexp`), so it prints; no library code calls it.
    parser = argparse.ArgumentParser(prog="python -m kexp.models.catalog", description=main.__doc__)
    parser.add_argument("--write", action="store_true", help=f"rewrite {CATALOG_PATH.name} from the installed Keras")
    args = parser.parse_args(argv)
    live = build_catalog()
    if args.write:
        CATALOG_PATH.write_text(format_catalog(live), encoding="utf-8")
        print(f"wrote {CATALOG_PATH} (Keras {live['keras_version']}, {len(live['layers'])} layers)")
        return 0
    if read_catalog() == live:
        print(f"{CATALOG_PATH} matches the installed Keras {live['keras_version']}")
        return 0
    print(f"{CATALOG_PATH} is stale for the installed Keras {live['keras_version']}; run: python -m kexp.models.catalog --write")
    return 1


if __name__ == "__main__":
    sys.exit(main())
