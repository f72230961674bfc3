import os
import signal
import subprocess
import sys
import textwrap

import pytest

from kexp.errors import Interrupted
from kexp.train.signals import SignalGuard, stop_on_signals


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGUSR1, 138)])
def test_signal_before_the_run_exists_raises_at_once_with_exit_code(sig, code):
    before = signal.getsignal(sig)  # SIG_IGN for SIGINT when pytest runs as a background job
    with pytest.raises(Interrupted) as info, stop_on_signals():
        os.kill(os.getpid(), sig)
    assert info.value.signal_name == sig.name and info.value.exit_code == code
    assert signal.getsignal(sig) == before  # handlers restored


def test_signal_during_a_run_waits_for_the_next_batch_boundary(capsys):
    guard = SignalGuard()
    with guard.deferred():
        guard.handle(signal.SIGINT, None)  # arrives mid-step: only recorded
        guard.handle(signal.SIGTERM, None)  # the second is refused, not acted on
        with pytest.raises(Interrupted) as info:
            guard.raise_if_pending()  # what the Keras callback does after each batch
    assert info.value.signal_name == "SIGINT" and info.value.exit_code == 130
    err = capsys.readouterr().err
    assert "stopping after the current batch and saving a checkpoint" in err and "already stopping" in err


def test_no_signal_no_interruption():
    guard = SignalGuard()
    with guard.deferred():
        guard.raise_if_pending()
    assert guard.pending is None


def test_third_signal_exits_at_once_after_recording_it(tmp_path):
    """The third signal does not wait for a save: on_abandon runs with the first signal, whose exit code it is."""
    script = textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        from kexp.train.signals import stop_on_signals
        with stop_on_signals() as guard, guard.deferred():
            guard.on_abandon = lambda sig: Path({str(tmp_path / 'abandoned')!r}).write_text(sig.name)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGINT):
                os.kill(os.getpid(), sig)
                time.sleep(0.05)
            time.sleep(5)  # a long save: the third signal must not wait for it
        print("not reached")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 143
    assert "not reached" not in done.stdout
    assert (tmp_path / "abandoned").read_text() == "SIGTERM"
    assert "quitting at once" in done.stderr
