"""run_experiment: spec -> data -> model -> training -> run directory, in that order."""

from __future__ import annotations

import contextlib
import getpass
import os
import platform
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

import kexp
from kexp.datasets.base import Dataset, class_balance, summarize
from kexp.datasets.pipeline import plan_members, prepare_dataset, read_data
from kexp.preprocessing import to_document
from kexp.errors import Interrupted, ModelError
from kexp.registry import MODELS
from kexp.rundir import check_runs_dir, create_run_dir, now_iso, write_json, write_preprocessing, write_status, write_text_atomic
from kexp.signals import SignalGuard, stop_on_signals
from kexp.spec import ExperimentSpec, check_task


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


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


def run_experiment(spec: ExperimentSpec, data_dir: Path, runs_dir: Path, console: Console | None = None) -> RunResult:
    """Train one experiment and leave a complete run directory; errors before training leave none."""
    with stop_on_signals() as guard:
        return _run(spec, data_dir, runs_dir, console or Console(soft_wrap=True), guard)


def _run(spec: ExperimentSpec, data_dir: Path, runs_dir: Path, console: Console, guard: SignalGuard) -> RunResult:
    from kexp import training

    started, clock = now_iso(), time.perf_counter()
    check_runs_dir(runs_dir)  # before minutes of data loading, not after
    raw = read_data(spec, data_dir)
    check_task(spec, len(raw.class_names), raw.task)
    # every member's split is checked here: one that leaves a part or a class empty is a spec error, before any run directory exists
    members = plan_members(raw, spec)
    data = prepare_dataset(raw, members[0].rows)
    loss = training.resolve_loss(spec.train.loss, data.num_classes, data.task)
    outputs = training.count_outputs(loss, data.num_classes, data.task)
    console.print(f"data: {spec.data.name}  {describe_data(data)}{protocol_note(spec, members)}", highlight=False)
    training.start_tensorflow()
    device = training.select_device(spec.device)
    model = new_model(spec, data, members[0].seed, device, loss, outputs)  # a model that cannot be built leaves no run directory
    run_dir = create_run_dir(runs_dir, spec.name)
    console.print(f"run: {run_dir}  model: {spec.model.name} ({model.count_params():,} parameters)  device: {device}", highlight=False)
    write_run_start(run_dir, spec, data, device, data_dir, started, with_preprocessing=len(members) == 1)
    results = []
    try:
        for i, member in enumerate(members):
            if i:
                data = prepare_dataset(raw, member.rows)  # preprocessing refitted on this member's training rows
                model = new_model(spec, data, member.seed, device, loss, outputs)
            if member.name is not None:
                console.print(f"{member.name} ({i + 1}/{len(members)}): {describe_data(data)}", highlight=False)
            with device_scope(device), guard.deferred():
                metrics = fit_and_evaluate(model, data, loss, spec, member.seed, member_dir(run_dir, spec, member), console, guard.keras_callback())
            results.append(finish_member(run_dir, spec, member, model, data, metrics) if member.name else metrics)
    except BaseException as exc:
        record_stop(run_dir, exc, model if len(members) == 1 else None, started)
        raise
    extra = {"wall_seconds": time.perf_counter() - clock, "loss_function": loss, "num_params": model.count_params(),
             "task": data.task, "positive_class": data.positive_class, "protocol": spec.evaluation.protocol}
    if len(members) == 1:
        metrics = {**results[0], **extra, "data": summarize(data)}
        finish_run(run_dir, model, metrics, started)
    else:
        metrics = {**aggregate_results(results), **extra, "data": summarize(data, sizes=False)}
        finish_run(run_dir, None, metrics, started)
    return RunResult(run_dir, metrics)


def protocol_note(spec: ExperimentSpec, members: list) -> str:
    if spec.evaluation.protocol == "train":
        return "  (scored on its training rows, as the tutorial does: not an estimate for new data)"
    if len(members) > 1:
        return f"  ({len(members)} members: {spec.evaluation.protocol}{', seeds ' + str(spec.member_seeds()) if spec.seeds else ''}; sizes of the first)"
    return ""


def new_model(spec: ExperimentSpec, data: Dataset, seed: int, device: str, loss: str, outputs: int):
    """A freshly initialized, compiled model: the seed is set first, so each member starts from its own seed."""
    from kexp import training

    training.set_seed(seed)
    with device_scope(device):
        model = build_model(spec, data.input_shape, outputs, data.task)
        training.compile_model(model, spec.train, loss, outputs)
    return model


