"""run_experiment: spec -> data -> model -> training -> run directory, in that order."""

from __future__ import annotations

import contextlib
import getpass
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kexp
from kexp.checkpoint import Checkpoint, latest_checkpoint
from kexp.datasets.base import Dataset, Split, class_balance, summarize
from kexp.datasets.pipeline import plan_members, prepare_dataset, read_data
from kexp.errors import Diverged, Interrupted, KexpError, ModelError, ResumeRefused
from kexp.events import Emit, RecordingEmit, discard
from kexp.plots import BackgroundPlots
from kexp.preprocessing import to_document
from kexp.registry import MODELS
from kexp.run.dirs import check_runs_dir
from kexp.run.io import now_iso, replace_durably, write_json, write_text_atomic
from kexp.run.lifecycle import Run, check_resumable, create_run, pause_for_tests, process_age_seconds, record_attempt, reopen_run
from kexp.run.records import write_preprocessing
from kexp.signals import SignalGuard, stop_on_signals
from kexp.spec import ExperimentSpec, check_task
from kexp.tracking import check_installed, check_mlflow_reachable


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    note: str = ""  # e.g. "the run had already completed": the CLI shows it


def describe_data(data: Dataset) -> str:
    def split(name, part) -> str:
        if data.task == "regression":
            return f"{name} {len(part)} (target mean {part.y.mean():.4g}, std {part.y.std():.4g})"
        counts = ", ".join(f"{k} {v}" for k, v in class_balance(part.y, data.class_names).items())
        return f"{name} {len(part)} ({counts})"

    parts = [split(name, part) for name, part in (("train", data.train), ("validation", data.validation), ("test", data.test)) if part is not None]
    return "  ".join(parts) + f"  input {data.input_shape}"


def build_model(spec: ExperimentSpec, input_shape: tuple[int, ...], num_outputs: int, task: str = "classification"):
    entry = MODELS.get(spec.model.name)
    try:
        return entry.fn(entry.options.model_validate(spec.model.options()), input_shape, num_outputs, task)
    except ValueError as exc:
        raise ModelError(f"model '{spec.model.name}': {exc}") from None


def run_experiment(spec: ExperimentSpec, data_dir: Path, runs_dir: Path, emit: Emit = discard, run_dir: Path | None = None) -> RunResult:
    """Train one experiment and leave a complete run directory (at `run_dir` if given); errors before training leave none.

    Progress goes to `emit` as events (kexp.events), and into the run's events.jsonl.
    """
    with stop_on_signals() as guard, BackgroundPlots() as plots:
        result = _run(spec, data_dir, RecordingEmit(emit), guard, plots, runs_dir=runs_dir, run_dir=run_dir)
    return noted_late_signal(result, guard)


def resume_experiment(run_dir: Path, data_dir: Path, emit: Emit = discard) -> RunResult:
    """Continue a stopped run in its own directory, from its last checkpoint; a completed run is left as it is."""
    from kexp.run.lifecycle import read_completed
    from kexp.run.records import read_json

    completed = read_completed(Path(run_dir))  # no lock needed to leave a finished run alone (a colleague's read-only one too)
    if completed is not None:
        return RunResult(Path(run_dir), completed.document, note="the run had already completed: nothing was changed")
    with stop_on_signals() as guard, BackgroundPlots() as plots:
        run, status = reopen_run(Path(run_dir))  # the lock first: a second process is refused before any work
        try:
            if status.state == "completed":
                return RunResult(run.path, read_json(run.path / "metrics.json"), note="the run had already completed: nothing was changed")
            spec = check_resumable(run.path, status)
            result = _run(spec, data_dir, RecordingEmit(emit), guard, plots, run=run)
        finally:
            run.release()
    return noted_late_signal(result, guard)


def noted_late_signal(result: RunResult, guard: SignalGuard) -> RunResult:
    if guard.pending is not None:  # it arrived while the last files were written: the run completed all the same
        result.note = f"{guard.pending.name} arrived while the run was finishing; the run completed"
    return result


