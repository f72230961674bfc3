"""`kexp sweep`: one ordinary run per point of a parameter space, in parallel, resumable.

    <runs-dir>/sweeps/<UTC time>-<name>-<xxxx>/
      sweep.yaml        what the sweep is: the base spec file, the --set overrides, the space
      manifest.json     one entry per trial: id, params, seed, state, run_dir, exit_code, attempts
                        (rewritten atomically on every change)
      specs/<id>.yaml   each trial's resolved spec: what its process trains
      logs/<id>.txt     each trial process's console output
      <id>/             each trial's ordinary run directory (kexp runs / compare / evaluate / resume)
      summary.json, summary.csv, summary.png   (kexp.sweep.summary)

Every trial runs as its own `python -m kexp train --run-dir` process: memory never grows
across trials, a crash takes one trial down, and the driver reads the trial's outcome from
its status.json and metrics.json, never from printed text. Trials are resumed in place with
`kexp resume`, so a sweep that is stopped (Ctrl-C, SIGTERM, a dead driver) and started again
loses no finished epoch, let alone a finished trial.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kexp.errors import SpecError
from kexp.run.records import Trial

FINAL = ("completed", "diverged", "pruned")  # a diverged trial would diverge again, a pruned one was stopped on purpose
REGRESSION_LOSSES = ("mse", "mae", "huber", "log_cosh", "msle", "mape")


# --- the space --------------------------------------------------------------------------


class RangeSpec(BaseModel):
    """A range for random search: uniform, or log-uniform (`log: true`); integers with `integer: true`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    low: float
    high: float
    log: bool = False
    integer: bool = False


class SweepSpec(BaseModel):
    """The `sweep:` section of a spec (and what --param, --seeds, --samples, --method, --prune add to it)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    method: Literal["grid", "random", "tpe"] = "grid"
    # dotted spec key -> values to try (grid, random, tpe), or a range (random and tpe)
    params: dict[str, list[Any] | RangeSpec] = Field(default_factory=dict)
    samples: int | None = Field(default=None, ge=1, le=10_000)  # random and tpe: how many points
    seeds: int = Field(default=1, ge=1, le=100)  # each point trained with seed, seed+1, ...
    metric: str | None = None  # what the summary compares (and tpe optimizes); default: the task's main metric
    # Optuna's pruner, fed each epoch's value from the trial's history.json (kexp.sweep.search)
    prune: Literal["none", "median", "asha", "hyperband"] = "none"
    sampler_seed: int | None = None  # tpe's sampler (default: the spec's seed)
    sync: bool = False  # tpe with --parallel N: propose in batches of N (reproducible) instead of as slots free up


# Fields added with search (issue 27): left out of a sweep's fingerprint at their defaults, so a
# grid or random sweep started before them is found again by the same command.
SEARCH_FIELDS = {"prune": "none", "sampler_seed": None, "sync": False}


def space_fingerprint_part(space: SweepSpec) -> dict[str, Any]:
    dumped = space.model_dump(mode="json")
    return {k: v for k, v in dumped.items() if not (k in SEARCH_FIELDS and v == SEARCH_FIELDS[k])}


def sweep_fingerprint(base: SweepBase, space: SweepSpec) -> str:
    """What identifies a sweep: the spec as read, the --set overrides and the space (the same command finds it again)."""
    return hashlib.sha256(json.dumps({"base": base.raw, "set": base.overrides, "space": space_fingerprint_part(space)},
                                     sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Plan:
    """A sweep before it runs: every trial's spec, already validated."""

    name: str
    config: Path
    overrides: list[str]
    space: SweepSpec
    trials: list[Trial]  # manifest entries (state pending)
    specs: dict[str, Any]  # trial id -> ExperimentSpec
    fingerprint: str = ""
    notes: list[str] = field(default_factory=list)
    base: SweepBase | None = None  # tpe makes its trials' specs from it as it proposes them


