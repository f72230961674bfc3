"""One member's fit and score: model.fit with kexp's callbacks, then the final model scored on every part.

    outcome = fit_member(session, job)   # fit (from job.resume on) -> curves -> score -> FitOutcome

Stopped by anything, it first keeps its last whole epoch as a checkpoint (keep_on_stop).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexp.datasets.base import Dataset, Split
from kexp.errors import Diverged, Interrupted
from kexp.run.lifecycle import process_age_seconds
from kexp.spec import ExperimentSpec
from kexp.train.checkpoint import Checkpoint, restore
from kexp.train.compile import class_weights, make_targets
from kexp.train.distributed import agreed_signal, localize, lost_peer, write_weights_digest
from kexp.train.feeds import feed, steps
from kexp.train.image_feeds import named_decode_errors
from kexp.train.loop import training_feed
from kexp.train.record import save_model
from kexp.train.scoring import class_report, diverged_parts, evaluate_splits, evaluation_batch_size, last_epoch_metrics, needs_train_pass, report_part
from kexp.train.session import FitOutcome, MemberJob, Session


@dataclass(frozen=True)
class Scores:
    """The final model's metrics per part, its per-class report, and where the train metrics came from."""

    parts: dict[str, dict[str, float] | None]
    report: dict[str, Any] | None
    train_metrics_from: str


def fit_member(session: Session, job: MemberJob) -> FitOutcome:
    """model.fit with kexp's callbacks (from job.resume on), then the final metrics of every part and a per-class report."""
    splits = prepare_splits(job.data, session.prepared.loss)
    callbacks = fit_callbacks(session, job, steps(len(splits["train"]), session.spec.train.batch_size, session.device.processes > 1))
    try:
        with named_decode_errors(splits):
            run_fit_together(session, job, splits, callbacks)
            if session.device.processes > 1:  # scored by each process on its own, whole, with no more collectives
                localize(job.compiled.model)
                write_weights_digest(job.compiled.model, session.device.process_index)
            session.plots.draw(job.folder)  # history.json is final: the curves are drawn while the model is scored
            session.guard.raise_if_pending()
            clock = time.perf_counter()
            scores = score_member(session, job, splits, callbacks.history.history)
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the stop is reported either way
            callbacks.history.write()
        keep_on_stop(exc, callbacks.checkpointer, job.compiled.model, job.model_path)
        raise
    evaluate_seconds = time.perf_counter() - clock
    session.emit("evaluation", member=job.member.name, metrics={name: value for name, value in scores.parts.items() if value is not None})
    return FitOutcome(scores.parts, scores.report, len(callbacks.history.epoch_seconds), callbacks.checkpointer.latest.state["fit_seconds"],
                      scores.train_metrics_from, callbacks.first_batch.seconds, evaluate_seconds)


def prepare_splits(data: Dataset, loss: str) -> dict[str, Any]:
    """train / validation / test as Splits of inputs and targets in the form the loss expects, or None."""
    parts = {"train": data.train, "validation": data.validation, "test": data.test}
    return {name: None if part is None else Split(part.x, make_targets(part.y, loss, data.num_classes), part.divisor)
            for name, part in parts.items()}


def fit_callbacks(session: Session, job: MemberJob, steps_per_epoch: int):
    """kexp's callbacks for this member's fit (kexp.train.callbacks.FitCallbacks), history and early stopping continued from job.resume."""
    from kexp.train import callbacks as cb

    train, member = session.spec.train, job.member.name
    history = cb.HistoryFile(job.folder, train.epochs, job.resume)
    early_stopping = cb.make_early_stopping(train.early_stopping)

    def on_checkpoint(checkpoint: Checkpoint) -> None:
        path = str(checkpoint.path.relative_to(session.run.path))
        session.run.progress(checkpoint={"epoch": checkpoint.epoch, "path": path})
        session.emit("checkpoint", epoch=checkpoint.epoch, path=path, member=member)

    return cb.FitCallbacks(
        first_batch=cb.FirstBatchClock(process_age_seconds),
        stop_on_signal=cb.StopOnSignal(session.guard, per_batch=session.device.processes == 1),
        agreed_stop=cb.AgreedStop(session.guard, agreed_signal) if session.device.processes > 1 else None,
        tracking=tracking_callbacks(session.spec, job.folder, session.tracker, member),
        history=history,
        nan_guard=cb.NanGuard(),
        progress=cb.Progress(train.epochs, steps_per_epoch, session.emit, member),
        early_stopping=early_stopping,
        checkpointer=cb.Checkpointer(job.folder, train.checkpoint_every, history, early_stopping, job.resume, on_checkpoint),
        status=cb.EpochStatus(session.run.progress),
    )


