"""SIGTERM (schedulers, preemption) and Ctrl-C become `Interrupted`, so the run is recorded.

Raising from a signal handler in the middle of a TensorFlow step can leave the step
half-done and deadlock the next one. So while Keras is fitting or evaluating, a signal
only marks the run as stopping, and a callback raises at the next batch boundary;
anywhere else (loading data, building the model) it raises at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from kexp.errors import Interrupted

HANDLED = (signal.SIGTERM, signal.SIGINT)


class SignalGuard:
    def __init__(self) -> None:
        self.deferring = False
        self.pending: signal.Signals | None = None

    def handle(self, signum: int, frame) -> None:
        received = signal.Signals(signum)
        if self.deferring:
            self.pending = self.pending or received
            return
        raise Interrupted(received.name, 128 + received)

    def raise_if_pending(self) -> None:
        if self.pending is not None:
            raise Interrupted(self.pending.name, 128 + self.pending)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block signals wait for raise_if_pending (called from a Keras callback)."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        self.raise_if_pending()

    def keras_callback(self):
        import keras

        guard = self

        class StopOnSignal(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                guard.raise_if_pending()

            def on_test_batch_end(self, batch, logs=None):
                guard.raise_if_pending()

        return StopOnSignal()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[SignalGuard]:
    """Install the handlers for the duration of a run (main thread only: Python allows no other)."""
    guard = SignalGuard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = {s: signal.signal(s, guard.handle) for s in HANDLED}
    try:
        yield guard
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