def member_dir(run_dir: Path, spec: ExperimentSpec, member) -> Path:
    """Where a member writes history.json: the run itself, or folds/<i>[-seed-<s>]/ or repeats/<seed>/."""
    if member.name is None:
        return run_dir
    folder = run_dir / ("folds" if spec.evaluation.protocol == "kfold" else "repeats") / member.name.removeprefix("fold-").removeprefix("seed-")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def finish_member(run_dir: Path, spec: ExperimentSpec, member, model, data: Dataset, metrics: dict[str, Any]) -> dict[str, Any]:
    """A fold's or repeat's own files: metrics.json, learning curves and, with save_models, its model and preprocessing."""
    from kexp.plots import plot_history

    folder = member_dir(run_dir, spec, member)
    result = {"name": member.name, "seed": member.seed, **metrics, "data": summarize(data)}
    write_json(folder / "metrics.json", result)
    result["report"] = flat_report(metrics["report"])  # the numbers that aggregate across members
    plot_history(folder)
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
    """train / validation / test as (inputs, targets in the form the loss expects), or None."""
    from kexp import training

    parts = {"train": data.train, "validation": data.validation, "test": data.test}
    return {name: None if part is None else (part.x, training.make_targets(part.y, loss, data.num_classes)) for name, part in parts.items()}


def fit_and_evaluate(model, data: Dataset, loss: str, spec: ExperimentSpec, seed: int, out_dir: Path, console: Console, stop_callback) -> dict[str, Any]:
    """model.fit with kexp's callbacks, then the final metrics of every part and a per-class report."""
    from kexp import training

    splits = prepare_splits(data, loss)
    train, validation = splits["train"], splits["validation"]
    steps = -(-len(train[1]) // spec.train.batch_size)
    fit_start = time.perf_counter()
    history = model.fit(
        **training.batches(*train, spec.train.batch_size, spec.train.shuffle, seed),
        validation_data=None if validation is None else training.validation_batches(*validation, spec.train.batch_size),
        epochs=spec.train.epochs,
        shuffle=spec.train.shuffle,
        class_weight=training.class_weights(data.train.y, data.num_classes) if spec.train.class_weight else None,
        callbacks=[stop_callback, *training.make_callbacks(out_dir, spec.train, steps, console)],
        verbose=0,
    )
    fit_seconds = time.perf_counter() - fit_start
    results = training.evaluate_splits(model, splits, spec.train.batch_size, [stop_callback])
    report = training.class_report(model, data, splits, spec.train.batch_size) if data.task == "classification" else None
    return {**results, "report": report, "epochs_completed": len(history.epoch), "fit_seconds": fit_seconds}


@contextlib.contextmanager
def device_scope(device: str) -> Iterator[None]:
    import tensorflow as tf

    with tf.device(device):
        yield


def current_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers may run as a uid with no passwd entry
        return None


def environment(device: str, seed: int, data_dir: Path) -> dict[str, Any]:
    import keras
    import numpy
    import tensorflow as tf

    return {
        "kexp": kexp.__version__,
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "user": current_user(),
        "device": device,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "seed": seed,
        "data_dir": str(data_dir.resolve()),
        "argv": sys.argv,
    }


def write_run_start(run_dir: Path, spec: ExperimentSpec, data: Dataset, device: str, data_dir: Path, started: str, with_preprocessing: bool = True) -> None:
    header = f"# Resolved spec of run {run_dir.name} (kexp {kexp.__version__}). Repeat it with: kexp train {run_dir / 'config.yaml'}\n"
    write_text_atomic(run_dir / "config.yaml", header + spec.to_yaml())
    write_status(run_dir, "running", started=started)
    # the data's fingerprint goes in at the start, so even an interrupted run can be checked later
    env = {**environment(device, spec.seed, data_dir), "data_files": data.summary.get("files", []), "started": started, "ended": None}
    write_json(run_dir / "env.json", env)
    if with_preprocessing:  # folds and repeats each fit their own (kept with save_models)
        write_preprocessing(run_dir, to_document(data.preprocessing, data.task, data.class_names, data.positive_class, data.raw_input_unsupported))


def record_stop(run_dir: Path, exc: BaseException, model, started: str) -> None:
    """Mark a run that did not complete, keeping the model as it was when it stopped."""
    if isinstance(exc, (Interrupted, KeyboardInterrupt)):
        if model is not None:
            with contextlib.suppress(Exception):
                save_model(model, run_dir / "model.keras")
        signal_name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
        write_status(run_dir, "interrupted", started=started, ended=now_iso(), error=f"interrupted by {signal_name}", signal=signal_name)
    else:
        write_status(run_dir, "failed", started=started, ended=now_iso(), error=f"{type(exc).__name__}: {exc}")
    _set_env_end(run_dir)


def save_model(model, path: Path) -> None:
    """Save beside the target and rename, so a kill mid-save never leaves half a model.keras."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _set_env_end(run_dir: Path) -> None:
    from kexp.rundir import read_json

    env = read_json(run_dir / "env.json")
    env["ended"] = now_iso()
    write_json(run_dir / "env.json", env)


def finish_run(run_dir: Path, model, metrics: dict[str, Any], started: str) -> None:
    """The run's last files, then `completed`; a run of several members (model None) keeps no single model."""
    from kexp.plots import plot_history

    if model is not None:
        save_model(model, run_dir / "model.keras")
    write_json(run_dir / "metrics.json", metrics)
    if (run_dir / "history.json").exists():
        plot_history(run_dir)
    _set_env_end(run_dir)
    write_status(run_dir, "completed", started=started, ended=now_iso())
