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

FINAL = ("completed", "diverged")  # a diverged trial would diverge again: it is not retried


# --- the space --------------------------------------------------------------------------


class RangeSpec(BaseModel):
    """A range for random search: uniform, or log-uniform (`log: true`); integers with `integer: true`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    low: float
    high: float
    log: bool = False
    integer: bool = False


class SweepSpec(BaseModel):
    """The `sweep:` section of a spec (and what --param, --seeds, --samples add to it)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    method: Literal["grid", "random"] = "grid"
    # dotted spec key -> values to try (grid or random), or a range (random only)
    params: dict[str, list[Any] | RangeSpec] = Field(default_factory=dict)
    samples: int | None = Field(default=None, ge=1, le=10_000)  # random: how many points
    seeds: int = Field(default=1, ge=1, le=100)  # each point trained with seed, seed+1, ...
    metric: str | None = None  # what the summary compares; default: the task's main metric


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


def merge_space(space: SweepSpec, params: list[str], seeds: int | None, samples: int | None, metric: str | None) -> SweepSpec:
    """The YAML's sweep section with the command line's additions (a --param replaces the same key)."""
    merged = dict(space.params)
    for text in params:
        key, values = parse_param(text)
        merged[key] = values
    method = "random" if samples is not None else space.method
    return space.model_copy(update={"params": merged, "method": method, "samples": samples or space.samples,
                                    "seeds": seeds or space.seeds, "metric": metric or space.metric})


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


def plan_sweep(config: Path, overrides: list[str], params: list[str], seeds: int | None = None, samples: int | None = None,
               metric: str | None = None, source=None) -> Plan:
    """Read the spec (or take `source`, spec.read_yaml's result for it) and its sweep section, expand the trials
    and validate every trial's spec before anything runs."""
    from kexp.spec import apply_override, parse_override, read_yaml, validate_spec

    raw, lines, files = copy.deepcopy(source) if source is not None else read_yaml(config)
    space = merge_space(read_sweep_spec(raw.pop("sweep", None), str(config)), params, seeds, samples, metric)
    base_seed = raw.get("seed", 0) if isinstance(raw.get("seed", 0), int) else 0
    for text in overrides:
        key, value = parse_override(text)
        if key == "seed" and isinstance(value, int):
            base_seed = value
    points = expand_points(space, base_seed)
    trials, specs = [], {}
    width = max(3, len(str(len(points) * space.seeds - 1)))
    for p, point in enumerate(points):
        for r in range(space.seeds):
            trial_id = f"trial-{len(trials):0{width}d}"
            texts = [*overrides]
            trial_raw = copy.deepcopy(raw)
            applied: dict[str, str] = {}
            try:
                for text in texts:
                    key, value = parse_override(text)
                    apply_override(trial_raw, key, value)
                    applied[key] = f"--set {text}"
                for key, value in point.items():
                    apply_override(trial_raw, key, value)
                    applied[key] = "sweep point"
                seed = base_seed + r
                if space.seeds > 1:
                    trial_raw["seed"] = seed
                spec = validate_spec(trial_raw, str(config), lines, applied).with_spec_files(files)
            except SpecError as exc:
                where = f"{trial_id} ({describe_point(point)})"
                raise SpecError([f"{where}: {problem}" for problem in exc.problems]) from None
            specs[trial_id] = spec
            trials.append({"id": trial_id, "point": p, "params": point, "seed": spec.seed, "state": "pending", "run_dir": trial_id,
                           "exit_code": None, "attempts": 0, "failures": 0, "started": None, "ended": None, "error": None})
    name = specs[trials[0]["id"]].name
    fingerprint = hashlib.sha256(json.dumps({"base": raw, "set": overrides, "space": space.model_dump(mode="json")},
                                            sort_keys=True, default=str).encode()).hexdigest()
    return Plan(name, Path(config), list(overrides), space, trials, specs, fingerprint)