def _run(spec: ExperimentSpec, data_dir: Path, emit: RecordingEmit, guard: SignalGuard, plots: BackgroundPlots, runs_dir: Path | None = None,
         run: Run | None = None, run_dir: Path | None = None) -> RunResult:
    from kexp import training

    clock = time.perf_counter()
    fresh = run is None
    # what would stop the run anyway is checked before minutes of data loading, not after
    check_installed(tensorboard=spec.train.tensorboard is not None, mlflow=spec.tracking.mlflow is not None)
    if fresh:
        check_runs_dir(run_dir.parent if run_dir is not None else runs_dir)
        if spec.tracking.mlflow is not None:
            check_mlflow_reachable(spec.tracking.mlflow, run_dir.parent if run_dir is not None else runs_dir)
    raw = read_data(spec, data_dir)
    check_task(spec, len(raw.class_names), raw.task)
    # every member's split is checked here: one that leaves a part or a class empty is a spec error, before any run directory exists
    members = plan_members(raw, spec)
    data = prepare_dataset(raw, members[0].rows)
    if not fresh:
        check_same_data(run.path, data)
    loss = training.resolve_loss(spec.train.loss, data.num_classes, data.task)
    outputs = training.count_outputs(loss, data.num_classes, data.task)
    emit("data", name=spec.data.name, description=describe_data(data) + protocol_note(spec, members))
    training.start_tensorflow(spec.train.threads)
    training.set_determinism(spec.train.deterministic)
    training.set_precision(spec.train.precision)
    device = training.select_device(spec.device)
    model = new_model(spec, data, members[0].seed, device, loss, outputs)  # a model that cannot be built leaves no run directory
    if fresh:
        with guard.deferred():  # a signal now waits for the guarded block, which records it
            run = create_run(runs_dir, spec.name, run_dir)
    emit.record_to(run.path)
    emit("run_started", run_dir=str(run.path), name=spec.name, attempt=run.attempt, model=spec.model.name, params=model.count_params(),
         device=device.name, steps_per_execution=model.kexp_steps_per_execution, loop=model.kexp_loop)
    lowered = lowered_steps_note(spec, model.kexp_steps_per_execution, model.kexp_loop, training.steps(len(data.train), spec.train.batch_size))
    if lowered:
        emit("warning", message=lowered)
    tracker = None
    try:
        with run.guarded(guard):
            if fresh:
                write_run_start(run.path, spec, data, device, model, data_dir, run.started, with_preprocessing=len(members) == 1)
            else:
                record_attempt(run, sys.argv)
            tracker = start_tracking(run.path, spec)
            if tracker is not None:
                from kexp.tracking import store_note

                emit("tracking", tool="mlflow", uri=tracker.client.tracking_uri, experiment=tracker.experiment, run_id=tracker.run_id,
                     note=store_note(spec.tracking.mlflow, run.path.parent) if fresh else None)
            run.begin(epochs=spec.train.epochs, members=len(members))
            results = []
            for i, member in enumerate(members):
                guard.raise_if_pending()
                folder = member_dir(run.path, spec, member)
                if member.name is not None and (folder / "metrics.json").is_file():  # finished in an earlier attempt
                    emit("member_skipped", member=member.name, index=i + 1, count=len(members), reason="finished in an earlier attempt")
                    results.append(read_member_result(folder))
                    continue
                if i:
                    data = prepare_dataset(raw, member.rows)  # preprocessing refitted on this member's training rows
                    model = new_model(spec, data, member.seed, device, loss, outputs)
                if member.name is not None:
                    emit("member_started", member=member.name, index=i + 1, count=len(members), description=describe_data(data))
                run.progress(member=member.name, epoch=0)
                resume = None if fresh else latest_checkpoint(folder)
                for warning in resume.warnings if resume else ():
                    emit("warning", message=warning)
                    run.log(f"warning: {warning}")
                model_path = run.path / "model.keras" if len(members) == 1 else None
                with device.scope():
                    metrics = fit_and_evaluate(model, data, loss, spec, member, folder, emit, guard, run, plots, resume, model_path,
                                               tracking_callbacks(spec, folder, tracker, member.name))
                results.append(finish_member(run.path, spec, member, model, data, metrics, plots) if member.name else metrics)
            extra = {"wall_seconds": time.perf_counter() - clock, "loss_function": loss, "num_params": model.count_params(),
                     "task": data.task, "positive_class": data.positive_class, "protocol": spec.evaluation.protocol,
                     "attempts": run.attempt}
            if len(members) == 1:
                metrics = {**results[0], **extra, "data": summarize(data)}
                finish_run(run, model, metrics, plots)
            else:
                metrics = {**aggregate_results(results), **extra, "data": summarize(data, sizes=False)}
                finish_run(run, None, metrics, plots)
    except BaseException as exc:
        finish_tracking(tracker, run.path, run.state, None, emit)
        emit("run_failed", run_dir=str(run.path), state=run.state, exit_code=exit_code(exc), error=stop_message(exc))
        raise
    finally:
        run.release()
    remove_checkpoints(run.path, spec, members)
    finish_tracking(tracker, run.path, "completed", metrics, emit)
    emit("run_finished", run_dir=str(run.path), state="completed", metrics=metrics)
    return RunResult(run.path, metrics)


