"""Search that learns (`--method tpe`) and pruning (`--prune`): an Optuna study driven by kexp's sweep driver.

The study lives in the sweep folder (study.journal, Optuna's journal file, beside manifest.json)
unless --storage names an RDB (postgresql://...) shared by several drivers, so the sweep folder
alone is the whole state. Trials stay ordinary kexp runs and Optuna only sees numbers: the
driver asks for a point (ask), reads each finished epoch's value from the trial's history.json
(report), asks the pruner (a pruned trial is stopped with SIGTERM at its next batch boundary, as
a preempted one is, and keeps its files), and tells the final value read from metrics.json.

Trial `trial-007` is the study's trial number 7. A driver that died between asking and writing
the manifest left a RUNNING trial the manifest does not know: it is adopted on resume, so
numbers never skip or repeat. Reproducibility: each ask uses a TPESampler seeded with
sampler_seed + the trial's number, so a proposal depends on the seed, the number and the
finished trials only (not on a restarted driver's random state). With --sync the driver asks a
batch only when no trial runs, and the pruner judges each trial against earlier batches only
(`verdict_against_earlier`), so the same command proposes the same parameters twice.
Asynchronous proposal (the default) depends on which trial finishes first: not reproducible.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kexp.errors import KexpError
from kexp.run.files import SweepFiles

JOURNAL = "study.journal"


class StudyError(KexpError):
    """The study cannot be opened: a damaged journal, an unreachable storage, optuna missing."""

    exit_code = 2


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise KexpError("--method tpe and --prune need Optuna: pip install 'kexp[optuna]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def redacted(url: str) -> str:
    """A storage URL fit to print and record: its password replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(sweep_dir: Path, url: str | None):
    """The sweep's journal file, or the RDB at `url`; StudyError with the file or the server named."""
    optuna = import_optuna()
    if url is None:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = SweepFiles(sweep_dir).path / JOURNAL
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path), grace_period=10)))
        except Exception as exc:  # noqa: BLE001 - whatever a damaged journal raises, it is refused, never restarted
            raise StudyError(f"{path}: the study journal is damaged ({' '.join(str(exc).split()) or type(exc).__name__}); "
                             "kexp does not start a study over silently: restore the file, or start a new sweep (--new)") from None
    connect = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    # SQLAlchemy 2.0 reads a bare postgresql:// as psycopg2, 2.1 as psycopg 3: kexp[optuna] installs psycopg 3
    engine_url = "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(engine_url, engine_kwargs={"connect_args": connect} if connect else None)
        except ImportError as exc:
            raise StudyError(f"--storage {redacted(url)}: {exc} (for PostgreSQL: pip install 'kexp[optuna]')") from None
        except Exception as exc:  # noqa: BLE001 - sqlalchemy's OperationalError and friends: one line naming the server
            if creating_race(exc) and attempt < 4:
                time.sleep(0.5 * (attempt + 1))  # another driver is creating Optuna's tables in this new database: use them
                continue
            reason = " ".join(str(exc).split("\n")[0].split())[:300]
            raise StudyError(f"--storage {redacted(url)}: cannot open the study storage: {reason}") from None
    raise AssertionError("unreachable")


def creating_race(exc: Exception) -> bool:
    """Two drivers starting at once on a fresh database both create Optuna's tables; the loser's error."""
    text = f"{type(exc).__name__} {exc}"
    return any(word in text for word in ("UniqueViolation", "IntegrityError", "already exists"))


def distributions(space) -> dict[str, Any]:
    """Optuna distributions of the space: lists are categorical, ranges int or float (log when asked),
    built as the summary's importance study builds them (kexp.sweep.insight.distribution)."""
    from kexp.sweep.insight import distribution
    from kexp.sweep.space import RangeSpec

    return {key: distribution(values.model_dump() if isinstance(values, RangeSpec) else values, [])
            for key, values in space.params.items()}


def decode_params(space, params: dict[str, Any]) -> dict[str, Any]:
    """A study trial's params as spec values (the JSON text of a list choice back to the list), in the space's order."""
    from kexp.sweep.insight import encode_choice
    from kexp.sweep.space import RangeSpec

    point = {}
    for key, values in space.params.items():
        value = params[key]
        if isinstance(values, RangeSpec):
            value = int(value) if values.integer else float(f"{value:.6g}")
        else:
            value = {encode_choice(v): v for v in values}[value]
        point[key] = value
    return point


