"""What a search found besides its points: the optimization history, Optuna's parameter importance, the pruned trials.

kexp.sweep.summary calls these on its trial rows and writes their results into summary.json:
  - the history: each trial in the order the search ran it (Optuna's trial number, else start
    time), its value of the summary metric (the part the best point is judged on) and the best
    value so far;
  - the importance: Optuna's get_param_importances on an in-memory study rebuilt from the
    completed trials, their parameters' distributions taken from the space in sweep.yaml, so a
    grid or random sweep gets one too; fANOVA with a fixed seed (reproducible) where
    scikit-learn is installed, PED-ANOVA (deterministic) where it is not;
  - the pruned trials: where the pruner stopped each one, and its last value of the monitored
    series (from history.json: a pruned trial has no final metrics).
Nothing here draws or prints.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexp.run.files import RunFiles
from kexp.run.records import History, read_history

FANOVA_SEED = 0  # the forest behind fANOVA is random: a fixed seed gives the same importances on every rewrite


@dataclass(frozen=True)
class HistoryEntry:
    """One trial of the optimization history; value and best_so_far are None until a trial has a value."""

    id: str
    number: int | None  # Optuna's trial number (tpe), else None
    state: str
    value: float | None  # the summary metric on the judged part; None for pruned, failed and unfinished trials
    best_so_far: float | None
    objective: float | None  # the value the driver told the study (manifest "value"), when it told one


@dataclass(frozen=True)
class PrunedTrial:
    """A trial the pruner stopped: at which epoch, how many it ran, and the monitored series' last value then."""

    id: str
    params: dict[str, Any]
    pruned_at: int | None
    epochs: int | None
    monitor: str | None
    last_value: float | None


@dataclass(frozen=True)
class Importance:
    """Each parameter's share of the variation of the metric (summing to 1), or None with the reason why not."""

    params: dict[str, float] | None
    reason: str | None = None
    evaluator: str | None = None  # "fanova" or "ped-anova"
    trials: int = 0  # completed trials the study was rebuilt from
    part: str | None = None


# --------------------------------------------------------------------------- history


def search_order(trials: list[dict[str, Any]]) -> list[int]:
    """Indices of `trials` in the order they ran: Optuna's number, else start time; unstarted ones last, in manifest order."""
    def key(i: int) -> tuple[float, str, int]:
        number = trials[i].get("number")
        return (number if isinstance(number, int) else math.inf, trials[i].get("started") or "\uffff", i)

    return sorted(range(len(trials)), key=key)


def optimization_history(trials: list[dict[str, Any]], rows: list[dict[str, Any]], part: str | None, higher_is_better: bool) -> list[HistoryEntry]:
    """The history in search order; `rows` are the summary's trial rows (same order as `trials`)."""
    entries, best = [], None
    for i in search_order(trials):
        value = rows[i].get(part) if part and rows[i]["state"] == "completed" else None
        if value is not None and (best is None or (value > best if higher_is_better else value < best)):
            best = value
        number, objective = trials[i].get("number"), trials[i].get("value")
        entries.append(HistoryEntry(trials[i]["id"], number if isinstance(number, int) else None, str(trials[i].get("state")), value, best,
                                    objective if isinstance(objective, (int, float)) and not isinstance(objective, bool) else None))
    return entries


# --------------------------------------------------------------------------- pruned trials


def monitored_series(history: History, metric: str, monitor: str | None = None) -> str | None:
    """The series the pruner watched: sweep.yaml's `monitor` when it names one, else the validation metric, else loss."""
    for name in (monitor, f"val_{metric}", metric, "val_loss", "loss"):
        if name and history.series.get(name):
            return name
    return None


def read_pruned(sweep_dir: Path, trial: dict[str, Any], metric: str, monitor: str | None = None) -> PrunedTrial:
    """A pruned trial as its history.json left it (no history yet: epochs and value None)."""
    folder = Path(sweep_dir) / trial["run_dir"] if trial.get("run_dir") else None
    history = read_history(folder) if folder is not None and RunFiles(folder).history.is_file() else None
    name = monitored_series(history, metric, monitor) if history else None
    values = [v for v in history.series[name] if v is not None] if name else []
    epochs = (history.epochs if history.epochs is not None else len(history.epoch_seconds)) if history else None
    pruned_at = trial.get("pruned_at")
    return PrunedTrial(trial["id"], trial.get("params") or {}, pruned_at if isinstance(pruned_at, int) else epochs, epochs, name,
                       values[-1] if values else None)