def start_tracking(run_dir: Path, spec: ExperimentSpec):
    """The run's MLflow run (kexp.tracking) when the spec asks for one, else None."""
    if spec.tracking.mlflow is None:
        return None
    from kexp.tracking import start_mlflow_run

    return start_mlflow_run(run_dir, spec.model_dump(mode="json"), spec.tracking.mlflow, spec.name, kexp.__version__)


def tracking_callbacks(spec: ExperimentSpec, folder: Path, tracker, member: str | None) -> list:
    """TensorBoard's and MLflow's Keras callbacks, as the spec asks."""
    from kexp.tracking import tensorboard_callback

    callbacks = [tensorboard_callback(folder, spec.train.tensorboard)] if spec.train.tensorboard is not None else []
    return callbacks + ([tracker.callback(member)] if tracker is not None else [])


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


def check_same_data(run_dir: Path, data: Dataset) -> None:
    """A resumed run must read the very files it started on (their SHA-256 is in env.json)."""
    from kexp.datasets.base import changed_files
    from kexp.run.records import read_json

    recorded = read_json(run_dir / "env.json").get("data_files", [])
    changes = changed_files(recorded, data.summary.get("files", []))
    if changes:
        raise ResumeRefused(f"{run_dir}: the data changed since the run started: {'; '.join(changes)}; train a new run")


def read_member_result(folder: Path) -> dict[str, Any]:
    from kexp.run.records import read_json

    result = read_json(folder / "metrics.json")
    result["report"] = flat_report(result.get("report"))
    return result


def remove_checkpoints(run_dir: Path, spec: ExperimentSpec, members: list) -> None:
    """A completed run keeps its model, not its checkpoints (MBs per member)."""
    import shutil

    from kexp.checkpoint import CHECKPOINTS

    for member in members:
        shutil.rmtree(member_dir(run_dir, spec, member) / CHECKPOINTS, ignore_errors=True)


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


def new_model(spec: ExperimentSpec, data: Dataset, seed: int, device, loss: str, outputs: int):
    """A freshly initialized, compiled model on `device` (a training.Placement): the seed is set
    first, so each member starts from its own seed. model.kexp_steps_per_execution holds the
    steps_per_execution it was compiled with."""
    from kexp import training

    training.set_seed(seed)
    with device.scope():
        model = build_model(spec, data.input_shape, outputs, data.task)
        model.kexp_steps_per_execution = training.compile_model(
            model, spec.train, loss, outputs, training.steps(len(data.train), spec.train.batch_size), mirrored=device.strategy is not None,
            input_bytes=data.train.x.nbytes, on_cpu=device.on_cpu)
    return model