def direction_of(metric: str) -> str:
    from kexp.sweep.summary import lower_is_better

    return "minimize" if lower_is_better(metric) else "maximize"


def make_pruner(name: str, epochs: int, samples: int | None):
    """Optuna's pruner for --prune, sized to the trials' epochs (its resource) and the number of trials."""
    optuna = import_optuna()
    startup = max(1, min(5, (samples or 8) // 4))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    return optuna.pruners.NopPruner()


def make_sampler(seed: int, samples: int | None):
    """TPE seeded for one ask. Its random start-up is a quarter of the trials (3 to 10): Optuna's default
    of 10 would leave a 12-trial search almost all random."""
    optuna = import_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multivariate and constant_liar are marked experimental
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, (samples or 12) // 4)), multivariate=True,
                                          constant_liar=True)


@dataclass
class Search:
    """The sweep's study and what the driver does with it."""

    study: Any
    space: Any  # kexp.sweep.space.SweepSpec
    metric: str
    sampler_seed: int
    sync: bool
    sweep: str = ""  # the sweep directory's name: which driver's trial it is, in a shared study
    reported: dict[int, int] = field(default_factory=dict)  # trial number -> epochs reported
    batch_start: int = 0  # --sync: the first number of the batch now running

    @property
    def proposes(self) -> bool:
        return self.space.method == "tpe"

    @property
    def prunes(self) -> bool:
        return self.space.prune != "none"

    def ask(self) -> tuple[int, dict[str, Any]]:
        """A new trial: its number and (tpe) its point; grid and random trials are asked bare, for their number."""
        if not self.proposes:
            trial = self.study.ask()
            return trial.number, {}
        self.study.sampler = make_sampler(self.sampler_seed + len(self.study.get_trials(deepcopy=False)), self.space.samples)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask(fixed_distributions=distributions(self.space))
        return trial.number, decode_params(self.space, trial.params)

    def note(self, number: int, trial: dict[str, Any]) -> None:
        """What the study keeps of the kexp trial: its id and sweep (to adopt it), its epochs (the pruner's last step)."""
        storage = self.study._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        for key, value in (("kexp_id", trial["id"]), ("epochs", trial.get("epochs")), ("sweep", self.sweep)):
            if value is not None:
                storage.set_trial_user_attr(trial_id, key, value)

    def start_batch(self) -> None:
        self.batch_start = len(self.study.get_trials(deepcopy=False))

    def resume_batch(self, batch: int) -> None:
        """--sync after a restart: the batch still running began at a multiple of the batch size (batches are
        asked whole, numbered from 0), so its trials are judged against the same earlier trials as before."""
        running = self.running_numbers()
        first = min(running) if running else self.trial_count()
        self.batch_start = first // max(1, batch) * max(1, batch)

    def trial_count(self) -> int:
        return len(self.study.get_trials(deepcopy=False))

    def running_numbers(self) -> dict[int, dict[str, Any]]:
        """The study's RUNNING trials: number -> params as spec values (tpe) or {}."""
        optuna = import_optuna()
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return {t.number: decode_params(self.space, t.params) if self.proposes and t.params else {} for t in running}

    def frozen(self, number: int):
        storage = self.study._storage
        return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number))

    def observe(self, number: int, values: list[float | None]) -> int | None:
        """Report the epochs not reported yet (value per epoch, 1-based steps); the step to prune at, or None."""
        optuna = import_optuna()
        frozen = self.frozen(number)
        if frozen.state != optuna.trial.TrialState.RUNNING:
            return None
        done = self.reported.get(number, max(frozen.intermediate_values, default=0))
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        for step in range(done + 1, len(values) + 1):
            value = values[step - 1]
            self.reported[number] = step
            if value is None or not math.isfinite(value):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial.report(float(value), step)
            if self.prunes and step < len_epochs(frozen) and self.should_prune(number):
                return step
        return None

    def should_prune(self, number: int) -> bool:
        frozen = self.frozen(number)
        if not self.sync:
            return bool(self.study.pruner.prune(self.study, frozen))
        return verdict_against_earlier(self.study, frozen, self.batch_start)

    def tell(self, number: int, state: str, value: float | None) -> None:
        """The trial's end: completed (with its value), pruned, or failed (a failed trial, a diverged one, a missing value)."""
        optuna = import_optuna()
        states = optuna.trial.TrialState
        if self.frozen(number).state != states.RUNNING:
            return  # told already (a driver that died after telling, before writing the manifest)
        if state == "completed" and value is not None and math.isfinite(value):
            self.study.tell(number, value)
        elif state == "pruned":
            self.study.tell(number, state=states.PRUNED)
        else:
            self.study.tell(number, state=states.FAIL)


