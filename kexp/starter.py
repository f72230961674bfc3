"""`kexp init`: a commented starter spec with every option at its default, or a tutorial config.

The starter is rendered from the spec's own pydantic models, so it cannot drift from what
`kexp validate` accepts: the values are a minimal spec validated and resolved like any other,
and each comment is the field's description, else the comment written above the field in its
source (spec.py documents most fields that way), plus the choices a Literal type allows.

Tutorial configs are the files in configs/. A wheel ships them as kexp/_configs (a
package-dir mapping in pyproject.toml, so there is one copy in the repository); a checkout
reads configs/ itself.
"""

from __future__ import annotations

import importlib.resources
import inspect
import json
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import kexp
from kexp.errors import KexpError, SpecError
from kexp.registry import DATASETS, MODELS, Options, Registry, closest, load_components

DEFAULT_DATASET, DEFAULT_MODEL = "pima", "mlp"
WIDTH = 100  # comment lines wrap here, like the tutorial configs
# Required options have no default to show; these stand in so the starter validates, and say so.
DATA_PLACEHOLDERS = {"path": "my_data.csv"}  # csv, text_csv; the sequential model gets example layers
# Datasets whose required path is not a CSV file.
PATH_PLACEHOLDERS = {"numpy": "my_arrays.npz", "image_folder": "my_images"}
PLACEHOLDER_NOTE = "REQUIRED: an example value; replace it with yours."
# Data options a model needs to train at all (the cnn takes 28x28x1 images, not 784-vectors).
MODEL_NEEDS = {"cnn": {"flatten": False}}


# --- tutorial configs --------------------------------------------------------------------


def example_dir() -> Any:
    """The tutorial configs: kexp/_configs in an installed wheel, else the checkout's configs/."""
    packaged = importlib.resources.files("kexp") / "_configs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "configs"


def example_names() -> list[str]:
    folder = example_dir()
    return sorted(item.name.removesuffix(".yaml") for item in folder.iterdir() if item.name.endswith(".yaml")) if folder.is_dir() else []


def read_example(name: str, path: Path | None = None) -> str:
    """The text of tutorial config `name` (configs/NAME.yaml), comments and all; copied to `path`,
    its comments' commands name the copy (`kexp train my_pima.yaml`), not the tutorial file."""
    names = example_names()
    if name.removesuffix(".yaml") not in names:
        close = closest(name, names)
        hint = f" Did you mean '{close}'?" if close else ""
        raise SpecError([f"--from {name}: no such tutorial config.{hint} Available: {', '.join(names) or 'none (configs/ not found)'}"])
    stem = name.removesuffix(".yaml")
    text = (example_dir() / f"{stem}.yaml").read_text(encoding="utf-8")
    if path is None:
        return text
    lines = [line.replace(f"configs/{stem}.yaml", str(path)) if line.lstrip().startswith("#") else line for line in text.splitlines(keepends=True)]
    return f"# copied from kexp's tutorial config configs/{stem}.yaml (kexp init --from {stem})\n" + "".join(lines)