def member_dir(run_dir: Path, spec: ExperimentSpec, member) -> Path:
    """Where a member writes history.json: the run itself, or folds/<i>[-seed-<s>]/ or repeats/<seed>/."""
    if member.name is None:
        return run_dir
    folder = run_dir / ("folds" if spec.evaluation.protocol == "kfold" else "repeats") / member.name.removeprefix("fold-").removeprefix("seed-")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def finish_member(run_dir: Path, spec: ExperimentSpec, member, model, data: Dataset, metrics: dict[str, Any], plots: BackgroundPlots) -> dict[str, Any]:
    """A fold's or repeat's own files: metrics.json, learning curves and, with save_models, its model and preprocessing."""
    folder = member_dir(run_dir, spec, member)
    result = {"name": member.name, "seed": member.seed, **metrics, "data": summarize(data)}
    write_json(folder / "metrics.json", result)
    result["report"] = flat_report(metrics["report"])  # the numbers that aggregate across members
    plots.wait(folder)
    if spec.evaluation.save_models:
        save_model(model, folder / "model.keras")
        write_preprocessing(folder, to_document(data.preprocessing, data.task, data.class_names, data.positive_class, data.raw_input_unsupported))
    return result


def flat_report(report: dict[str, Any] | None) -> dict[str, float] | None:
    """balanced_accuracy and precision/recall/f1 per class as flat names (f1.spam), for aggregation."""
    if report is None:
        return None
    flat = {"balanced_accuracy": report["balanced_accuracy"]}
    for name, row in report["per_class"].items():
        flat.update({f"{key}.{name}": row[key] for key in ("precision", "recall", "f1")})
    return flat