def trial_curves(sweep_dir: Path, trials: list[dict[str, Any]], metric: str, monitor: str | None = None) -> list[dict[str, Any]]:
    """What the pruner saw of each trial that has a history: the monitored value per epoch (a pruned one's ends where it stopped)."""
    curves = []
    for trial in trials:
        folder = Path(sweep_dir) / trial["run_dir"] if trial.get("run_dir") else None
        if folder is None or not RunFiles(folder).history.is_file():
            continue
        history = read_history(folder)
        name = monitored_series(history, metric, monitor)
        if name:
            curves.append({"id": trial["id"], "state": trial.get("state"), "monitor": name, "values": history.series[name]})
    return curves


def pruned_trials(sweep_dir: Path, trials: list[dict[str, Any]], metric: str, monitor: str | None = None) -> list[PrunedTrial]:
    return [read_pruned(sweep_dir, t, metric, monitor) for t in trials if t.get("state") == "pruned"]


# --------------------------------------------------------------------------- importance


def encode_choice(value: Any) -> Any:
    """A categorical choice as Optuna takes it: None, bool, int, float, str; a list or dict as its JSON."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value, sort_keys=True)


def distribution(declared: Any, seen: list[Any]):
    """The Optuna distribution of one parameter: its range or list in the space, else the values the trials took."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(declared, dict) and "low" in declared and "high" in declared:
        log = bool(declared.get("log"))
        if declared.get("integer"):
            return IntDistribution(int(declared["low"]), int(declared["high"]), log=log)
        return FloatDistribution(float(declared["low"]), float(declared["high"]), log=log)
    choices = declared if isinstance(declared, list) and declared else seen
    return CategoricalDistribution(list(dict.fromkeys(encode_choice(v) for v in choices)))


def study_trials(rows: list[dict[str, Any]], part: str, distributions: dict[str, Any]) -> list[Any]:
    """Optuna FrozenTrials of the completed rows; a row whose params fall outside the space (a changed sweep) is left out."""
    import optuna

    made = []
    for row in rows:
        params = {k: encode_choice(row["params"].get(k)) if hasattr(d, "choices") else row["params"].get(k) for k, d in distributions.items()}
        try:
            made.append(optuna.trial.create_trial(params=params, distributions=distributions, value=float(row[part])))
        except (ValueError, TypeError):
            continue
    return made


def evaluate_importance(trials: list[Any], higher_is_better: bool) -> tuple[dict[str, float], str]:
    """get_param_importances on a study of `trials`: fANOVA (seeded) with scikit-learn, else PED-ANOVA."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" on every summary
    try:
        study = optuna.create_study(direction="maximize" if higher_is_better else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)  # the driver's own study logs as it chose
    study.add_trials(trials)
    try:
        import sklearn  # noqa: F401  (fANOVA's forest)
    except ImportError:
        sign = -1.0 if higher_is_better else 1.0  # PED-ANOVA ranks what it takes to get a low value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its advice on quantiles, for a study this small
            found = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), target=lambda t: sign * t.value)
        return {k: float(v) for k, v in found.items()}, "ped-anova"
    found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=FANOVA_SEED))
    return {k: float(v) for k, v in found.items()}, "fanova"


def param_importance(rows: list[dict[str, Any]], part: str | None, space_params: dict[str, Any] | None, higher_is_better: bool) -> Importance:
    """Optuna's importance of each swept parameter for the summary metric on `part`, over the completed trials."""
    done = [r for r in rows if r["state"] == "completed" and part and r.get(part) is not None]
    if len(done) < 2:
        return Importance(None, "fewer than 2 completed trials", trials=len(done), part=part)
    try:
        import optuna  # noqa: F401
    except ImportError:
        return Importance(None, "optuna is not installed (pip install 'kexp[optuna]')", trials=len(done), part=part)
    names = list(dict.fromkeys(k for r in rows for k in r["params"]))
    declared = space_params or {}
    distributions = {k: distribution(declared.get(k), [r["params"].get(k) for r in done]) for k in names}
    varying = {k: d for k, d in distributions.items() if not d.single() and len({json.dumps(r["params"].get(k), sort_keys=True, default=str) for r in done}) > 1}
    if not varying:
        return Importance(None, "no parameter varies among the completed trials", trials=len(done), part=part)
    if len(varying) == 1:  # what Optuna's evaluators return for one parameter, without their seconds of import
        return Importance({next(iter(varying)): 1.0}, None, "the only parameter that varies", len(done), part)
    trials = study_trials(done, part, varying)
    if len(trials) < 2:
        return Importance(None, "fewer than 2 completed trials inside the space in sweep.yaml", trials=len(trials), part=part)
    if len({t.value for t in trials}) < 2:
        return Importance(None, "every completed trial has the same value", trials=len(trials), part=part)
    found, evaluator = evaluate_importance(trials, higher_is_better)
    return Importance(found, None, evaluator, len(trials), part)