def parse_param(text: str) -> tuple[str, list[Any] | RangeSpec]:
    """`model.hidden_units.0=10,25,50` -> values (parsed as YAML); `KEY=LOW..HIGH` or `KEY=log:LOW..HIGH` -> a range."""
    from kexp.spec import parse_yaml

    key, sep, values = text.partition("=")
    key, values = key.strip(), values.strip()
    if not sep or not key or not values:
        raise SpecError([f"--param {text}: expected KEY=V1,V2,... (e.g. model.hidden_units.0=10,25,50) or KEY=LOW..HIGH"])
    log = values.startswith("log:")
    if ".." in values and not values.startswith("["):
        low, _, high = values.removeprefix("log:").partition("..")
        try:
            lo, hi = float(low), float(high)
        except ValueError:
            raise SpecError([f"--param {text}: a range is LOW..HIGH with numbers, e.g. 0.0001..0.1 or log:0.0001..0.1"]) from None
        integer = all(part.strip().lstrip("-").isdigit() for part in (low, high))
        return key, check_range(key, RangeSpec(low=lo, high=hi, log=log, integer=integer))
    try:
        parsed = parse_yaml(f"[{values}]")[0]
    except yaml.YAMLError as exc:
        raise SpecError([f"--param {text}: values are not valid YAML ({' '.join(str(exc).split())})"]) from None
    if not parsed:
        raise SpecError([f"--param {text}: no values"])
    return key, parsed


def check_range(key: str, value: RangeSpec) -> RangeSpec:
    if not (math.isfinite(value.low) and math.isfinite(value.high)):
        raise SpecError([f"sweep.params.{key}: a range needs finite bounds (got {value.low:g}..{value.high:g})"])
    if value.low > value.high:
        raise SpecError([f"sweep.params.{key}: low {value.low:g} is above high {value.high:g}"])
    if value.log and value.low <= 0:
        raise SpecError([f"sweep.params.{key}: a log range needs low > 0 (got {value.low:g})"])
    return value


def read_sweep_spec(section: Any, source: str) -> SweepSpec:
    from kexp.spec import _problems

    if section is None:
        return SweepSpec()
    try:
        space = SweepSpec.model_validate(section)
    except ValidationError as exc:
        raise SpecError([f"{source}: sweep.{key}: {message}" for key, message in _problems(exc, SweepSpec)]) from None
    for key, value in space.params.items():
        if isinstance(value, RangeSpec):
            check_range(key, value)
        elif not value:
            raise SpecError([f"{source}: sweep.params.{key}: no values"])
    return space


@dataclass(frozen=True)
class SearchOptions:
    """What the command line adds to the space besides --param (None: keep the spec's)."""

    seeds: int | None = None
    samples: int | None = None
    metric: str | None = None
    method: str | None = None
    prune: str | None = None
    sampler_seed: int | None = None
    sync: bool = False


def merge_space(space: SweepSpec, params: list[str], options: SearchOptions) -> SweepSpec:
    """The YAML's sweep section with the command line's additions (a --param replaces the same key).
    --samples alone (no method anywhere) means random search, as before tpe existed."""
    merged = dict(space.params)
    for text in params:
        key, values = parse_param(text)
        merged[key] = values
    method = options.method or (space.method if "method" in space.model_fields_set else "random" if options.samples is not None else "grid")
    if method not in ("grid", "random", "tpe"):
        raise SpecError([f"--method {method}: expected grid, random or tpe"])
    if options.prune is not None and options.prune not in ("none", "median", "asha", "hyperband"):
        raise SpecError([f"--prune {options.prune}: expected none, median, asha or hyperband"])
    merged_space = space.model_copy(update={
        "params": merged, "method": method, "samples": options.samples or space.samples, "seeds": options.seeds or space.seeds,
        "metric": options.metric or space.metric, "prune": options.prune or space.prune,
        "sampler_seed": options.sampler_seed if options.sampler_seed is not None else space.sampler_seed, "sync": options.sync or space.sync})
    check_search_space(merged_space)
    return merged_space


