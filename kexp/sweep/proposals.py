"""The sweep directory's side of a search: its settings in sweep.yaml, trials made from proposed
points, the study opened again on resume, and trials the manifest missed when a driver died."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kexp.errors import ResumeRefused, SpecError
from kexp.run.files import SweepFiles
from kexp.run.io import now_iso, write_text_atomic
from kexp.run.records import Manifest, Trial
from kexp.sweep.space import FINAL, SweepBase, SweepSpec, describe_point, read_sweep_base, sweep_fingerprint, trial_id_width


@dataclass(frozen=True)
class SearchSettings:
    """sweep.yaml's `search`: where the study is and what the driver needs to continue it."""

    study: str  # the study's name (kexp.sweep.search.study_name)
    storage: str | None  # None: study.journal in the sweep folder; else the RDB URL, its password as ***
    epochs: int  # the trials' epochs: Hyperband's largest resource
    batch: int  # --sync: trials proposed at once (the --parallel the sweep started with)
    seed: int  # the spec's seed: tpe's sampler seed unless sweep.sampler_seed says

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def write_trial_spec(sweep_dir: Path, trial: Trial, spec) -> None:
    header = f"# Trial {trial['id']} of sweep {Path(sweep_dir).name}: {describe_point(trial['params'])}\n"
    write_text_atomic(SweepFiles(sweep_dir).trial_spec(trial["id"]), header + spec.to_yaml())


def needs_study(space: SweepSpec) -> bool:
    return space.method == "tpe" or space.prune != "none"


def settings_for(plan, storage: str | None, parallel: int, new: bool = False) -> SearchSettings | None:
    """A new sweep's search settings (None for a grid or random sweep without pruning). In a shared storage
    the same command joins the same study (named by the spec and space); --new starts one of its own."""
    import secrets

    from kexp.sweep.search import redacted, study_name

    if not needs_study(plan.space):
        return None
    first = next(iter(plan.specs.values()))
    name = study_name(plan.name, plan.fingerprint) + (f"-{secrets.token_hex(3)}" if new and storage else "")
    return SearchSettings(name, redacted(storage) if storage else None, first.train.epochs, parallel, plan.base.base_seed)


def read_sweep_document(sweep_dir: Path) -> dict[str, Any]:
    """sweep.yaml, which a continued search cannot go on without (ResumeRefused naming it)."""
    from kexp.errors import RunDirError
    from kexp.run.records import read_sweep_yaml

    try:
        return read_sweep_yaml(sweep_dir)
    except RunDirError as exc:
        raise ResumeRefused(str(exc)) from None


def recorded_search(sweep_dir: Path) -> tuple[SweepSpec, SearchSettings | None]:
    document = read_sweep_document(sweep_dir)
    space = SweepSpec.model_validate(document.get("space") or {})
    search = document.get("search")
    return space, SearchSettings(**search) if isinstance(search, dict) else None


def storage_to_use(sweep_dir: Path, settings: SearchSettings, given: str | None) -> str | None:
    """The recorded storage, or --storage when the record hides a password (or names the same server)."""
    from kexp.sweep.search import redacted

    if settings.storage is None:
        if given:
            raise ResumeRefused(f"{sweep_dir}: this sweep's study is its own study.journal; leave out --storage {redacted(given)}")
        return None
    if given is None:
        if "***" in settings.storage:
            raise ResumeRefused(f"{sweep_dir}: this sweep's study is in {settings.storage}: pass --storage with its password to continue it")
        return settings.storage
    if redacted(given) != settings.storage:
        raise ResumeRefused(f"{sweep_dir}: this sweep's study is in {settings.storage}, not {redacted(given)}")
    return given


