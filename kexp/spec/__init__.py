"""The experiment spec: YAML -> validated `ExperimentSpec`, the single source of truth.

    schema.py      the pydantic models of every section (data/model options held typed, saved flat)
    loading.py     YAML with line numbers, `base:` files merged in, `--set` overrides, load_spec(path, overrides)
    bases.py       the merge of a base under its spec, Location (file:line of a key), SpecFile (path, hash)
    validation.py  validate_spec(raw): every problem as `file:line: key: message`; the options
                   of `data` and `model` validated once, by their registry entry's Options class

No TensorFlow is imported here, so `kexp validate` answers in a second.
"""

from kexp.registry import Options  # noqa: F401  (re-exported: plugins and tests import it from here)
from kexp.spec.bases import Location, SpecFile  # noqa: F401
from kexp.spec.loading import MAX_SPEC_BYTES, SpecSource, apply_override, load_spec, parse_override, parse_yaml, read_spec_text, read_yaml  # noqa: F401
from kexp.spec.schema import (  # noqa: F401
    OPTIMIZER_ARGS,
    ComponentSpec,
    DataSpec,
    EarlyStoppingSpec,
    EvaluationSpec,
    ExperimentSpec,
    MlflowSpec,
    OptimizerSpec,
    RawOptions,
    TensorBoardSpec,
    TrackingSpec,
    TrainSpec,
    did_you_mean,
)
from kexp.spec.validation import (  # noqa: F401
    _problems,
    check_task,
    loop_conflicts,
    protocol_problems,
    resolve_components,
    spec_task_problems,
    spec_train_problems,
    validate_spec,
)
