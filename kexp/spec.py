"""The experiment spec: YAML -> validated `ExperimentSpec`, the single source of truth.

Validation happens in two passes so every error names its dotted key:
the top level (`name`, `seed`, `train`, `device`, ...) is checked by `ExperimentSpec`;
then `data` and `model` are checked against the options model of the registry entry
their `name` picks. `--set a.b=value` overrides edit the raw mapping before either
pass, so they are validated exactly like the file. No TensorFlow is imported here.
"""

from __future__ import annotations

import copy
import math
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
)

from kexp.errors import SpecError
from kexp.registry import DATASETS, MODELS, Options, Registry, closest, load_components  # noqa: F401  (Options: re-exported)
from kexp.task import CLASSIFICATION, DEFAULT_METRICS, LOSSES, METRICS, task_problems, unknown_loss_message, unknown_metric_message
from kexp.tracking import TensorBoardSpec, TrackingSpec


class ComponentSpec(BaseModel):
    """`name` picks a registry entry; every other key is one of that entry's options."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataSpec(ComponentSpec):
    """The data section: a dataset by name, its options, and the seed that splits it."""

    # None: the experiment's `seed`. Repeats with other seeds then share one split, so their
    # spread measures initialization and shuffling alone.
    split_seed: int | None = Field(default=None, ge=0, lt=2**32)


# Keyword arguments each Keras optimizer accepts besides the common ones, so a typo
# is caught by `kexp validate` rather than minutes into a run.
COMMON_OPTIMIZER_ARGS = {"learning_rate", "weight_decay", "clipnorm", "clipvalue", "global_clipnorm"}
OPTIMIZER_ARGS = {
    "adam": {"beta_1", "beta_2", "epsilon", "amsgrad"},
    "adamw": {"beta_1", "beta_2", "epsilon", "amsgrad"},
    "adamax": {"beta_1", "beta_2", "epsilon"},
    "nadam": {"beta_1", "beta_2", "epsilon"},
    "sgd": {"momentum", "nesterov"},
    "rmsprop": {"rho", "momentum", "epsilon", "centered"},
    "adagrad": {"initial_accumulator_value", "epsilon"},
    "adadelta": {"rho", "epsilon"},
    "lion": {"beta_1", "beta_2"},
}
BOOLEAN_OPTIMIZER_ARGS = {"amsgrad", "nesterov", "centered"}
NON_NEGATIVE_OPTIMIZER_ARGS = {"epsilon", "weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "initial_accumulator_value", "rho"}


def did_you_mean(name: str, choices: Any) -> str:
    """ " (did you mean 'x'?)" for the closest choice, or "" when nothing is close."""
    close = closest(name, choices)
    return f" (did you mean '{close}'?)" if close else ""


class OptimizerSpec(BaseModel):
    """A Keras optimizer by name plus its keyword arguments (`{name: adam, learning_rate: 1e-3}`)."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: str = "adam"
    learning_rate: PositiveFloat | None = Field(default=None, allow_inf_nan=False)

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if name.lower() not in OPTIMIZER_ARGS:
            raise ValueError(f"unknown optimizer '{name}'; choose from {', '.join(sorted(OPTIMIZER_ARGS))}")
        return name.lower()

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the Keras optimizer; unset ones are left to Keras' defaults."""
        extra = dict(self.model_extra or {})
        allowed = OPTIMIZER_ARGS[self.name] | COMMON_OPTIMIZER_ARGS
        for key, value in extra.items():
            if key not in allowed:
                raise ValueError(f"optimizer '{self.name}' takes no argument '{key}'{did_you_mean(key, allowed)}; it takes {', '.join(sorted(allowed))}")
            check_optimizer_value(self.name, key, value)
        clipping = sorted(k for k in ("clipnorm", "clipvalue", "global_clipnorm") if extra.get(k) is not None)
        if len(clipping) > 1:
            raise ValueError(f"set only one of clipnorm, clipvalue, global_clipnorm (Keras refuses {' and '.join(clipping)} together)")
        if self.learning_rate is not None:
            extra["learning_rate"] = self.learning_rate
        return extra