def open_sweep_search(sweep_dir: Path, storage: str | None):
    """The sweep's study as a kexp.sweep.search.Search, or None when it has none; with the batch size."""
    from kexp.sweep.search import open_search

    space, settings = recorded_search(sweep_dir)
    if settings is None:
        return None, 1
    url = storage_to_use(sweep_dir, settings, storage)
    return open_search(sweep_dir, space, settings.study, url, settings.epochs, settings.seed), settings.batch


def sweep_base(sweep_dir: Path, manifest: Manifest, plan) -> SweepBase:
    """What new trials' specs start from: the plan's, or (--resume DIR) the spec file again, refused if it changed."""
    if plan is not None:
        return plan.base
    document = read_sweep_document(sweep_dir)
    config = Path(document.get("config", ""))
    try:
        base, _ = read_sweep_base(config, list(document.get("set") or []))
    except SpecError as exc:
        raise ResumeRefused(f"{sweep_dir}: cannot read the sweep's spec to propose its next trials: {'; '.join(exc.problems)}") from None
    fingerprint = sweep_fingerprint(base, SweepSpec.model_validate(document.get("space") or {}))
    if fingerprint != manifest.get("fingerprint"):
        raise ResumeRefused(f"{config}: the spec changed since sweep {sweep_dir.name} started; restore it, or start a new sweep")
    return base


def new_search_trial(sweep_dir: Path, base: SweepBase, number: int, point: dict[str, Any], samples: int, max_attempts: int) -> Trial:
    """The manifest entry of the study's trial `number` at `point`, its spec written; a point the spec
    refuses (a value the model cannot take) is a failed trial, with the reason, that is not retried."""
    trial_id = f"trial-{number:0{trial_id_width(samples)}d}"
    try:
        trial, spec = base.make_trial(trial_id, point)
    except SpecError as exc:
        return {"id": trial_id, "number": number, "point": number, "params": point, "seed": None, "state": "failed", "run_dir": trial_id,
                "exit_code": None, "attempts": 0, "failures": max_attempts, "started": None, "ended": now_iso(), "error": "; ".join(exc.problems)}
    trial.update(number=number, point=number, epochs=spec.train.epochs)
    write_trial_spec(sweep_dir, trial, spec)
    return trial


def adopt_orphans(manifest: Manifest, search, make, shared: bool) -> list[str]:
    """Study trials still RUNNING that the manifest does not hold (the driver died between asking and
    writing): tpe trials are taken in under their number; a grid trial's bare number is told failed.
    In a shared study only this sweep's own trials are taken. Returns the ids adopted."""
    known = {t.get("number") for t in manifest["trials"]}
    adopted = []
    for number, point in sorted(search.running_numbers().items()):
        owner = search.frozen(number).user_attrs.get("sweep")
        if number in known or (owner is not None and owner != search.sweep) or (owner is None and shared):
            continue
        if not search.proposes:
            search.tell(number, "failed", None)
            continue
        trial = make(number, point)
        search.note(number, trial)
        manifest["trials"].append(trial)
        adopted.append(trial["id"])
    manifest["trials"].sort(key=lambda t: (t.get("number") is None, t.get("number") or 0))
    return adopted


def settle_told(sweep_dir: Path, manifest: Manifest, search) -> None:
    """A trial the study was told was pruned while the manifest still says otherwise (the driver died in between)."""
    from kexp.run.lifecycle import mark_pruned

    optuna = search_optuna()
    for i, trial in enumerate(manifest["trials"]):
        if trial.get("number") is None or trial["state"] in FINAL:
            continue
        frozen = search.frozen(trial["number"])
        if frozen.state == optuna.trial.TrialState.PRUNED:
            epoch = max(frozen.intermediate_values, default=0)
            manifest["trials"][i] = {**trial, "state": "pruned", "pruned_at": epoch, "error": None, "value": None}
            mark_pruned(Path(sweep_dir) / trial["run_dir"], epoch, search.metric, frozen.intermediate_values.get(epoch))


def search_optuna():
    from kexp.sweep.search import import_optuna

    return import_optuna()
