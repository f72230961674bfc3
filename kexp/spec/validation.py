"""Validation: a raw mapping -> a resolved `ExperimentSpec`, or every problem as `where: key: message`.

Two passes, so every error names its dotted key: the top level (`name`, `seed`, `train`,
`device`, ...) is checked by `ExperimentSpec`; then `data` and `model` are checked against the
options class of the registry entry their `name` picks. That check is the only one: its typed
result is what the resolved spec carries, so a run's options are validated once.
"""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from kexp.backends import prefer_backend
from kexp.errors import SpecError
from kexp.registry import DATASETS, MODELS, Options, Registry, load_components
from kexp.spec.bases import Lines
from kexp.spec.schema import ComponentSpec, DataSpec, ExperimentSpec, TrainSpec, did_you_mean
from kexp.task import CLASSIFICATION, DEFAULT_METRICS, task_problems

Problems = list[tuple[str, str]]  # (dotted key, message)


def _model_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of `loc` (walking fields, lists and unions)."""
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue  # a list index: the item type was already chosen below
        info = model.model_fields.get(str(part))
        model = _model_in(info.annotation) if info else None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _describe(error: dict, model: type[BaseModel] | None) -> str:
    if error["type"] == "extra_forbidden":
        key = str(error["loc"][-1])
        holder = _model_at(model, error["loc"][:-1])
        if holder is not None:
            keys = list(holder.model_fields)
            return f"unknown key '{key}'{did_you_mean(key, keys)}; valid keys: {', '.join(keys)}"
        return f"unknown key '{key}'"
    msg = error["msg"].removeprefix("Value error, ")  # pydantic's wrapper around a validator's own message
    msg = re.sub(r" or instance of \w+", "", msg)  # pydantic's class names mean nothing to a spec's author
    if error["type"] != "missing" and isinstance(error.get("input"), (str, int, float, bool)):
        shown = repr(error["input"])
        if len(shown) <= 60 and shown not in msg:
            msg += f" (got {shown})"
    return " ".join(msg.split())


# pydantic adds the union member it tried to an error's location (dropout.float, dropout.list[float])
_UNION_MEMBER = re.compile(r"^(?:int|float|str|bool|none|constrained-\w+|list\[.*\]|dict\[.*\]|literal\[.*\]|function-\w+\[.*\])$")


def _problems(exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> Problems:
    """(dotted key, message) per problem; a union's alternatives are one problem, not one per member."""
    merged: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = [str(p) for p in error["loc"] if not (isinstance(p, str) and _UNION_MEMBER.match(p))]
        key = ".".join([prefix.rstrip(".")] * bool(prefix) + loc) or "(top level)"
        message = _describe(error, model)
        if message not in merged.setdefault(key, []):
            merged[key].append(message)
    return [(key, "; or ".join(messages)) for key, messages in merged.items()]


def validate_options(section: str, component: ComponentSpec, registry: Registry) -> tuple[Options | None, Problems]:
    """The section's options as its registry entry's typed `Options` (the one validation they get), or why not."""
    try:
        entry = registry.get(component.name)
    except KeyError as exc:
        return None, [(f"{section}.name", exc.args[0])]
    try:
        return entry.options.model_validate(component.options.model_dump()), []
    except ValidationError as exc:
        return None, _problems(exc, entry.options, prefix=f"{section}.")


def section_options(raw: dict, spec: ExperimentSpec | None, problems: Problems) -> tuple[dict[str, Options], Problems]:
    """Each section's typed options, and their problems. A section is checked from the raw mapping
    when the top level failed (every problem in one pass, as a compiler reports them), but not
    when the top level already found a problem in it."""
    found: dict[str, Options] = {}
    more: Problems = []
    for section, registry in (("data", DATASETS), ("model", MODELS)):
        component = getattr(spec, section) if spec is not None else raw_component(section, raw.get(section))
        if component is None or any(key == section or key.startswith(f"{section}.") for key, _ in problems):
            continue
        options, section_problems = validate_options(section, component, registry)
        more += section_problems
        if options is not None:
            found[section] = options
    return found, more