def check_optimizer_value(optimizer: str, key: str, value: Any) -> None:
    """Types and the bounds Keras itself enforces, so a typo fails in `kexp validate`, not at compile."""
    if key in BOOLEAN_OPTIMIZER_ARGS:
        if not isinstance(value, bool):
            raise ValueError(f"optimizer argument '{key}' must be true or false, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"optimizer argument '{key}' must be a finite number, got {value!r}")
    if key == "momentum" and optimizer == "sgd" and not 0 <= value <= 1:
        raise ValueError(f"sgd momentum must be in [0, 1], got {value}")
    if key in NON_NEGATIVE_OPTIMIZER_ARGS and value < 0:
        raise ValueError(f"optimizer argument '{key}' must be >= 0, got {value}")


class EarlyStoppingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    monitor: str = "val_loss"
    patience: NonNegativeInt = 3
    min_delta: float = 0.0
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best_weights: bool = True


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    # "auto": binary_crossentropy for two classes, sparse_categorical_crossentropy for more.
    loss: str = "auto"
    # None: [accuracy] for classification, [mae, rmse, r2] for regression (filled in by validation).
    metrics: list[str] | None = None
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 32
    # Fraction of the training split held out (seeded, shuffled) for validation metrics.
    validation_split: float = Field(default=0.0, ge=0.0, lt=1.0)
    shuffle: bool = True
    # Batches per TensorFlow call: >1 cuts Python overhead for small models; same updates, same result.
    # auto: from the model's arithmetic per batch (a whole epoch per call for Pima, one batch for
    # the MNIST CNN); the value used is in env.json.
    steps_per_execution: PositiveInt | Literal["auto"] = "auto"
    # Compile each training step with XLA. Measured, not assumed: it made the MNIST CNN several
    # times slower on a CPU, so it stays off unless asked for.
    jit_compile: bool = False
    # How the batches of one call run. keras: Keras' own multi-step loop (an op at a time, with
    # steps_per_execution batches per call). xla: each call is a whole epoch, its batches in one
    # XLA-compiled loop, the same updates (with dropout, other random masks): for Dense networks
    # on a CPU, measured 7x faster per epoch for Pima and 3.5x for the MNIST MLP. auto: xla where
    # that was measured (Dense-only models on the CPU, accuracy/mae/rmse/mse metrics, inputs up
    # to 64 MB, an epoch of moderate arithmetic, no class weights), keras elsewhere (env.json).
    loop: Literal["auto", "keras", "xla"] = "auto"
    # float32, or mixed precision on GPUs with tensor cores (bfloat16 also on recent CPUs).
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    # TensorFlow's CPU threads for one op (and as many for running ops side by side); unset: all
    # cores. Set it when several jobs share a machine, so they do not oversubscribe its cores.
    threads: PositiveInt | None = None
    early_stopping: EarlyStoppingSpec | None = None
    # balanced: weight each class by n / (classes x its count) in the loss (SMS is 13% spam).
    class_weight: Literal["balanced"] | None = None
    # Write a resumable checkpoint every N epochs; auto: at an epoch end once 30 s have passed
    # since the last one (so short runs write none); 0: only when stopped by a signal.
    checkpoint_every: NonNegativeInt | Literal["auto"] = "auto"
    # TensorFlow op determinism: two runs of one spec on one machine give identical history and weights.
    deterministic: bool = False
    # TensorBoard logs in <run>/tensorboard/ (true, or {histograms, profile_batches, write_graph});
    # null or false: none.
    # `kexp train --tensorboard` sets it. Then: tensorboard --logdir runs/
    tensorboard: TensorBoardSpec | None = None

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("tensorboard", mode="before")
    @classmethod
    def _tensorboard_switch(cls, value: Any) -> Any:
        return {} if value is True else None if value is False else value

    @field_validator("optimizer")
    @classmethod
    def _optimizer_kwargs(cls, value: OptimizerSpec) -> OptimizerSpec:
        value.kwargs()  # raises on an argument this optimizer does not take
        return value

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, loss: str) -> str:
        if loss not in LOSSES:
            raise ValueError(unknown_loss_message(loss))
        return loss

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str] | None) -> list[str] | None:
        for i, metric in enumerate(metrics or ()):
            if metric not in METRICS:
                raise ValueError(unknown_metric_message(metric))
            if metric in (metrics or [])[:i]:
                raise ValueError(f"'{metric}' is listed twice")
        return metrics


