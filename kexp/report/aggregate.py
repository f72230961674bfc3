"""Mean, standard deviation and 95% confidence interval of a metric over several trainings.

The one place kexp aggregates: k-fold folds, repeated seeds and `kexp compare`'s groups of
runs that differ only in seed all go through `summarize_values`, so a number means the same
wherever it is printed. Pure functions, plain dicts in and out: no TensorFlow, no printing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SPLITS = ("train", "validation", "test")
# Spec keys that only choose random draws: runs differing in nothing else are repeats of one experiment.
SEED_KEYS = ("seed", "seeds", "data.split_seed")


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (2.776 for df=4)."""
    from scipy.special import stdtrit  # scipy comes with scikit-learn; scipy.special loads in a third of scipy.stats' time

    return float(stdtrit(df, 0.975))


# Metrics that cannot leave a range, by name part: an interval past the bound (an accuracy CI
# ending at 1.0005) is clipped to it and says so ("ci95_clipped").
PROPORTIONS = {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc"}
NON_NEGATIVE = {"loss", "mae", "mse", "rmse"}


def metric_range(name: str | None) -> tuple[float | None, float | None]:
    """(lowest, highest) a metric can take: [0, 1] for proportions (accuracy, f1.spam, val_auc), [0, inf) for losses, r2 at most 1."""
    parts = {part.removeprefix("val_") for part in (name or "").replace(" ", ".").split(".")}
    if parts & PROPORTIONS:
        return 0.0, 1.0
    if parts & NON_NEGATIVE:
        return 0.0, None
    if "r2" in parts:
        return None, 1.0
    return None, None


def summarize_values(values: Iterable[float | None], name: str | None = None) -> dict[str, Any]:
    """{"mean", "std", "ci95": [low, high], "n"} of the numbers in `values` (None skipped).

    std is the sample standard deviation (ddof=1), 0 for one value. ci95 is the t-interval
    mean ± t(0.975, n-1)·std/√n; with fewer than two values it is unknown: [None, None].
    No values: mean and std are None and n is 0. With the metric's `name`, an interval past
    the metric's range (metric_range) is clipped to it and "ci95_clipped" is true.
    """
    numbers = [float(v) for v in values if v is not None]
    n = len(numbers)
    if n == 0:
        return {"mean": None, "std": None, "ci95": [None, None], "n": 0}
    mean = math.fsum(numbers) / n
    if n == 1:
        return {"mean": mean, "std": 0.0, "ci95": [None, None], "n": 1}
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in numbers) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    summary = {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}
    lowest, highest = metric_range(name)
    low = mean - half if lowest is None else max(lowest, mean - half)
    high = mean + half if highest is None else min(highest, mean + half)
    if [low, high] != summary["ci95"]:
        summary.update(ci95=[low, high], ci95_clipped=True)
    return summary


def numeric_items(metrics: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, float | None]]:
    """(name, number or None) for each metric; nested dicts (per class) as dotted names, text skipped."""
    for name, value in metrics.items():
        if isinstance(value, Mapping):
            yield from numeric_items(value, f"{prefix}{name}.")
        elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            yield f"{prefix}{name}", value


def aggregate_members(members: Sequence[Mapping[str, Any]], parts: Sequence[str] = SPLITS) -> dict[str, dict[str, dict[str, Any]]]:
    """{part: {metric: summarize_values(...)}} over the members' dicts of each part (train, validation, test).

    A member whose part is null or missing, and a null metric value (a diverged fold), is
    left out of that summary; its "n" shows how many values were counted. Parts with no
    values at all are omitted. Nested dicts give dotted names (per_class.spam.f1).
    """
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for split in parts:
        values: dict[str, list[float | None]] = {}
        for member in members:
            for name, value in numeric_items(member.get(split) or {}):
                values.setdefault(name, []).append(value)
        summaries = {name: summarize_values(found, name) for name, found in values.items()}
        summaries = {name: summary for name, summary in summaries.items() if summary["n"]}
        if summaries:
            result[split] = summaries
    return result


# Keys added to the spec since a run was written, at the value that run had (its config.yaml lacks
# them): a run from before `backend` existed trained with TensorFlow, and groups with new ones.
KEYS_OF_OLDER_RUNS = {"backend": "tensorflow"}


def spec_as_now(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A run's saved spec with the keys an older kexp did not write, so runs of either age compare key by key."""
    return {**spec, **{key: value for key, value in KEYS_OF_OLDER_RUNS.items() if key not in spec}}


def flatten_spec(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model.hidden_units": [64], "train.optimizer.name": "adam", ...}; lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten_spec(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def group_runs_by_spec(runs: Iterable[tuple[str, Mapping[str, Any]]], ignore: Sequence[str] = SEED_KEYS) -> list[list[str]]:
    """Run ids grouped by resolved spec, ignoring the seed keys; groups and members in first-seen order.

    `runs` is (run id, spec dict from config.yaml) pairs. Two runs share a group when their
    specs are equal once `seed`, `seeds` and `data.split_seed` are left out: runs of different
    backends (tensorflow, jax) are never repeats of one another.
    """
    groups: dict[str, list[str]] = {}
    for run_id, spec in runs:
        flat = {k: v for k, v in flatten_spec(spec_as_now(spec)).items() if k not in ignore}
        groups.setdefault(json.dumps(flat, sort_keys=True, default=str), []).append(run_id)
    return list(groups.values())