def tracking_callbacks(spec: ExperimentSpec, folder: Path, tracker, member: str | None) -> list:
    """TensorBoard's and MLflow's Keras callbacks, as the spec asks."""
    from kexp.tracking import tensorboard_callback
    from kexp.train.callbacks import MlflowEpochs

    callbacks = [tensorboard_callback(folder, spec.train.tensorboard)] if spec.train.tensorboard is not None else []
    return callbacks + ([MlflowEpochs(tracker, member)] if tracker is not None else [])


def run_fit_together(session: Session, job: MemberJob, splits: dict[str, Any], callbacks) -> None:
    """run_fit; over several processes, a collective broken by a process that died is PeerLost (one line), not JAX's traceback."""
    try:
        run_fit(session, job, splits, callbacks)
    except Exception as exc:
        lost = lost_peer(exc) if session.device.processes > 1 else None
        if lost is None:
            raise
        raise lost from None


def run_fit(session: Session, job: MemberJob, splits: dict[str, Any], callbacks) -> None:
    """model.fit from the resume point to train.epochs; a fit an earlier attempt finished only has its state put back."""
    model, train, resume = job.compiled.model, session.spec.train, job.resume
    if resume is not None and resume.state.get("fit_done"):
        restore(model, resume)  # fit had finished: only the evaluation is left
        return
    first_epoch = resume.epoch if resume is not None else 0
    whole = session.device.processes > 1  # each process takes the same steps: short last batches are left out
    batches, steps_per_epoch = training_feed(model, splits["train"], job.compiled.plan, train, job.member.seed, first_epoch, whole)
    validation = splits["validation"]
    model.fit(
        batches,
        steps_per_epoch=steps_per_epoch,
        validation_data=None if validation is None else feed(validation, evaluation_batch_size(train.batch_size), whole_batches=whole),
        epochs=train.epochs,
        initial_epoch=first_epoch,
        shuffle=False,  # the feed shuffles, seeded, each epoch
        class_weight=class_weights(job.data.train.y, job.data.num_classes) if train.class_weight else None,
        callbacks=callbacks.in_order(),
        verbose=0,
    )
    callbacks.checkpointer.finish_fit(len(callbacks.history.epoch_seconds))


def score_member(session: Session, job: MemberJob, splits: dict[str, Any], history: dict[str, list[float]]) -> Scores:
    """The final model's metrics on each scored part and the classification report; a model whose outputs overflow is Diverged."""
    spec, data = session.spec, job.data
    scored = {name: split for name, split in splits.items() if name != "train" or needs_train_pass(spec, splits)}
    part = report_part(splits) if data.task == "classification" else None  # always among the scored
    results, outputs = evaluate_splits(job.compiled.model, scored, spec.train.batch_size, session.guard.raise_if_pending, keep=part)
    overflow = diverged_parts(results)
    if overflow is not None:  # the final model's predictions overflow: no score of it means anything
        raise Diverged(f"the trained model diverged: {overflow}; lower train.optimizer.learning_rate or scale the data")
    if "train" not in scored:
        results["train"] = last_epoch_metrics(history)
    report = class_report(data, part, outputs) if part is not None else None
    return Scores(results, report, "evaluation" if "train" in scored else "last_epoch")


def keep_on_stop(exc: BaseException, checkpointer, model, model_path: Path | None) -> None:
    """Save the last whole epoch as a checkpoint (a diverged run's last good one); an interrupted
    single run also gets model.keras at that epoch, for `kexp evaluate`. The outcome goes in the status."""
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