def aggregate_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, std and 95% CI of every metric over the members; top-level train/test hold the means."""
    from kexp.aggregate import aggregate_members

    aggregate = aggregate_members(results, parts=("train", "validation", "test", "report"))
    means = {part: {name: summary["mean"] for name, summary in metrics.items()} for part, metrics in aggregate.items()}
    members = [{key: r.get(key) for key in ("name", "seed", "train", "validation", "test", "report", "epochs_completed")} for r in results]
    return {
        **{part: means.get(part) for part in ("train", "validation", "test")},
        "report": means.get("report"),
        "aggregate": aggregate,
        "members": members,
        "epochs_completed": sum(r["epochs_completed"] for r in results),
        "fit_seconds": sum(r["fit_seconds"] for r in results),
    }


def prepare_splits(data: Dataset, loss: str) -> dict[str, Any]:
    """train / validation / test as Splits of inputs and targets in the form the loss expects, or None."""
    from kexp import training

    parts = {"train": data.train, "validation": data.validation, "test": data.test}
    return {name: None if part is None else Split(part.x, training.make_targets(part.y, loss, data.num_classes), part.divisor)
            for name, part in parts.items()}


def fit_and_evaluate(model, data: Dataset, loss: str, spec: ExperimentSpec, member, out_dir: Path, emit: Emit,
                     guard: SignalGuard, run: Run, plots: BackgroundPlots, resume: Checkpoint | None = None, model_path: Path | None = None,
                     extra_callbacks: list = ()) -> dict[str, Any]:
    """model.fit with kexp's callbacks (from `resume` on), then the final metrics of every part and a per-class report.

    Stopped by anything, it first keeps its last whole epoch as a checkpoint (see keep_on_stop).
    """
    import keras

    from kexp import training
    from kexp.checkpoint import restore

    splits = prepare_splits(data, loss)
    train, validation = splits["train"], splits["validation"]
    steps = training.steps(len(train), spec.train.batch_size)
    first_epoch = resume.epoch if resume is not None else 0
    seed = member.seed

    def on_checkpoint(c):
        path = str(c.path.relative_to(run.path))
        run.progress(checkpoint={"epoch": c.epoch, "path": path})
        emit("checkpoint", epoch=c.epoch, path=path, member=member.name)
    callbacks = training.make_callbacks(out_dir, spec.train, steps, emit, resume, on_checkpoint, member.name)
    history, checkpointer = callbacks[0], callbacks[-1]
    status = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: run.progress(force=False, epoch=epoch + 1))
    timing: dict[str, float | None] = {"startup_seconds": None}

    def first_batch(batch, logs):  # process start to the first batch: what a user waits before training starts
        if timing["startup_seconds"] is None:
            timing["startup_seconds"] = process_age_seconds()
    started = keras.callbacks.LambdaCallback(on_train_batch_begin=first_batch)
    try:
        if resume is not None and resume.state.get("fit_done"):
            restore(model, resume)  # fit had finished: only the evaluation is left
        else:
            batches, steps_per_epoch = training.training_feed(model, train, spec.train.batch_size, spec.train.shuffle, seed, first_epoch)
            model.fit(
                batches,
                steps_per_epoch=steps_per_epoch,
                validation_data=None if validation is None else training.feed(validation, training.evaluation_batch_size(spec.train.batch_size)),
                epochs=spec.train.epochs,
                initial_epoch=first_epoch,
                shuffle=False,  # the feed shuffles, seeded, each epoch
                class_weight=training.class_weights(data.train.y, data.num_classes) if spec.train.class_weight else None,
                callbacks=[started, guard.keras_callback(), *extra_callbacks, *callbacks, status],
                verbose=0,
            )
            checkpointer.finish_fit(len(history.epoch_seconds))
        plots.draw(out_dir)  # history.json is final: the curves are drawn while the model is scored
        guard.raise_if_pending()
        clock = time.perf_counter()
        scored = {name: split for name, split in splits.items() if name != "train" or needs_train_pass(spec, splits)}
        part = training.report_part(splits) if data.task == "classification" else None  # always among the scored
        results, outputs = training.evaluate_splits(model, scored, spec.train.batch_size, guard.raise_if_pending, keep=part)
        overflow = training.diverged_parts(results)
        if overflow is not None:  # the final model's predictions overflow: no score of it means anything
            raise Diverged(f"the trained model diverged: {overflow}; lower train.optimizer.learning_rate or scale the data")
        if "train" not in scored:
            results["train"] = last_epoch_metrics(history.history)
        report = training.class_report(data, part, outputs) if part is not None else None
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the stop is reported either way
            history.write()
        keep_on_stop(exc, checkpointer, model, model_path)
        raise
    timing["evaluate_seconds"] = time.perf_counter() - clock
    emit("evaluation", member=member.name, metrics={name: value for name, value in results.items() if value is not None})
    return {**results, "report": report, "epochs_completed": len(history.epoch_seconds), "fit_seconds": checkpointer.latest.state["fit_seconds"],
            "train_metrics_from": "evaluation" if "train" in scored else "last_epoch", "timing": timing}


def needs_train_pass(spec: ExperimentSpec, splits: dict[str, Any]) -> bool:
    """Whether the final model is scored on its training rows by a pass of its own.

    Only where that is the score (protocol train), there is no test part, or early stopping
    went back to an earlier epoch's weights; otherwise the train metrics are the last epoch's,
    as Keras logged them, and a whole extra pass over the training data is saved (for the
    MNIST CNN on a CPU, a third of an epoch).
    """
    rewound = spec.train.early_stopping is not None and spec.train.early_stopping.restore_best_weights
    return spec.evaluation.protocol == "train" or splits.get("test") is None or rewound


def last_epoch_metrics(history: dict[str, list[float]]) -> dict[str, float]:
    """The training metrics of the last epoch (running means over its batches, dropout on)."""
    return {name: values[-1] for name, values in history.items() if not name.startswith("val_") and values}


def keep_on_stop(exc: BaseException, checkpointer, model, model_path: Path | None) -> None:
    """Save the last whole epoch as a checkpoint (a diverged run's last good one); an interrupted
    single run also gets model.keras at that epoch, for `kexp evaluate`. The outcome goes in the status."""
    from kexp.checkpoint import restore

    latest = checkpointer.latest
    try:
        path = checkpointer.write()
        if path is not None and model_path is not None and isinstance(exc, (Interrupted, KeyboardInterrupt)):
            restore(model, latest)
            save_model(model, model_path)
        note = f"; checkpoint saved after epoch {latest.epoch}" if path is not None else "; no epoch had finished, so there was nothing to save"
    except Exception as problem:  # the stop is reported either way; this says what was kept
        note = f"; the checkpoint could not be saved ({type(problem).__name__}: {problem})"
    with contextlib.suppress(AttributeError):
        exc.kexp_checkpoint = note


def current_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers may run as a uid with no passwd entry
        return None


REPRODUCIBILITY_VARIABLES = ("TF_ENABLE_ONEDNN_OPTS", "TF_DETERMINISTIC_OPS", "TF_CUDNN_DETERMINISTIC", "CUDA_VISIBLE_DEVICES",
                             "PYTHONHASHSEED", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "KERAS_BACKEND",
                             "XLA_FLAGS")


def environment(device, seed: int, data_dir: Path) -> dict[str, Any]:
    import keras
    import numpy
    import tensorflow as tf

    from kexp import training

    return {
        "kexp": kexp.__version__,
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "user": current_user(),
        "device": device.name,
        "devices": device.devices,  # the devices the model ran on (replicas under device: all)
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "cpu_count": os.cpu_count(),
        "threads": training.thread_settings(),
        "machine": platform.machine(),
        # settings that change numbers or placement, as they were for this run
        "environment_variables": {k: v for k, v in os.environ.items() if k in REPRODUCIBILITY_VARIABLES},
        "seed": seed,
        "data_dir": str(data_dir.resolve()),
        "argv": sys.argv,
    }


def write_run_start(run_dir: Path, spec: ExperimentSpec, data: Dataset, device, model, data_dir: Path, started: str,
                    with_preprocessing: bool = True) -> None:
    header = f"# Resolved spec of run {run_dir.name} (kexp {kexp.__version__}). Repeat it with: kexp train {run_dir / 'config.yaml'}\n"
    write_text_atomic(run_dir / "config.yaml", header + spec.to_yaml())
    # the data's fingerprint and the spec go in at the start: an interrupted run can be checked and resumed
    speed = {"steps_per_execution": model.kexp_steps_per_execution, "loop": model.kexp_loop,
             "xla_flags": model.kexp_xla_flags, "jit_compile": spec.train.jit_compile,
             "precision": spec.train.precision}
    env = {**environment(device, spec.seed, data_dir), **speed, "deterministic": spec.train.deterministic,
           "spec": spec.model_dump(mode="json"), "data_files": data.summary.get("files", []), "started": started, "ended": None}
    write_json(run_dir / "env.json", env)
    if with_preprocessing:  # folds and repeats each fit their own (kept with save_models)
        write_preprocessing(run_dir, to_document(data.preprocessing, data.task, data.class_names, data.positive_class, data.raw_input_unsupported))


def save_model(model, path: Path) -> None:
    """Save beside the target, fsync, rename: a kill or power loss mid-save never leaves half a model.keras."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    try:
        model.save(tmp)
        replace_durably(tmp, path)
    except OSError as exc:  # a full disk or quota: no half-written temp file left, and the file named
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _set_env_end(run_dir: Path) -> None:
    from kexp.run.records import read_json

    env = read_json(run_dir / "env.json")
    env["ended"] = now_iso()
    write_json(run_dir / "env.json", env)


def finish_run(run: Run, model, metrics: dict[str, Any], plots: BackgroundPlots) -> None:
    """The run's last files, then `completed`; a run of several members (model None) keeps no single model."""
    pause_for_tests("finish")
    if model is not None:
        save_model(model, run.path / "model.keras")
    write_json(run.path / "metrics.json", metrics)
    if (run.path / "history.json").exists():
        plots.wait(run.path)
    _set_env_end(run.path)
    run.complete()
