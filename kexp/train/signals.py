"""SIGTERM and SIGUSR1 (schedulers, preemption) and Ctrl-C become `Interrupted`, so the run is recorded.

Raising from a signal handler in the middle of a TensorFlow step can leave the step
half-done and deadlock the next one, and raising in the middle of a checkpoint write
would lose it. So once a run directory exists a signal only marks the run as stopping:
a Keras callback (kexp.train.callbacks.StopOnSignal) raises at the next batch boundary (the end of the current TensorFlow
call, i.e. of `steps_per_execution` batches, or of an epoch with train.loop xla), and the
run saves its checkpoint before exiting. Before that (loading data, building the model) it
raises at once.

Schedulers send SIGTERM and SIGKILL ~30 s later; people press Ctrl-C again when a save
looks slow. A second signal is refused with a message (the save is completing); a third
exits at once, after `on_abandon` has written a truthful status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from kexp.errors import Interrupted

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class SignalGuard:
    def __init__(self) -> None:
        self.deferring = False
        self.pending: signal.Signals | None = None
        self.received = 0
        # Called (from the handler) with the first signal before a third one exits at once.
        self.on_abandon: Callable[[signal.Signals], None] | None = None

    def handle(self, signum: int, frame) -> None:
        received = signal.Signals(signum)
        self.received += 1
        if not self.deferring:
            raise Interrupted(received.name, 128 + received)
        if self.pending is None:
            self.pending = received
            say(f"{received.name}: stopping after the current batch and saving a checkpoint (a third signal quits at once, without saving)")
        elif self.received == 2:
            say(f"{received.name}: already stopping; the checkpoint is being saved. Send one more to quit at once without it")
        else:
            with contextlib.suppress(Exception):
                if self.on_abandon is not None:
                    self.on_abandon(self.pending)  # the exit code is the first signal's
            say(f"{received.name}: quitting at once; the last checkpoint on disk is kept")
            os._exit(128 + self.pending)

    def reinstall(self) -> None:
        """Handle the signals again (in the main thread) after a library replaced the handlers with its own."""
        if threading.current_thread() is threading.main_thread():
            for s in HANDLED:
                signal.signal(s, self.handle)

    def raise_if_pending(self) -> None:
        if self.pending is not None:
            raise Interrupted(self.pending.name, 128 + self.pending)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block signals only wait for raise_if_pending (called from a Keras callback)."""
        outer, self.deferring = self.deferring, True
        try:
            yield
        finally:
            self.deferring = outer


def say(message: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(f"kexp: {message}\n")
        sys.stderr.flush()


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