def len_epochs(frozen) -> int:
    """The trial's epochs, as the driver recorded them when it asked (a step at the last epoch prunes nothing)."""
    return int(frozen.user_attrs.get("epochs", 10**9))


def verdict_against_earlier(study, frozen, before: int) -> bool:
    """The pruner's verdict on `frozen` judged against the trials numbered below `before` only (--sync):
    a copy of the study in memory holds those, placeholders up to the trial's own number (so Hyperband's
    bracket, a hash of the number, is the same) and the trial; what the pruner records on the trial
    (ASHA's rungs) is copied back."""
    optuna = import_optuna()
    states = optuna.trial.TrialState
    copy = optuna.create_study(study_name=study.study_name, storage=optuna.storages.InMemoryStorage(),
                               direction=study.direction, pruner=study.pruner)
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < before]
    placeholders = [optuna.trial.create_trial(state=states.FAIL) for _ in range(before, frozen.number)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copy.add_trials(earlier + placeholders)
        trial_id = copy._storage.create_new_trial(copy._study_id)
        for step, value in frozen.intermediate_values.items():
            copy._storage.set_trial_intermediate_value(trial_id, step, value)
        for key, value in frozen.system_attrs.items():
            copy._storage.set_trial_system_attr(trial_id, key, value)
        verdict = bool(copy.pruner.prune(copy, copy._storage.get_trial(trial_id)))
    for key, value in copy._storage.get_trial(trial_id).system_attrs.items():
        if frozen.system_attrs.get(key) != value:
            study._storage.set_trial_system_attr(frozen._trial_id, key, value)
    return verdict


def study_name(plan_name: str, fingerprint: str) -> str:
    """The same command on several nodes names the same study (--storage shared by their drivers)."""
    return f"kexp-{plan_name}-{fingerprint[:12]}"


def open_search(sweep_dir: Path, space, name: str, storage_url: str | None, epochs: int, seed: int) -> Search:
    """The sweep's study, created on first use and loaded after (a damaged journal is refused)."""
    optuna = import_optuna()
    storage = open_storage(sweep_dir, storage_url)
    from kexp.sweep.space import resolved_metric

    metric = resolved_metric(space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            study = optuna.create_study(study_name=name, storage=storage, direction=direction_of(metric), load_if_exists=True,
                                        pruner=make_pruner(space.prune, epochs, space.samples))
        except Exception as exc:  # noqa: BLE001 - a storage that answered but cannot hold the study
            raise StudyError(f"{storage_url and redacted(storage_url) or SweepFiles(sweep_dir).path / JOURNAL}: "
                             f"cannot open study {name}: {' '.join(str(exc).split())[:300]}") from None
    return Search(study, space, metric, space.sampler_seed if space.sampler_seed is not None else seed, space.sync, Path(sweep_dir).name)


def history_values(run_dir: Path, metric: str) -> list[float | None] | None:
    """The trial's value per finished epoch: `val_<metric>` when it holds validation data, else `<metric>`."""
    from kexp.errors import RunDirError
    from kexp.run.records import has_history, read_history

    if not has_history(run_dir):
        return None
    with contextlib.suppress(RunDirError, OSError, ValueError):
        series = read_history(run_dir).series
        return series.get(f"val_{metric}") or series.get(metric)
    return None


def objective_value(sweep_dir: Path, trial: dict[str, Any], metric: str) -> float | None:
    """What the study is told for a completed trial: its `metric` on test data, else validation, else train,
    as the summary judges the best point (kexp.sweep.summary.BEST_PARTS)."""
    from kexp.sweep.summary import BEST_PARTS, read_trial_metrics

    metrics = read_trial_metrics(sweep_dir, trial)
    for part in BEST_PARTS:
        value = (metrics.get(part) or {}).get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return None
