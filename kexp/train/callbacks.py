"""kexp's Keras callbacks, one class each, and FitCallbacks: the set a fit uses, in the order Keras runs them.

Imports Keras at its own import: import this module only after kexp.train.runtime.start_tensorflow.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from kexp.errors import Diverged, Interrupted
from kexp.run.records import has_history, write_history
from kexp.train.checkpoint import AUTO_SECONDS, Checkpoint, capture, restore, write_checkpoint
from kexp.train.scoring import plain

# history.json is rewritten after an epoch at most this often (see HistoryFile); a sweep whose
# pruner reads every epoch sets KEXP_HISTORY_SECONDS=0
HISTORY_SECONDS = float(os.environ.get("KEXP_HISTORY_SECONDS", "0.5"))


class HistoryFile(keras.callbacks.Callback):
    """history.json holds one value per finished epoch, rewritten atomically after an epoch:
    every epoch that ends HISTORY_SECONDS or more after the last write, the first and the
    last, and on a stop (write). Each write is two fsyncs, 1.6 ms here; Pima's epochs take 3.

    `resume` (a Checkpoint) continues the history where it ended.
    """

    def __init__(self, folder: Path, epochs: int, resume: Checkpoint | None = None):
        super().__init__()
        self.folder, self.epochs = folder, epochs
        previous = resume.state if resume is not None and resume.arrays else {}
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (previous.get("history") or {}).items()}
        self.epoch_seconds: list[float] = list(previous.get("epoch_seconds") or [])
        self._written = (len(self.epoch_seconds), -math.inf)  # (epochs, when)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        for key, value in plain(logs).items():
            self.history.setdefault(key, []).append(value)
        self.epoch_seconds.append(time.perf_counter() - self._start)
        if time.perf_counter() - self._written[1] >= HISTORY_SECONDS or epoch + 1 >= self.epochs:
            self.write()

    def on_train_end(self, logs=None):
        self.write()

    def write(self) -> None:
        """history.json with every finished epoch (nothing to do when it has them already)."""
        if self._written[0] != len(self.epoch_seconds) or not has_history(self.folder):
            write_history(self.folder, self.epoch_seconds, self.history)
        self._written = (len(self.epoch_seconds), time.perf_counter())


class NanGuard(keras.callbacks.Callback):
    """Stop as `diverged` when the loss stops being a number (checked per epoch: no per-batch sync).

    It raises before the Checkpointer sees the epoch, so the last checkpoint stays a good one.
    """

    def on_epoch_end(self, epoch, logs=None):
        logs = plain(logs)
        for key in ("loss", "val_loss"):  # an overflowing validation loss is divergence too, however the training loss looks
            loss = logs.get(key)
            if loss is not None and not math.isfinite(loss):
                what = "loss" if key == "loss" else "validation loss"
                raise Diverged(f"{what} became {loss} in epoch {epoch + 1}; lower train.optimizer.learning_rate or check the data")


class Progress(keras.callbacks.Callback):
    """Events for displays: train_started, batch (at most ten a second) and epoch_end with its metrics."""

    def __init__(self, epochs: int, steps_per_epoch: int, emit, member: str | None = None):
        super().__init__()
        self.epochs, self.steps_per_epoch, self.emit, self.member = epochs, steps_per_epoch, emit, member

    def on_train_begin(self, logs=None):
        self._shown = 0.0
        self.emit("train_started", epochs=self.epochs, steps_per_epoch=self.steps_per_epoch, member=self.member)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        # reading logs waits for the device, so not after every batch
        if time.perf_counter() - self._shown > 0.1:
            self._shown = time.perf_counter()
            self.emit("batch", step=batch + 1, steps=self.steps_per_epoch, metrics=plain(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.emit("epoch_end", epoch=epoch + 1, epochs=self.epochs, seconds=round(time.perf_counter() - self._start, 3),
                  metrics=plain(logs), member=self.member)


class Checkpointer(keras.callbacks.Callback):
    """Captures the state after every epoch (kexp.train.checkpoint) and writes it when due.

    `history` is the HistoryFile (history so far), `early_stopping` Keras' callback or None;
    `on_write(checkpoint)` tells the run's status. Runs after both (FitCallbacks keeps the order).
    """

    def __init__(self, folder: Path, every: int | str, history: HistoryFile, early_stopping, resume: Checkpoint | None,
                 on_write: Callable[[Checkpoint], None]):
        super().__init__()
        self.folder, self.every, self.history, self.early_stopping, self.on_write = folder, every, history, early_stopping, on_write
        self.latest: Checkpoint | None = resume if resume and resume.arrays else None
        self.last_write = time.monotonic()
        self.fit_seconds = float((resume.state if resume else {}).get("fit_seconds", 0.0))

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        if self.latest is not None:
            best = restore(self.model, self.latest)
            if self.early_stopping is not None:
                es = self.latest.state.get("early_stopping") or {}
                self.early_stopping.wait = int(es.get("wait", 0))
                self.early_stopping.best = es.get("best")
                self.early_stopping.best_epoch = int(es.get("best_epoch", 0))
                self.early_stopping.best_weights = best

    def on_epoch_end(self, epoch, logs=None):
        self.latest = self.capture(epoch + 1, fit_done=False)
        every = self.every
        due = every != "auto" and every > 0 and (epoch + 1) % every == 0
        if due or (every == "auto" and time.monotonic() - self.last_write >= AUTO_SECONDS):
            self.write()

    def capture(self, epoch: int, fit_done: bool) -> Checkpoint:
        early_stopping, es = self.early_stopping, None
        if early_stopping is not None:
            es = {"wait": early_stopping.wait, "best": early_stopping.best, "best_epoch": early_stopping.best_epoch}
        state = {"history": self.history.history, "epoch_seconds": self.history.epoch_seconds, "fit_done": fit_done,
                 "fit_seconds": self.fit_seconds + time.perf_counter() - self._start, "early_stopping": es}
        return capture(self.model, epoch, state, early_stopping.best_weights if early_stopping is not None else None)

    def finish_fit(self, epochs: int) -> None:
        """fit returned (early stopping may have put the best weights back): that is the state to keep."""
        self.latest = self.capture(epochs, fit_done=True)

    def write(self) -> Path | None:
        if self.latest is None:
            return None
        path = write_checkpoint(self.folder, self.latest)
        self.last_write = time.monotonic()
        self.on_write(self.latest)
        return path


class StopOnSignal(keras.callbacks.Callback):
    """Raises a pending signal (kexp.train.signals.SignalGuard) at the next batch boundary; not in a fit over
    several processes (per_batch False), where one process stopping alone would leave the others waiting: AgreedStop."""

    def __init__(self, guard, per_batch: bool = True):
        super().__init__()
        self.guard, self.per_batch = guard, per_batch

    def on_train_batch_end(self, batch, logs=None):
        if self.per_batch:
            self.guard.raise_if_pending()

    def on_test_batch_end(self, batch, logs=None):
        if self.per_batch:
            self.guard.raise_if_pending()

    def on_predict_batch_end(self, batch, logs=None):
        self.guard.raise_if_pending()


class AgreedStop(keras.callbacks.Callback):
    """Several processes: a signal any of them received stops all of them at the end of the same epoch
    (`agree(pending)` is one all-gather per epoch, kexp.train.distributed.agreed_signal). Runs last, after
    the Checkpointer has captured that epoch, so the checkpoint process 0 writes on the stop includes it."""

    def __init__(self, guard, agree: Callable):
        super().__init__()
        self.guard, self.agree = guard, agree

    def on_epoch_end(self, epoch, logs=None):
        received = self.agree(self.guard.pending)
        if received is not None:
            raise Interrupted(received.name, 128 + received)


class MlflowEpochs(keras.callbacks.Callback):
    """Logs each epoch's metrics to an MLflow run (kexp.tracking.MlflowRun) at step = epoch number (folds: `fold-1/loss`)."""

    def __init__(self, run, member: str | None = None):
        super().__init__()
        self.run, self.prefix = run, f"{member}/" if member else ""

    def on_epoch_end(self, epoch, logs=None):
        self.run.log_metrics({k: float(v) for k, v in (logs or {}).items()}, epoch + 1, self.prefix)