class EvaluationSpec(BaseModel):
    """How the model is scored: one hold-out, k folds, or (as the tutorials do) its training data."""

    model_config = ConfigDict(extra="forbid", strict=True)
    # holdout: the dataset's official split or data.test_fraction; kfold: every row is a test
    # row once per repeat; train: score on the rows trained on (labelled so everywhere).
    protocol: Literal["holdout", "kfold", "train"] = "holdout"
    k: int = Field(default=5, ge=2, le=100)
    repeats: int = Field(default=1, ge=1, le=100)
    save_models: bool = Field(default=False, description="keep each fold's model.keras")


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    # NumPy and TensorFlow take 32-bit seeds; a larger one would fail after the data loads.
    seed: int = Field(default=0, ge=0, lt=2**32)
    # Train once per seed and aggregate (mean, std, 95% CI); `kexp train --repeat N` fills it in.
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] | None = Field(default=None, min_length=1, max_length=100)
    data: DataSpec
    model: ComponentSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    # Copies of the run for other tools: {mlflow: {uri, experiment}} (`kexp train --mlflow`).
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    # auto = first GPU when TensorFlow sees one, else CPU; gpu:N = GPU number N (memory is taken
    # as needed, so other jobs can share it); all = every visible GPU, one replica each
    # (MirroredStrategy), train.batch_size being the global batch split among them.
    device: str = "auto"

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|gpu|gpu:\d+|all", device):
            raise ValueError(f"unknown device '{device}'; choose from auto, cpu, gpu, gpu:N (N = 0, 1, ...), all")
        return device

    @field_validator("data", "model", mode="before")
    @classmethod
    def _component_from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds {seeds} repeat a seed; repeats need distinct seeds")
        return seeds

    def member_seeds(self) -> list[int]:
        """The seed of each training run this spec asks for (one unless `seeds` lists several)."""
        return list(self.seeds) if self.seeds else [self.seed]

    @property
    def split_seed(self) -> int:
        return self.data.split_seed if self.data.split_seed is not None else self.seed

    def to_yaml(self) -> str:
        """Every option, unset ones as null, so the saved spec shows all there is to set."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --- YAML with line numbers, and nothing that can hang or bloat ---------------------------

# A spec is written by hand (the tutorials' are under 1 KB). PyYAML's pure-Python parser
# takes about 14 s per MB here, so larger files are refused before parsing.
MAX_SPEC_BYTES = 64 * 1024


class _SpecLoader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys, and anchors and aliases.

    Aliases let a 2 KB file expand to gigabytes (nine levels of nine aliases); a spec
    gains nothing from them that writing the value out or `--set` does not give.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            kind = "alias" if isinstance(event, yaml.AliasEvent) else "anchor"
            sigil = "*" if kind == "alias" else "&"
            raise yaml.composer.ComposerError(
                None, None, f"YAML {kind} '{sigil}{anchor}' is not allowed in a spec; write the value out", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(None, None, "a key must be a plain name, not a list or mapping", key_node.start_mark)
            if key_node.value == "<<" and key_node.style is None:
                raise yaml.constructor.ConstructorError(None, None, "YAML merge keys (<<) are not allowed in a spec; write the keys out", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's core schema instead of PyYAML's YAML 1.1: in 1.1 `032` is 26 (octal), `1:00` is 60
# (base 60), `yes`/`on`/`no` are booleans and `1e-3` is a string, each a silent surprise in a
# spec. Here only true/false are booleans, integers are decimal (0o/0x when written so), and
# `1e-3` is a float; anything else stays a string, which strict validation then names.
_SpecLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in [
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
    ("null", r"^(?:~|null|Null|NULL|)$", "~nN"),
]:
    _SpecLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first) + ([""] if _tag == "null" else []))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)  # "032" is 32, as in YAML 1.2, not octal


_SpecLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    """Map each dotted key of a composed YAML document to its 1-based line."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}{key_node.value}"
            lines[path] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, path + "."))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{prefix}{i}"] = item.start_mark.line + 1
            lines.update(_key_lines(item, f"{prefix}{i}."))
    return lines