def resolve_components(spec: ExperimentSpec, data: Options, model: Options) -> ExperimentSpec:
    """The spec holding its sections' typed options (every option filled in, so the saved spec is
    complete) and the task's default metrics."""
    metrics = spec.train.metrics if spec.train.metrics is not None else DEFAULT_METRICS[data.static_task()]
    return spec.model_copy(
        update={
            "data": spec.data.model_copy(update={"options": data}),
            "model": spec.model.model_copy(update={"options": model}),
            "train": spec.train.model_copy(update={"metrics": list(metrics)}),
        }
    )


def spec_task_problems(spec: ExperimentSpec, num_classes: int | None, task: str = CLASSIFICATION) -> Problems:
    """Loss, metrics and early stopping against the task; num_classes None checks what needs no data."""
    train = spec.train
    metrics = train.metrics if train.metrics is not None else DEFAULT_METRICS[task]
    monitor = train.early_stopping.monitor if train.early_stopping else None
    return task_problems(train.loss, metrics, monitor, train.validation_split > 0, num_classes, task)


def loop_conflicts(train: TrainSpec, mirrored: bool) -> list[str]:
    """What in the spec rules out train.loop: xla (a whole epoch per compiled call);
    training.choose_loop adds what only the data can tell."""
    return [reason for reason, present in (
        ("device: all (MirroredStrategy)", mirrored),
        ("train.jit_compile: true (XLA per batch instead)", train.jit_compile),
        ("train.class_weight (Keras weighs batches one at a time)", train.class_weight is not None),
        (f"train.steps_per_execution: {train.steps_per_execution} (a call is the whole epoch)", train.steps_per_execution != "auto"),
        ("train.precision other than float32", train.precision != "float32"),
    ) if present]


def spec_train_problems(spec: ExperimentSpec) -> Problems:
    """Training settings that cannot work together, found by `kexp validate`, before any data is read."""
    train, mirrored = spec.train, spec.device == "all"
    problems = []
    conflicts = loop_conflicts(train, mirrored) if train.loop == "xla" else []
    if conflicts:
        problems.append(("train.loop", f"xla does not work with {conflicts[0]}; use loop: keras or auto"))
    if spec.backend == "jax":
        return problems + jax_problems(spec)
    if mirrored and train.steps_per_execution not in ("auto", 1):
        problems.append(("train.steps_per_execution", f"{train.steps_per_execution} does not work with device: all (Keras 3 fails "
                         "with several batches per call under MirroredStrategy); use auto or 1"))
    return problems


def jax_problems(spec: ExperimentSpec) -> Problems:
    """Settings that only TensorFlow has, refused under backend: jax (one line each)."""
    train, tensorboard = spec.train, spec.train.tensorboard
    return [(key, f"{what} is TensorFlow-only and does not work with backend: jax; {fix}") for key, what, fix, present in (
        ("train.loop", "xla (a whole epoch as one TensorFlow XLA call)", "use loop: keras or auto (JAX compiles each step itself)",
         train.loop == "xla"),
        ("train.threads", f"{train.threads} (TensorFlow's thread pools)", "leave it unset (XLA's CPU client takes the cores)",
         train.threads is not None),
        ("train.tensorboard.profile_batches", "profiling (TensorFlow's profiler)", "leave it unset",
         tensorboard is not None and tensorboard.profile_batches is not None),
    ) if present]


def raw_component(section: str, value: Any) -> ComponentSpec | None:
    """A data/model section as its spec class, or None when it is not one (the top level reports that)."""
    try:
        return (DataSpec if section == "data" else ComponentSpec).model_validate(value)
    except ValidationError:
        return None


def protocol_problems(spec: ExperimentSpec, data_options: Options) -> Problems:
    """k-fold tests on every row, so a hold-out the dataset could turn off (test_fraction may be 0) must be off."""
    fraction = data_options.held_out_fraction()
    if spec.evaluation.protocol != "kfold" or fraction <= 0:
        return []
    try:  # asks the options class whether 0 is allowed; the spec's own options are not validated again
        type(data_options).model_validate({**data_options.model_dump(), "test_fraction": 0})
    except ValidationError:
        return []  # this dataset always holds a test part out; k-fold notes that it is not used
    return [("data.test_fraction", f"must be 0 with evaluation.protocol: kfold, which tests on every row in turn (it is {fraction:g})")]