class FirstBatchClock(keras.callbacks.Callback):
    """`seconds`: what `clock()` said at the first training batch (process start to training, what a user waits)."""

    def __init__(self, clock: Callable[[], float | None]):
        super().__init__()
        self.clock, self.seconds = clock, None

    def on_train_batch_begin(self, batch, logs=None):
        if self.seconds is None:
            self.seconds = self.clock()


class EpochStatus(keras.callbacks.Callback):
    """The run's status follows the epochs: `progress(force=False, epoch=n)` after epoch n (kexp.run.lifecycle.Run.progress)."""

    def __init__(self, progress: Callable[..., None]):
        super().__init__()
        self.progress = progress

    def on_epoch_end(self, epoch, logs=None):
        self.progress(force=False, epoch=epoch + 1)


def make_early_stopping(options) -> keras.callbacks.EarlyStopping | None:
    """Keras' EarlyStopping for train.early_stopping, or None."""
    if not options:
        return None
    return keras.callbacks.EarlyStopping(monitor=options.monitor, patience=options.patience, min_delta=options.min_delta, mode=options.mode,
                                         restore_best_weights=options.restore_best_weights)


@dataclass
class FitCallbacks:
    """The callbacks of one model.fit, by name; in_order() is the list Keras gets (the order matters:
    NanGuard raises before the Checkpointer sees an epoch, which reads HistoryFile and EarlyStopping)."""

    first_batch: FirstBatchClock
    stop_on_signal: StopOnSignal
    history: HistoryFile
    nan_guard: NanGuard
    progress: Progress
    checkpointer: Checkpointer
    status: EpochStatus
    early_stopping: Any = None
    tracking: list = field(default_factory=list)  # TensorBoard's and MLflow's, as the spec asks
    agreed_stop: AgreedStop | None = None  # several processes only

    def in_order(self) -> list:
        early = [self.early_stopping] if self.early_stopping is not None else []
        return [self.first_batch, self.stop_on_signal, *self.tracking, self.history, self.nan_guard, self.progress, *early,
                self.checkpointer, self.status, *([self.agreed_stop] if self.agreed_stop is not None else [])]
