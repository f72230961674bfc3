import os
import signal

import pytest

from kexp.errors import Interrupted
from kexp.signals import SignalGuard, stop_on_signals


def test_signal_outside_training_raises_at_once_with_exit_code():
    with pytest.raises(Interrupted) as info, stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.signal_name == "SIGTERM" and info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_signal_during_fit_waits_for_the_next_batch_boundary():
    guard = SignalGuard()
    with pytest.raises(Interrupted) as info, guard.deferred():
        guard.handle(signal.SIGINT, None)  # arrives mid-step: only recorded
        guard.handle(signal.SIGTERM, None)  # the first signal is the one reported
        with pytest.raises(Interrupted):
            guard.raise_if_pending()  # what the Keras callback does after each batch
    assert info.value.signal_name == "SIGINT" and info.value.exit_code == 130


def test_no_signal_no_interruption():
    guard = SignalGuard()
    with guard.deferred():
        guard.raise_if_pending()
    assert guard.pending is None