def check_search_space(space: SweepSpec) -> None:
    """What Optuna's TPE cannot sample is refused before any trial, naming the parameter (every problem at once)."""
    if space.method != "tpe":
        if space.sync:
            raise SpecError(["--sync: batches of proposals are for --method tpe; grid and random points are fixed already"])
        return
    problems = []
    if space.samples is None:
        problems.append("sweep.samples: tpe needs the number of trials: samples: N in the sweep section, or --samples N")
    if space.seeds > 1:
        problems.append(f"--seeds {space.seeds}: tpe learns from one value per trial; repeat the best point afterwards "
                        "(kexp train --repeats, or a grid over it with --seeds)")
    for key, values in space.params.items():
        if isinstance(values, RangeSpec) and values.low >= values.high:
            problems.append(f"sweep.params.{key}: the range {values.low:g}..{values.high:g} is empty; tpe needs low < high")
        if isinstance(values, list) and len(values) < 2:
            problems.append(f"sweep.params.{key}: one value ({json.dumps(values[0], default=str)}) leaves tpe nothing to choose; "
                            "set it with --set instead, or give two or more values")
    if problems:
        raise SpecError(problems)


def expand_points(space: SweepSpec, seed: int) -> list[dict[str, Any]]:
    """Grid: every combination, in the order given. Random: `samples` points drawn from `seed`."""
    keys = list(space.params)
    if not keys:
        raise SpecError(["the sweep has no parameters: add a `sweep: {params: {...}}` section or --param KEY=V1,V2,..."])
    if space.method == "grid":
        ranges = [k for k in keys if isinstance(space.params[k], RangeSpec)]
        if ranges:
            raise SpecError([f"sweep.params.{ranges[0]}: a range needs random search: add --samples N (or sweep.method: random, samples: N)"])
        return [dict(zip(keys, combo)) for combo in itertools.product(*(space.params[k] for k in keys))]
    if space.samples is None:
        raise SpecError(["sweep.samples: random search needs the number of points: --samples N"])
    rng = np.random.default_rng(seed)
    return [{k: draw(space.params[k], rng) for k in keys} for _ in range(space.samples)]


def draw(values: list[Any] | RangeSpec, rng: np.random.Generator) -> Any:
    if isinstance(values, list):
        return values[int(rng.integers(len(values)))]
    low, high = (math.log(values.low), math.log(values.high)) if values.log else (values.low, values.high)
    x = rng.uniform(low, high)
    x = math.exp(x) if values.log else x
    return int(round(x)) if values.integer else float(f"{x:.6g}")