def write_text(text: str, path: Path, force: bool) -> None:
    """Write a spec file, refusing to replace an existing one unless `force`."""
    if path.exists() and not force:
        raise KexpError(f"{path} already exists; add --force to replace it")
    if path.is_dir():
        raise KexpError(f"{path} is a directory; give a file name such as {path / 'experiment.yaml'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --- the starter spec --------------------------------------------------------------------


def render_starter(dataset: str = DEFAULT_DATASET, model: str = DEFAULT_MODEL, path: Path | None = None) -> str:
    """A spec for `dataset` and `model` with every option at its default, each commented."""
    from kexp.spec import ExperimentSpec, validate_spec

    load_components()
    data_entry, model_entry = find_entry(DATASETS, dataset, "--dataset"), find_entry(MODELS, model, "--model")
    stem = path.stem if path is not None else ""
    name = stem if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", stem) else f"{dataset}_{model}"
    data_raw = starter_data_options(data_entry.options, model, dataset)
    model_raw = starter_model_options(model_entry.options, data_entry.options.model_validate(data_raw))
    spec = validate_spec({"name": name, "data": {"name": dataset, **data_raw}, "model": {"name": model, **model_raw}}, "kexp init")
    values = spec.model_dump(mode="json")
    lines = header_lines(dataset, model, path)
    for field, info in ExperimentSpec.model_fields.items():
        lines.append("")
        if field in ("data", "model"):
            entry = data_entry if field == "data" else model_entry
            lines += render_component(field, entry, values[field])
        else:
            lines += render_field(field, field, values[field], info, field_comments(ExperimentSpec).get(field, ""), 0)
    return "\n".join(lines) + "\n"


def find_entry(registry: Registry, name: str, option: str) -> Any:
    try:
        return registry.get(name)
    except KeyError as exc:
        raise SpecError([f"{option} {name}: {exc.args[0]}"]) from None


def starter_data_options(options: type[BaseModel], model: str, dataset: str = "") -> dict[str, Any]:
    """The data options the starter must set: placeholders for required ones, and what the model needs."""
    placeholders = {**DATA_PLACEHOLDERS, "path": PATH_PLACEHOLDERS.get(dataset, DATA_PLACEHOLDERS["path"])}
    raw = {key: value for key, value in placeholders.items() if key in options.model_fields and options.model_fields[key].is_required()}
    raw.update({key: value for key, value in MODEL_NEEDS.get(model, {}).items() if key in options.model_fields})
    return raw


def starter_model_options(options: type[BaseModel], data: Options) -> dict[str, Any]:
    """Example layers for the `sequential` model (its one required option), sized for the task when known."""
    if not ("layers" in options.model_fields and options.model_fields["layers"].is_required()):
        return {}
    classes = data.static_num_classes()
    if data.static_task() == "regression":
        output = {"Dense": {"units": 1}}
    elif classes is not None and classes > 2:
        output = {"Dense": {"units": classes, "activation": "softmax"}}
    else:
        output = {"Dense": {"units": 1, "activation": "sigmoid"}}
    return {"layers": [{"Dense": {"units": 16, "activation": "relu"}}, output]}


def header_lines(dataset: str, model: str, path: Path | None) -> list[str]:
    shown = str(path) if path is not None else "experiment.yaml"
    return [
        f"# Starter spec: {dataset} data, {model} model, every option at its default (kexp init, kexp {kexp.__version__}).",
        "# Each comment says what the option does; delete the ones you keep at their default.",
        f"#   kexp validate {shown}                      # check it (no data read, no TensorFlow)",
        f"#   KEXP_DATA_DIR=path/to/data kexp train {shown}",
        "# `kexp datasets` and `kexp models` list the other data sets and models with their options.",
    ]


def render_component(section: str, entry: Any, values: dict[str, Any]) -> list[str]:
    """`data:` or `model:`: the registry name, then (data only) split_seed, then the entry's options."""
    from kexp.spec import ComponentSpec, DataSpec

    registry = DATASETS if section == "data" else MODELS
    holder = DataSpec if section == "data" else ComponentSpec
    kind = "datasets" if section == "data" else "models"
    lines = [f"{section}:"]
    lines += comment_lines(f"One of {', '.join(registry.names())} (`kexp {kind}` lists their options). {entry.name}: {entry.summary}", 2)
    lines.append(f"  name: {flow(entry.name)}")
    for field, info in holder.model_fields.items():
        if field not in ("name", "options"):  # the options follow, one by one
            lines += render_field(f"{section}.{field}", field, values[field], info, field_comments(holder).get(field, ""), 2)
    for field, info in entry.options.model_fields.items():
        note = PLACEHOLDER_NOTE if info.is_required() else ""
        comment = join(note, field_comments(entry.options).get(field, ""))
        lines += render_field(f"{section}.{field}", field, values[field], info, comment, 2)
    return lines


def render_field(dotted: str, key: str, value: Any, info: Any, comment: str, indent: int) -> list[str]:
    """One option: its comment, then `key: value`; a nested model becomes an indented section."""
    nested = model_in(info.annotation)
    comment = join(comment, describe_choices(dotted, info.annotation), describe_unset_section(nested, value))
    lines = comment_lines(comment, indent)
    pad = " " * indent
    if nested is not None and isinstance(value, dict):
        lines.append(f"{pad}{key}:")
        comments = field_comments(nested)
        for field, sub in nested.model_fields.items():
            lines += render_field(f"{dotted}.{field}", field, value[field], sub, comments.get(field, ""), indent + 2)
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        lines.append(f"{pad}{key}:")
        lines += [f"{pad}  - {flow(item)}" for item in value]
    else:
        lines.append(f"{pad}{key}: {flow(value)}")
    return lines


def describe_choices(dotted: str, annotation: Any) -> str:
    """The values a field allows when its type says so (a Literal), or what a validator accepts (optimizer, loss, metrics)."""
    from kexp.spec import OPTIMIZER_ARGS
    from kexp.task import LOSSES, METRICS

    if dotted == "train.optimizer.name":
        return f"One of {', '.join(sorted(OPTIMIZER_ARGS))}; its own arguments go beside it (e.g. beta_1, momentum)."
    if dotted == "train.loss":
        return f"One of {', '.join(sorted(LOSSES))}."
    if dotted == "train.metrics":
        return f"Any of {', '.join(sorted(METRICS))}; null: the task's default."
    literals, others = literal_values(annotation)
    if not literals or others:
        return ""
    return "One of " + ", ".join(flow(value) for value in literals) + "."


def literal_values(annotation: Any) -> tuple[list[Any], bool]:
    """(the Literal values and None an annotation admits, whether it admits anything else)."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation)), False
    if annotation is type(None):
        return [None], False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        values, others = [], False
        for arg in typing.get_args(annotation):
            found, other = literal_values(arg)
            values, others = values + found, others or other
        return values, others
    return [], True


def describe_unset_section(nested: type[BaseModel] | None, value: Any) -> str:
    """For a section that is off by default (early_stopping: null): the mapping that turns it on."""
    if nested is None or value is not None:
        return ""
    defaults = {name: info.get_default(call_default_factory=True) for name, info in nested.model_fields.items() if not info.is_required()}
    return f"null: off; or a mapping such as {flow(json.loads(json.dumps(defaults)))}."


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds directly or as a union member (not inside a list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is list:
        return None
    for arg in typing.get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """Each field's description, else the `#` comment lines written right above it in the class source."""
    comments: dict[str, str] = {}
    for cls in reversed([c for c in model.__mro__ if isinstance(c, type) and issubclass(c, BaseModel) and c is not BaseModel]):
        comments.update(source_comments(cls))
    for name, info in model.model_fields.items():
        if info.description:
            comments[name] = info.description
    return comments


def source_comments(cls: type) -> dict[str, str]:
    """{field: the comment block directly above `field: ...` in the class body}; {} without source."""
    try:
        lines = inspect.getsource(cls).splitlines()[1:]
    except (OSError, TypeError):
        return {}
    body = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=4)
    comments, pending = {}, []
    for line in lines:
        indent, text = len(line) - len(line.lstrip()), line.strip()
        if indent == body and text.startswith("#"):
            pending.append(text.lstrip("#").strip())
            continue
        match = re.match(r"(\w+)\s*:", text) if indent == body else None
        if match and pending and match[1] in getattr(cls, "__annotations__", {}):
            comments[match[1]] = re.sub(r"\bNone\b", "null", " ".join(pending))  # written for Python readers; YAML says null
        pending = []
    return comments


def comment_lines(text: str, indent: int) -> list[str]:
    pad = " " * indent
    return [f"{pad}# {line}" for line in textwrap.wrap(text, WIDTH - indent - 2, break_on_hyphens=False)] if text else []


def join(*parts: str) -> str:
    return " ".join(p.strip() if p.strip().endswith((".", "?", ")")) else p.strip() + "." for p in parts if p and p.strip())


# --- values as YAML ------------------------------------------------------------------------

PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


def flow(value: Any) -> str:
    """A value as one line of YAML flow style that kexp's loader reads back as the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return value if PLAIN.fullmatch(value) and value.lower() not in ("true", "false", "null") else json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{flow(str(k))}: {flow(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(flow(item) for item in value) + "]"
