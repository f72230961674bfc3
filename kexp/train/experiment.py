"""run_experiment and resume_experiment: spec -> data -> model -> fit -> score -> record, in that order.

    start = FreshStart(runs_dir, run_dir) or Resumption(run)   # decided once, by the caller
    prepared = prepare_data(spec, data_dir, start, emit)      # read, split, fit preprocessing, loss
    device = start_runtime(spec)                              # TensorFlow, threads, precision, device
    first = new_model(...)                                    # a model that cannot be built leaves no run directory
    run = start.open(spec, guard)                             # the run directory, created or reopened
    for each member (the run, or its folds / repeats):
        data -> model -> fit_member (fit, score) -> finish_member (record)
    finish_run                                                # metrics.json, model.keras, completed
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kexp
from kexp.backends import use_backend
from kexp.datasets.base import Dataset, RawData, class_balance, summarize
from kexp.datasets.pipeline import Member, plan_members, prepare_dataset, read_data
from kexp.datasets.shared import load_shared_data
from kexp.errors import KexpError, ResumeRefused
from kexp.events import Emit, RecordingEmit, discard
from kexp.report.plots import BackgroundPlots
from kexp.run.dirs import check_runs_dir
from kexp.run.files import RunFiles
from kexp.run.lifecycle import Run, check_resumable, create_run, record_attempt, reopen_run
from kexp.run.records import Metrics, has_metrics
from kexp.spec import ExperimentSpec, check_task
from kexp.task import count_outputs, resolve_loss
from kexp.tracking import check_installed, check_mlflow_reachable
from kexp.train import record
from kexp.train.checkpoint import Checkpoint, latest_checkpoint
from kexp.train.compile import CompiledModel, new_model
from kexp.train.distributed import SINGLE, ProcessGroup, jax_placement, join
from kexp.train.feeds import steps
from kexp.train.fit import fit_member
from kexp.train.runtime import Placement, select_device, set_determinism, set_precision, start_tensorflow
from kexp.train.session import MemberJob, MemberResult, Prepared, RunFacts, Session
from kexp.train.signals import SignalGuard, stop_on_signals


@dataclass
class RunResult:
    run_dir: Path
    metrics: Metrics  # as metrics.json holds them
    note: str = ""  # e.g. "the run had already completed": the CLI shows it


@dataclass(frozen=True)
class FreshStart:
    """A new run: its directory is created (at `run_dir`, or a new one under `runs_dir`) once the model builds."""

    runs_dir: Path | None
    run_dir: Path | None = None

    def check(self, spec: ExperimentSpec) -> None:
        """What would stop the run anyway, checked before minutes of data loading."""
        parent = self.run_dir.parent if self.run_dir is not None else self.runs_dir
        check_runs_dir(parent)
        if spec.tracking.mlflow is not None:
            check_mlflow_reachable(spec.tracking.mlflow, parent)

    def check_data(self, data: Dataset) -> None:
        """A new run takes the data as it is."""

    def open(self, spec: ExperimentSpec, guard: SignalGuard) -> Run:
        with guard.deferred():  # a signal now waits for the guarded block, which records it
            return create_run(self.runs_dir, spec.name, self.run_dir)

    def record_start(self, session: Session, first: CompiledModel) -> None:
        record.write_run_start(session.run, session.spec, session.prepared.data, session.device, first.plan, session.data_dir,
                               with_preprocessing=len(session.prepared.members) == 1)

    def tracking_note(self, session: Session) -> str | None:
        from kexp.tracking import store_note

        return store_note(session.spec.tracking.mlflow, session.run.path.parent)

    def checkpoint(self, folder: Path) -> Checkpoint | None:
        return None


@dataclass(frozen=True)
class Resumption:
    """A stopped run continued in its own directory (reopened and locked), each member from its last checkpoint."""

    run: Run

    def check(self, spec: ExperimentSpec) -> None:
        """Its directory exists and is held already."""

    def check_data(self, data: Dataset) -> None:
        """A resumed run must read the very files it started on (their SHA-256 is in env.json)."""
        from kexp.datasets.base import changed_files
        from kexp.run.records import read_env

        recorded = read_env(self.run.path).data_files or []
        changes = changed_files(recorded, data.summary.get("files", []))
        if changes:
            raise ResumeRefused(f"{self.run.path}: the data changed since the run started: {'; '.join(changes)}; train a new run")

    def open(self, spec: ExperimentSpec, guard: SignalGuard) -> Run:
        return self.run

    def record_start(self, session: Session, first: CompiledModel) -> None:
        record_attempt(session.run, sys.argv)

    def tracking_note(self, session: Session) -> str | None:
        return None

    def checkpoint(self, folder: Path) -> Checkpoint | None:
        return latest_checkpoint(folder)


Start = FreshStart | Resumption


def run_experiment(spec: ExperimentSpec, data_dir: Path, runs_dir: Path, emit: Emit = discard, run_dir: Path | None = None,
                   group: ProcessGroup = SINGLE) -> RunResult:
    """Train one experiment and leave a complete run directory (at `run_dir` if given); errors before training leave none.

    Progress goes to `emit` as events (kexp.events), and into the run's events.jsonl. With several
    processes (`group`, backend jax) this is process 0's part; the others call run_worker.
    """
    with stop_on_signals() as guard, BackgroundPlots() as plots:
        result = _run(spec, data_dir, RecordingEmit(emit), guard, plots, FreshStart(runs_dir, run_dir), group)
    return noted_late_signal(result, guard)


@dataclass(frozen=True)
class WorkerStart(FreshStart):
    """A process other than 0 of a multi-process run: it trains its share in a scratch run directory of its own
    (the run's directory is process 0's alone) and, resuming, starts from the checkpoint process 0 starts from."""

    resume_from: Path | None = None

    def checkpoint(self, folder: Path) -> Checkpoint | None:
        return latest_checkpoint(self.resume_from) if self.resume_from is not None else None


def run_worker(spec: ExperimentSpec, data_dir: Path, group: ProcessGroup, resume_from: Path | None = None) -> None:
    """Process `group.index` (> 0) of a run: the same data, model and fit as process 0, writing nothing in the run's
    directory; no tracking of its own. Its scratch directory is removed when it ends."""
    import tempfile

    from kexp.spec import TrackingSpec

    train = spec.train.model_copy(update={"tensorboard": None, "checkpoint_every": 0})
    quiet = spec.model_copy(update={"tracking": TrackingSpec(), "train": train})
    with tempfile.TemporaryDirectory(prefix="kexp-process-") as scratch, stop_on_signals() as guard, BackgroundPlots() as plots:
        _run(quiet, data_dir, RecordingEmit(discard), guard, plots, WorkerStart(Path(scratch), resume_from=resume_from), group)


def resume_experiment(run_dir: Path, data_dir: Path, emit: Emit = discard, allow_changed_code: bool = False,
                      group: ProcessGroup = SINGLE) -> RunResult:
    """Continue a stopped run in its own directory, from its last checkpoint; a completed run is left as it is.
    A plugin changed since the run is refused unless `allow_changed_code` (then a warning, in the run's log too)."""
    from kexp.run.lifecycle import read_completed
    from kexp.run.records import read_metrics

    completed = read_completed(Path(run_dir))  # no lock needed to leave a finished run alone (a colleague's read-only one too)
    if completed is not None:
        return RunResult(Path(run_dir), completed, note="the run had already completed: nothing was changed")
    with stop_on_signals() as guard, BackgroundPlots() as plots:
        run, status = reopen_run(Path(run_dir))  # the lock first: a second process is refused before any work
        try:
            if status.state == "completed":
                return RunResult(run.path, read_metrics(run.path), note="the run had already completed: nothing was changed")
            spec, warnings = check_resumable(run.path, status, allow_changed_code)
            for warning in warnings:
                run.log(f"warning: {warning}")
                emit("warning", message=warning)
            result = _run(spec, data_dir, RecordingEmit(emit), guard, plots, Resumption(run), group)
        finally:
            run.release()
    return noted_late_signal(result, guard)


def recorded_processes(run_dir: Path) -> tuple[int, ExperimentSpec | None]:
    """How many processes a run was trained over (env.json) and its spec (config.yaml); (1, None) where either cannot be read
    (resume_experiment then says why) or the run completed (nothing to start)."""
    from kexp.run.lifecycle import read_completed
    from kexp.run.records import read_env
    from kexp.spec import load_spec

    try:
        if read_completed(Path(run_dir)) is not None:
            return 1, None
        return read_env(Path(run_dir)).processes or 1, load_spec(RunFiles(Path(run_dir)).config)
    except KexpError:
        return 1, None


def noted_late_signal(result: RunResult, guard: SignalGuard) -> RunResult:
    if guard.pending is not None:  # it arrived while the last files were written: the run completed all the same
        result.note = f"{guard.pending.name} arrived while the run was finishing; the run completed"
    return result


def _run(spec: ExperimentSpec, data_dir: Path, emit: RecordingEmit, guard: SignalGuard, plots: BackgroundPlots, start: Start,
         group: ProcessGroup = SINGLE) -> RunResult:
    clock = time.perf_counter()
    check_installed(tensorboard=spec.train.tensorboard is not None, mlflow=spec.tracking.mlflow is not None)
    start.check(spec)
    if group.multi:  # JAX's runtime starts before any JAX array exists; it waits for every process
        use_backend(spec.backend)
        join(group)
        guard.reinstall()  # JAX's runtime installs a SIGTERM handler of its own (its preemption notifier): kexp's comes back
    prepared = prepare_data(spec, data_dir, start, emit)
    device = start_runtime(spec, group)
    first = new_model(spec, prepared.data, prepared.members[0].seed, device, prepared.loss, prepared.outputs)
    session = Session(spec, data_dir, emit, guard, plots, start.open(spec, guard), device, prepared)
    announce_run(session, first)
    try:
        with session.run.guarded(guard):
            metrics = train_and_record(session, start, first, clock)
    except BaseException as exc:
        record_failure(session, exc)
        raise
    finally:
        session.run.release()
    return finish_completed(session, metrics)


def prepare_data(spec: ExperimentSpec, data_dir: Path, start: Start, emit: Emit) -> Prepared:
    """Read the data, plan the members and prepare the first one's; every member's split is checked here:
    one that leaves a part or a class empty is a spec error, before any run directory exists."""
    raw, members, data = read_or_load_data(spec, data_dir, emit)
    start.check_data(data)
    loss = resolve_loss(spec.train.loss, data.num_classes, data.task)
    prepared = Prepared(raw, members, data, loss, count_outputs(loss, data.num_classes, data.task))
    emit("data", name=spec.data.name, description=describe_data(data) + protocol_note(spec, members))
    return prepared


def read_or_load_data(spec: ExperimentSpec, data_dir: Path, emit: Emit) -> tuple[RawData, list[Member], Dataset]:
    """The raw data, the members and the first one's dataset: from a sweep's shared cache (KEXP_SHARED_DATA) when it
    holds this data spec's entry, else read, split, fitted and transformed here."""
    shared = load_shared_data(spec, data_dir, emit)
    if shared is not None:
        check_task(spec, len(shared.raw.class_names), shared.raw.task)
        return shared.raw, shared.members, shared.data
    raw = read_data(spec, data_dir)
    check_task(spec, len(raw.class_names), raw.task)
    members = plan_members(raw, spec)
    return raw, members, prepare_dataset(raw, members[0].rows)


def start_runtime(spec: ExperimentSpec, group: ProcessGroup = SINGLE) -> Placement:
    """The spec's backend, TensorFlow (the input pipeline, and under tensorflow the model) started with the spec's
    threads, determinism and precision; the device to train on (under jax, with several processes, all of theirs)."""
    use_backend(spec.backend)
    start_tensorflow(spec.train.threads, spec.backend)
    set_determinism(spec.train.deterministic, spec.backend)  # before JAX starts its devices (select_device)
    set_precision(spec.train.precision)
    return jax_placement(spec.device, group) if spec.backend == "jax" else select_device(spec.device)


def announce_run(session: Session, first: CompiledModel) -> None:
    """From here the events go into the run's events.jsonl too; run_started says how it trains."""
    spec, run, emit, plan = session.spec, session.run, session.emit, first.plan
    emit.record_to(run.path)
    emit("run_started", run_dir=str(run.path), name=spec.name, attempt=run.attempt, model=spec.model.name, params=first.model.count_params(),
         device=session.device.name, steps_per_execution=plan.steps_per_execution, loop=plan.loop)
    lowered = lowered_steps_note(spec, plan.steps_per_execution, plan.loop, steps(len(session.prepared.data.train), spec.train.batch_size))
    if lowered:
        emit("warning", message=lowered)


def train_and_record(session: Session, start: Start, first: CompiledModel, clock: float) -> dict[str, Any]:
    """Inside the guarded run: its start recorded, tracking opened, every member trained, the run's files written."""
    start.record_start(session, first)
    session.tracker = start_tracking(session.run.path, session.spec)
    if session.tracker is not None:
        tracker = session.tracker
        session.emit("tracking", tool="mlflow", uri=tracker.client.tracking_uri, experiment=tracker.experiment, run_id=tracker.run_id,
                     note=start.tracking_note(session))
    session.run.begin(epochs=session.spec.train.epochs, members=len(session.prepared.members))
    trained = train_members(session, start, first)
    return record_run(session, trained, clock)


@dataclass(frozen=True)
class Trained:
    """Every member's result, with the last data and model prepared (the run's summary describes them)."""

    results: list[MemberResult]
    data: Dataset
    compiled: CompiledModel


def train_members(session: Session, start: Start, first: CompiledModel) -> Trained:
    """Each member in turn: data -> model -> fit -> score -> its own files; one finished in an earlier attempt is read back."""
    members, emit = session.prepared.members, session.emit
    data, compiled, results = session.prepared.data, first, []
    for i, member in enumerate(members):
        session.guard.raise_if_pending()
        folder = record.member_dir(session.run.path, session.spec, member)
        if member.name is not None and has_metrics(folder):  # finished in an earlier attempt
            emit("member_skipped", member=member.name, index=i + 1, count=len(members), reason="finished in an earlier attempt")
            results.append(record.read_member_result(folder))
            continue
        if i:
            data = prepare_dataset(session.prepared.raw, member.rows)  # preprocessing refitted on this member's training rows
            compiled = new_model(session.spec, data, member.seed, session.device, session.prepared.loss, session.prepared.outputs)
        if member.name is not None:
            emit("member_started", member=member.name, index=i + 1, count=len(members), description=describe_data(data))
        results.append(train_member(session, start, member, folder, data, compiled))
    return Trained(results, data, compiled)


def train_member(session: Session, start: Start, member: Member, folder: Path, data: Dataset, compiled: CompiledModel) -> MemberResult:
    """One member fitted (from its checkpoint when resumed) and scored; a fold or repeat also writes its own files."""
    session.run.progress(member=member.name, epoch=0)
    resume = start.checkpoint(folder)
    for warning in resume.warnings if resume else ():
        session.emit("warning", message=warning)
        session.run.log(f"warning: {warning}")
    single = len(session.prepared.members) == 1
    job = MemberJob(member, folder, data, compiled, resume, RunFiles(session.run.path).model if single else None)
    with session.device.scope():
        outcome = fit_member(session, job)
    return record.finish_member(session, job, outcome) if member.name else MemberResult(outcome.to_json())


def record_run(session: Session, trained: Trained, clock: float) -> dict[str, Any]:
    """metrics.json (a single run's scores, or the members' aggregate), model.keras, and the run completed."""
    spec, data, run = session.spec, trained.data, session.run
    facts = RunFacts(time.perf_counter() - clock, session.prepared.loss, trained.compiled.model.count_params(), data.task, data.positive_class,
                     spec.evaluation.protocol, run.attempt).to_json()
    if len(session.prepared.members) == 1:
        metrics = {**trained.results[0].document, **facts, "data": summarize(data)}
        record.finish_run(run, trained.compiled.model, metrics, session.plots)
    else:
        aggregate = record.aggregate_results([result.for_aggregate() for result in trained.results])
        metrics = {**aggregate, **facts, "data": summarize(data, sizes=False)}
        record.finish_run(run, None, metrics, session.plots)
    return metrics


def record_failure(session: Session, exc: BaseException) -> None:
    """The MLflow run closed with the run's state, and run_failed."""
    run = session.run
    finish_tracking(session.tracker, run.path, run.state, None, session.emit)
    session.emit("run_failed", run_dir=str(run.path), state=run.state, exit_code=exit_code(exc), error=stop_message(exc))


def finish_completed(session: Session, metrics: dict[str, Any]) -> RunResult:
    """After the run completed: checkpoints removed, tracking closed, run_finished."""
    run = session.run
    record.remove_checkpoints(run.path, session.spec, session.prepared.members)
    finish_tracking(session.tracker, run.path, "completed", metrics, session.emit)
    session.emit("run_finished", run_dir=str(run.path), state="completed", metrics=metrics)
    return RunResult(run.path, Metrics.from_document(metrics))


def start_tracking(run_dir: Path, spec: ExperimentSpec):
    """The run's MLflow run (kexp.tracking) when the spec asks for one, else None."""
    if spec.tracking.mlflow is None:
        return None
    from kexp.tracking import start_mlflow_run

    return start_mlflow_run(run_dir, spec.model_dump(mode="json"), spec.tracking.mlflow, spec.name, kexp.__version__)


def finish_tracking(tracker, run_dir: Path, state: str | None, metrics: dict[str, Any] | None, emit: Emit) -> None:
    """Close the MLflow run with the run's outcome; what MLflow refused along the way is a warning."""
    if tracker is None:
        return
    tracker.finish(run_dir, state or "failed", metrics)
    for problem in dict.fromkeys(tracker.failures):
        emit("warning", message=f"MLflow: {problem}")


def exit_code(exc: BaseException) -> int:
    """The exit code `kexp train` ends with for this exception (kexp.cli.exit_on_error)."""
    if isinstance(exc, KexpError):
        return exc.exit_code
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


def stop_message(exc: BaseException) -> str:
    from kexp.errors import describe_os_error

    text = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def describe_data(data: Dataset) -> str:
    def split(name, part) -> str:
        if data.task == "regression":
            return f"{name} {len(part)} (target mean {part.y.mean():.4g}, std {part.y.std():.4g})"
        counts = ", ".join(f"{k} {v}" for k, v in class_balance(part.y, data.class_names).items())
        return f"{name} {len(part)} ({counts})"

    parts = [split(name, part) for name, part in (("train", data.train), ("validation", data.validation), ("test", data.test)) if part is not None]
    skipped = data.summary.get("skipped_files")  # image_folder's on_bad_file: skip
    return "  ".join(parts) + f"  input {data.input_shape}" + (f"  ({skipped} bad file(s) skipped)" if skipped else "")


def protocol_note(spec: ExperimentSpec, members: list) -> str:
    if spec.evaluation.protocol == "train":
        return "  (scored on its training rows, as the tutorial does: not an estimate for new data)"
    if len(members) > 1:
        return f"  ({len(members)} members: {spec.evaluation.protocol}{', seeds ' + str(spec.member_seeds()) if spec.seeds else ''}; sizes of the first)"
    return ""


def lowered_steps_note(spec: ExperimentSpec, used: int, loop: str, steps_per_epoch: int) -> str | None:
    """The line that says a set train.steps_per_execution was lowered, or None."""
    asked = spec.train.steps_per_execution
    if asked == "auto" or loop == "xla" or used == asked:
        return None
    return (f"train.steps_per_execution {asked} lowered to {used}: a call never runs past the end of an epoch, and {used} is the "
            f"largest divisor of the epoch's {steps_per_epoch} batches not above {asked}")