def describe_point(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


@dataclass
class SweepBase:
    """What every trial's spec starts from: the spec file as read (its `sweep:` section removed) and --set."""

    config: Path
    raw: dict[str, Any]
    lines: Any
    files: Any
    overrides: list[str]
    base_seed: int

    def make_trial(self, trial_id: str, point: dict[str, Any], seed_offset: int = 0, repeats: int = 1) -> tuple[Trial, Any]:
        """The manifest entry and validated spec of one trial; SpecError names the trial and its point."""
        from kexp.spec import apply_override, parse_override, validate_spec

        trial_raw = copy.deepcopy(self.raw)
        applied: dict[str, str] = {}
        try:
            for text in self.overrides:
                key, value = parse_override(text)
                apply_override(trial_raw, key, value)
                applied[key] = f"--set {text}"
            for key, value in point.items():
                apply_override(trial_raw, key, value)
                applied[key] = "sweep point"
            if repeats > 1:
                trial_raw["seed"] = self.base_seed + seed_offset
            spec = validate_spec(trial_raw, str(self.config), self.lines, applied).with_spec_files(self.files)
        except SpecError as exc:
            where = f"{trial_id} ({describe_point(point)})"
            raise SpecError([f"{where}: {problem}" for problem in exc.problems]) from None
        trial: Trial = {"id": trial_id, "point": 0, "params": point, "seed": spec.seed, "state": "pending", "run_dir": trial_id,
                        "exit_code": None, "attempts": 0, "failures": 0, "started": None, "ended": None, "error": None}
        return trial, spec


def read_sweep_base(config: Path, overrides: list[str], source=None) -> tuple[SweepBase, Any]:
    """The sweep's base (spec file and --set) and its raw `sweep:` section."""
    from kexp.spec import parse_override, read_yaml

    raw, lines, files = copy.deepcopy(source) if source is not None else read_yaml(config)
    section = raw.pop("sweep", None)
    base_seed = raw.get("seed", 0) if isinstance(raw.get("seed", 0), int) else 0
    for text in overrides:
        key, value = parse_override(text)
        if key == "seed" and isinstance(value, int):
            base_seed = value
    return SweepBase(Path(config), raw, lines, files, list(overrides), base_seed), section


def trial_id_width(count: int) -> int:
    return max(3, len(str(count - 1)))


def plan_sweep(config: Path, overrides: list[str], params: list[str], seeds: int | None = None, samples: int | None = None,
               metric: str | None = None, source=None, search: SearchOptions | None = None) -> Plan:
    """Read the spec (or take `source`, spec.read_yaml's result for it) and its sweep section, expand the trials
    and validate every trial's spec before anything runs. A tpe sweep's trials are proposed while it runs:
    its plan holds none, but a probe at the space's first and last values is validated now."""
    base, section = read_sweep_base(config, overrides, source)
    options = search or SearchOptions()
    options = SearchOptions(**{**options.__dict__, "seeds": seeds or options.seeds, "samples": samples or options.samples,
                               "metric": metric or options.metric})
    space = merge_space(read_sweep_spec(section, str(config)), params, options)
    trials, specs = [], {}
    if space.method == "tpe":
        probes = [{k: probe_value(v, end) for k, v in space.params.items()} for end in (0, -1)] if space.params else []
        if not probes:
            expand_points(space, base.base_seed)  # the "no parameters" error
        for point, end in zip(probes, ("low", "high")):
            specs["probe"] = base.make_trial(f"the space's {end} end", point)[1]
    else:
        points = expand_points(space, base.base_seed)
        width = trial_id_width(len(points) * space.seeds)
        for p, point in enumerate(points):
            for r in range(space.seeds):
                trial, spec = base.make_trial(f"trial-{len(trials):0{width}d}", point, r, space.seeds)
                trial["point"] = p
                specs[trial["id"]] = spec
                trials.append(trial)
    first = next(iter(specs.values()))
    if (space.method == "tpe" or space.prune != "none") and space.metric is None:
        space = space.model_copy(update={"metric": default_search_metric(first)})  # the study needs its direction now
    name = first.name
    fingerprint = sweep_fingerprint(base, space)
    return Plan(name, Path(config), list(overrides), space, trials, specs, fingerprint, base=base)


def default_search_metric(spec: Any) -> str:
    """What tpe optimizes and the pruner watches unless --metric says: the spec's first metric (accuracy), else the loss."""
    if spec.train.metrics:
        return spec.train.metrics[0]
    regression = spec.train.loss in REGRESSION_LOSSES or "squared" in spec.train.loss or "absolute" in spec.train.loss
    return "mae" if regression else "accuracy"  # the defaults' first (kexp.spec.schema TrainSpec.metrics)


def resolved_metric(space: SweepSpec) -> str:
    return space.metric or "loss"


def probe_value(values: list[Any] | RangeSpec, end: int) -> Any:
    """A value of the space to validate the spec with: the first or last value, or a bound of a range."""
    if isinstance(values, list):
        return values[end]
    bound = values.low if end == 0 else values.high
    return int(bound) if values.integer else bound
