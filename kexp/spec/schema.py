"""The spec's pydantic models: what a YAML spec may say, each section strict and typed.

`data` and `model` name a registry entry; the rest of their keys are that entry's options.
Until kexp.spec.validation has checked them against the entry's own `Options` class they are
held as `RawOptions`; a validated spec holds the entry's typed options object, validated once,
and every consumer reads its attributes. Saved (to_yaml, model_dump) a section is flat again,
`{name, split_seed, <options>}`, as the user wrote it. No TensorFlow is imported here.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from kexp.registry import Options, closest
from kexp.spec.bases import SpecFile
from kexp.task import LOSSES, METRICS, unknown_loss_message, unknown_metric_message


class RawOptions(Options):
    """A section's options as written, before the registry entry its `name` picks has validated them."""

    model_config = ConfigDict(extra="allow")


class ComponentSpec(BaseModel):
    """`name` picks a registry entry; every other key of the section is one of that entry's options."""

    # extra="allow" only lets a non-string key through to pydantic's own "Keys should be strings";
    # every string key is moved into `options` before validation.
    model_config = ConfigDict(extra="allow", strict=True)
    name: str
    # The entry's typed options once validated (RawOptions before): read as attributes, never re-validated.
    options: SerializeAsAny[Options]

    @model_validator(mode="before")
    @classmethod
    def _options_apart(cls, value: Any) -> Any:
        """A flat section `{name, ..., <options>}` -> `{name, ..., options: RawOptions(<options>)}`."""
        if not isinstance(value, dict) or isinstance(value.get("options"), Options):
            return value  # not a mapping (pydantic says so), or already holding validated options
        own = {key: item for key, item in value.items() if key in cls.model_fields and key != "options"}
        rest = {key: item for key, item in value.items() if key not in own and isinstance(key, str)}
        odd = {key: item for key, item in value.items() if not isinstance(key, str)}
        return {**own, **odd, "options": RawOptions.model_validate(rest)}

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Saved as written: the section's own keys, then its options beside them."""
        document = handler(self)
        options = document.pop("options")
        return {**document, **options}


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


class TensorBoardSpec(BaseModel):
    """train.tensorboard: true, or these options."""

    model_config = ConfigDict(extra="forbid", strict=True)
    # each layer's weight histograms every epoch (Keras 3 logs no gradients; costs time on big models)
    histograms: bool = False
    # profile these batches with TensorBoard's profiler: 5, or "5,8" for a range
    profile_batches: int | str | None = None
    # the Keras model graph (Keras 3 writes the conceptual graph only, not the TensorFlow op graph)
    write_graph: bool = True

    @field_validator("profile_batches")
    @classmethod
    def _batch_range(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str):
            parts = value.split(",")
            # Keras counts batches from 1: a range starting at 0 would silently profile nothing
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or not 1 <= int(parts[0]) <= int(parts[1]):
                raise ValueError(f"profile_batches '{value}': give one batch number or 'first,last', counting from 1 (e.g. '5,8')")
        elif isinstance(value, int) and value < 1:
            raise ValueError("profile_batches counts batches from 1")
        return value


class MlflowSpec(BaseModel):
    """tracking.mlflow: where to copy the run (`kexp train --mlflow`)."""


    model_config = ConfigDict(extra="forbid", strict=True)
    # null: $MLFLOW_TRACKING_URI, else sqlite:///<runs dir>/mlflow.db (artifacts in <runs dir>/mlartifacts);
    # e.g. http://127.0.0.1:5000, sqlite:////abs/mlflow.db, or a folder (./mlruns: MLflow's file store)
    uri: str | None = None
    # null: the spec's name
    experiment: str | None = None


class TrackingSpec(BaseModel):
    """tracking: copies of the run for other tools."""


    model_config = ConfigDict(extra="forbid", strict=True)
    # log to MLflow as well (pip install 'kexp[mlflow]'); `kexp train --mlflow` sets it
    mlflow: MlflowSpec | None = None


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
    # Python code that registers datasets and models (files relative to the spec, or importable
    # modules): code the user chose to run, like a script. A run keeps a copy and the SHA-256 of each.
    plugins: list[str] = Field(default_factory=list)
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
    # The Keras backend: tensorflow, or jax (pip install 'kexp[jax]'; `kexp train --processes N`
    # trains one run over N processes with it). The same data feeds serve both; under jax
    # device: all is data parallelism over every local device (keras.distribution).
    backend: Literal["tensorflow", "jax"] = "tensorflow"
    # The files this spec was read from (the spec, its bases), for env.json; where a spec came from
    # is no part of what it says, so it is neither saved in config.yaml nor compared by ==.
    _spec_files: tuple[SpecFile, ...] = PrivateAttr(default=())

    @property
    def spec_files(self) -> tuple[SpecFile, ...]:
        """The spec file and each base file it was read from, with their SHA-256 (none for a spec built in code)."""
        return self._spec_files

    def with_spec_files(self, files: tuple[SpecFile, ...] | list[SpecFile]) -> ExperimentSpec:
        """A copy of this spec recording the files it was read from (model_copy keeps them)."""
        spec = self.model_copy()
        spec._spec_files = tuple(files)
        return spec

    def __eq__(self, other: object) -> bool:
        """Specs are equal when they say the same: a run's config.yaml equals the spec and bases it came from."""
        if not isinstance(other, ExperimentSpec):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

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