def _yaml_problem(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """(0-based line or None, one-line description) of a PyYAML error."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start and start.line != getattr(mark, "line", None):
        problem += f" ({context} started on line {start.line + 1})"
    return (mark.line if mark else None), " ".join(problem.split())


def parse_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """(value, composed node) of one YAML document, through the hardened loader."""
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def read_spec_text(path: Path) -> str:
    """The spec's text, reading at most MAX_SPEC_BYTES + 1 bytes whatever the file is: a device
    (/dev/zero) or a pipe reports size 0, so the size on disk cannot be trusted to bound the read."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise SpecError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if len(data) > MAX_SPEC_BYTES:
        size = Path(path).stat().st_size if Path(path).is_file() else 0  # a regular file says its size; a device or pipe cannot
        amount = f"{size:,} bytes" if size > MAX_SPEC_BYTES else f"more than {MAX_SPEC_BYTES // 1024} KiB"
        raise SpecError([f"{path}: {amount} is too large for a spec (limit {MAX_SPEC_BYTES // 1024} KiB); is this the right file?"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None


SpecSource = tuple[dict, dict[str, int]]  # read_yaml's mapping and key lines, read once and passed on


def read_yaml(path: Path) -> SpecSource:
    """Parse a spec file into a mapping and the line number of every dotted key.

    The file is read once: a caller that needs the spec twice (validate checks for `sweep:`,
    then validates) passes this result on, since a pipe (`<(cat spec.yaml)`) is empty the second time.
    """
    text = read_spec_text(path)
    try:
        raw, node = parse_yaml(text)
    except yaml.YAMLError as exc:
        line, problem = _yaml_problem(exc)
        where = f"{path}:{line + 1}" if line is not None else str(path)
        raise SpecError([f"{where}: YAML error: {problem}"]) from None
    if raw is None:
        raise SpecError([f"{path}: the spec is empty; it needs at least name, data and model (see configs/ for examples)"])
    if not isinstance(raw, dict):
        raise SpecError([f"{path}: the spec must be a YAML mapping, got {type(raw).__name__}"])
    return raw, _key_lines(node)


# --- overrides -----------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, Any]:
    """`train.epochs=2` -> ("train.epochs", 2); the value is parsed as YAML."""
    path, sep, value = text.partition("=")
    path = path.strip()
    if not sep or not path or any(not part for part in path.split(".")):
        raise SpecError([f"--set {text}: expected KEY.PATH=VALUE, e.g. train.epochs=2"])
    if not value.strip():
        return path, None
    try:
        return path, parse_yaml(value)[0]
    except yaml.YAMLError as exc:
        _, problem = _yaml_problem(exc)
        raise SpecError([f"--set {text}: value is not valid YAML: {problem}"]) from None


def apply_override(raw: dict, path: str, value: Any) -> dict:
    """Set `raw[a][b]... = value` for a dotted path, creating mappings on the way; an integer
    part indexes a list the spec already has (`model.hidden_units.0=64`, `-1` for the last)."""
    node: Any = raw
    parts = path.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            key: Any = list_index(node, part, f"--set {path}={value}", ".".join(parts[:depth]))
        else:
            key = part
            if not last and part not in node and depth + 1 < len(parts) and is_index(parts[depth + 1]):
                raise SpecError([f"--set {path}={value}: '{where}' is not in the spec (its default applies); set the whole list, e.g. --set {where}=[...]"])
        if last:
            node[key] = value
            return raw
        child = node[key] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(child, str) and not isinstance(node, list):  # shorthand `optimizer: adam` means `optimizer: {name: adam}`
            child = node[key] = {"name": child}
        if not isinstance(child, (dict, list)):
            raise SpecError([f"--set {path}={value}: '{where}' holds {type(child).__name__} {child!r}, not a mapping or list"])
        node = child
    return raw


def is_index(part: str) -> bool:
    return part.lstrip("-").isdigit()


def list_index(items: list, part: str, setting: str, where: str) -> int:
    if not is_index(part):
        raise SpecError([f"{setting}: '{where}' is a list; address an item by its index, e.g. {where}.0, or set the whole list, e.g. {where}=[...]"])
    index = int(part)
    if not -len(items) <= index < len(items):
        raise SpecError([f"{setting}: '{where}' has {len(items)} item(s) ({items!r}); index {index} is out of range"])
    return index


# --- validation ------------------------------------------------------------------------


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
            keys = [k for k in holder.model_fields if k != "name" or holder is not ComponentSpec]
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


def _problems(exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, message) per problem; a union's alternatives are one problem, not one per member."""
    merged: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = [str(p) for p in error["loc"] if not (isinstance(p, str) and _UNION_MEMBER.match(p))]
        key = ".".join([prefix.rstrip(".")] * bool(prefix) + loc) or "(top level)"
        message = _describe(error, model)
        if message not in merged.setdefault(key, []):
            merged[key].append(message)
    return [(key, "; or ".join(messages)) for key, messages in merged.items()]


def _component_problems(section: str, component: ComponentSpec, registry: Registry) -> list[tuple[str, str]]:
    try:
        entry = registry.get(component.name)
    except KeyError as exc:
        return [(f"{section}.name", exc.args[0])]
    try:
        entry.options.model_validate(component.options())
    except ValidationError as exc:
        return _problems(exc, entry.options, prefix=f"{section}.")
    return []


def resolve_components(spec: ExperimentSpec) -> ExperimentSpec:
    """Fill every data/model option (and task-dependent train default) in, so the saved spec is complete."""
    data = DATASETS.get(spec.data.name).options.model_validate(spec.data.options())
    model = MODELS.get(spec.model.name).options.model_validate(spec.model.options())
    metrics = spec.train.metrics if spec.train.metrics is not None else DEFAULT_METRICS[data.static_task()]
    return spec.model_copy(
        update={
            "data": DataSpec(name=spec.data.name, split_seed=spec.data.split_seed, **data.model_dump(mode="json")),
            "model": ComponentSpec(name=spec.model.name, **model.model_dump(mode="json")),
            "train": spec.train.model_copy(update={"metrics": list(metrics)}),
        }
    )


def spec_task_problems(spec: ExperimentSpec, num_classes: int | None, task: str = CLASSIFICATION) -> list[tuple[str, str]]:
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


def spec_train_problems(spec: ExperimentSpec) -> list[tuple[str, str]]:
    """Training settings that cannot work together, found by `kexp validate`, before any data is read."""
    train, mirrored = spec.train, spec.device == "all"
    problems = []
    conflicts = loop_conflicts(train, mirrored) if train.loop == "xla" else []
    if conflicts:
        problems.append(("train.loop", f"xla does not work with {conflicts[0]}; use loop: keras or auto"))
    if mirrored and train.steps_per_execution not in ("auto", 1):
        problems.append(("train.steps_per_execution", f"{train.steps_per_execution} does not work with device: all (Keras 3 fails "
                         "with several batches per call under MirroredStrategy); use auto or 1"))
    return problems


def raw_component(section: Any) -> ComponentSpec | None:
    """A data/model section as a ComponentSpec, or None when it is not one (the top level reports that)."""
    try:
        return ComponentSpec.model_validate(section)
    except ValidationError:
        return None


def protocol_problems(spec: ExperimentSpec, data_options: BaseModel) -> list[tuple[str, str]]:
    """k-fold tests on every row, so a hold-out the dataset could turn off (test_fraction may be 0) must be off."""
    fraction = getattr(data_options, "test_fraction", 0) or 0
    if spec.evaluation.protocol != "kfold" or fraction <= 0:
        return []
    try:
        type(data_options).model_validate({**data_options.model_dump(), "test_fraction": 0})
    except ValidationError:
        return []  # this dataset always holds a test part out; k-fold notes that it is not used
    return [("data.test_fraction", f"must be 0 with evaluation.protocol: kfold, which tests on every row in turn (it is {fraction:g})")]


def check_task(spec: ExperimentSpec, num_classes: int, task: str = CLASSIFICATION) -> None:
    """After the data loads: what only the class count can decide (exit 2, before a run directory exists)."""
    problems = spec_task_problems(spec, num_classes, task)
    if problems:
        raise SpecError([f"{key}: {msg} (found after reading the data)" for key, msg in problems])


def _origin(key: str, source: str, lines: dict[str, int], overrides: dict[str, str]) -> str:
    """Where a bad key came from: the --set that wrote it, or file:line."""
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
            return f"{source}:{lines[probe]}"
        probe = probe.rpartition(".")[0]
    return source


def validate_spec(
    raw: dict, source: str = "<spec>", lines: dict[str, int] | None = None, overrides: dict[str, str] | None = None
) -> ExperimentSpec:
    """Validate a raw mapping; raise SpecError listing every problem as `where: key: message`.

    `overrides` maps each overridden key to where its value came from ("--set train.epochs=2")."""
    load_components()
    lines, overrides = lines or {}, overrides or {}
    # Every problem in one pass, as a compiler reports them: the top level, then each component
    # from its own section even when the top level failed, then what needs both.
    try:
        spec: ExperimentSpec | None = ExperimentSpec.model_validate(raw)
        problems = []
    except ValidationError as exc:
        spec, problems = None, _problems(exc, ExperimentSpec)
    for section, registry in (("data", DATASETS), ("model", MODELS)):
        component = getattr(spec, section) if spec is not None else raw_component(raw.get(section))
        if component is not None and not any(key == section or key.startswith(f"{section}.") for key, _ in problems):
            problems += _component_problems(section, component, registry)
    if spec is not None:
        if not problems:
            data_options = DATASETS.get(spec.data.name).options.model_validate(spec.data.options())
            problems += spec_task_problems(spec, data_options.static_num_classes(), data_options.static_task())
            problems += protocol_problems(spec, data_options)
        problems += spec_train_problems(spec)
    if problems:
        raise SpecError([f"{_origin(key, source, lines, overrides)}: {key}: {msg}" for key, msg in problems])
    return resolve_components(spec)


def load_spec(path: Path, overrides: list[str] | tuple[str, ...] = (), source: SpecSource | None = None) -> ExperimentSpec:
    """Read a YAML spec (or take `source`, read_yaml's result for it), apply `--set` overrides, validate, and fill in defaults."""
    raw, lines = copy.deepcopy(source) if source is not None else read_yaml(path)
    if "sweep" in raw:
        where = f"{path}:{lines['sweep']}" if "sweep" in lines else str(path)
        raise SpecError([f"{where}: sweep: this spec describes a sweep; run it with `kexp sweep {path}` (kexp train trains one run)"])
    applied: dict[str, str] = {}
    for text in overrides:
        key, value = parse_override(text)
        apply_override(raw, key, value)
        applied[key] = f"--set {text}"
    return validate_spec(raw, str(path), lines, applied)