def check_task(spec: ExperimentSpec, num_classes: int, task: str = CLASSIFICATION) -> None:
    """After the data loads: what only the class count can decide (exit 2, before a run directory exists)."""
    problems = spec_task_problems(spec, num_classes, task)
    if problems:
        raise SpecError([f"{key}: {msg} (found after reading the data)" for key, msg in problems])


def _origin(key: str, source: str, lines: Lines, overrides: dict[str, str]) -> str:
    """Where a bad key came from: the --set that wrote it, or the file:line that set it (the spec's, or a base's)."""
    parent = key.rpartition(".")[0]
    for path, text in overrides.items():
        # the key the override wrote, something inside it, or a check of the section holding it
        if key == path or key.startswith(path + ".") or path.startswith(key + "."):
            return text
        # a section the file never mentions, created by this override (train.early_stopping.patience=2)
        if parent and parent not in lines and path.startswith(parent + "."):
            return text
    probe = key
    while probe:
        if probe in lines:
            return str(lines[probe])
        probe = probe.rpartition(".")[0]
    return source


def validate_spec(
    raw: dict, source: str = "<spec>", lines: Lines | None = None, overrides: dict[str, str] | None = None
) -> ExperimentSpec:
    """Validate a raw mapping; raise SpecError listing every problem as `where: key: message`.

    `overrides` maps each overridden key to where its value came from ("--set train.epochs=2")."""
    load_components()
    lines, overrides = lines or {}, overrides or {}
    prefer_backend(raw.get("backend"))  # before a plugin imports Keras, which reads KERAS_BACKEND once
    import_spec_plugins(raw, source, lines)
    spec, problems = validate_top_level(raw)
    options, section_problems = section_options(raw, spec, problems)
    problems += section_problems
    if spec is not None:
        if not problems:
            problems += data_problems(spec, options["data"])
        problems += spec_train_problems(spec)
    if problems or spec is None:
        raise SpecError([f"{_origin(key, source, lines, overrides)}: {key}: {msg}" for key, msg in problems])
    return resolve_components(spec, options["data"], options["model"])


def import_spec_plugins(raw: dict, source: str, lines: dict) -> None:
    """Import the plugins the spec lists before its sections are checked, since they register the
    datasets and models those sections name; a plugin that fails is one line naming its file and line."""
    from kexp.errors import PluginError
    from kexp.plugins import import_plugin

    names = raw.get("plugins")
    if not isinstance(names, list):
        return  # absent, or not a list: the schema reports it
    for i, name in enumerate(names):
        if isinstance(name, str):
            try:
                import_plugin(name)
            except PluginError as exc:
                where = _origin(f"plugins.{i}", source, lines, {})
                message = str(exc)  # one naming no file of the plugin's own is placed at the spec's line
                raise SpecError([f"{where}: plugins.{i}: {message.removeprefix('plugins: ')}" if message.startswith("plugins: ")
                                 else f"{message} (listed at {where})"]) from None


def validate_top_level(raw: dict) -> tuple[ExperimentSpec | None, Problems]:
    """The spec with its sections' options not yet validated (RawOptions), or the top level's problems."""
    try:
        return ExperimentSpec.model_validate(raw), []
    except ValidationError as exc:
        return None, _problems(exc, ExperimentSpec)


def data_problems(spec: ExperimentSpec, data: Options) -> Problems:
    """What the data options decide before any data is read: the task's loss and metrics, k-fold's hold-out, the loop."""
    streamed = [("train.loop", f"xla does not work with {spec.data.name}'s inputs streamed from image files (an xla call takes a whole "
                 "epoch's inputs at once); use loop: keras or auto")] if spec.train.loop == "xla" and data.streams_from_files() else []
    return spec_task_problems(spec, data.static_num_classes(), data.static_task()) + protocol_problems(spec, data) + streamed
