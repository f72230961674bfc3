"""`kexp train --processes N`: N local processes that train one run (backend jax), started and watched here.

    check_processes(spec, count, coordinator)        # one line each, before any data
    outcome = launch(command, count, coordinator, run_dir)
        # process i runs `kexp <command> --coordinator H:P --process-id i --num-processes N`;
        # signals to this process go to all of them (they stop together at an epoch end);
        # one that dies makes the others stop within STOP_SECONDS, and the run is recorded failed

Process 0 owns the run directory; the others' output goes to a log of their own, shown when one fails.
On a cluster the same run is `srun -n N kexp train SPEC` (JAX reads Slurm's variables), with no launcher.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kexp.errors import KexpError
from kexp.spec import ExperimentSpec
from kexp.train.signals import HANDLED

# After one process ended badly, how long the others get to stop on their own (JAX's runtime stops
# a process whose peer is gone after distributed.HEARTBEAT_SECONDS) before they are killed.
STOP_SECONDS = 30.0
# Once process 0 has ended (completed, or refused to start: a held run, changed data), how long the others
# get before they are killed; they write nothing, and one waiting for process 0 would wait minutes.
LEADER_GONE_SECONDS = 5.0


class LaunchError(KexpError):
    """--processes cannot run as asked (backend, protocol, batch size, devices, coordinator port)."""

    exit_code = 2


@dataclass(frozen=True)
class ProcessExit:
    """How one process of the run ended: its index and return code (negative: killed by that signal)."""

    index: int
    returncode: int

    def describe(self) -> str:
        if self.returncode < 0:
            return f"process {self.index} was killed by {signal.Signals(-self.returncode).name}"
        return f"process {self.index} exited with code {self.returncode}"


@dataclass(frozen=True)
class LaunchOutcome:
    """The run's exit code (process 0's, or 1 when the run was recorded failed here) and the first process that ended badly."""

    exit_code: int
    first_failure: ProcessExit | None
    recorded_failure: bool  # process 0 could not record the run's end: this launcher recorded it failed
    worker_error: str | None  # the last line a failed process > 0 wrote


def check_processes(spec: ExperimentSpec, count: int, coordinator: str | None) -> None:
    """What would stop a run over `count` processes, said before any data is read."""
    from kexp.backends import check_installed

    if spec.backend != "jax":
        raise LaunchError(f"--processes {count}: one run over several processes needs backend: jax (Keras 3's distribution API; "
                          "TensorFlow's MultiWorkerMirroredStrategy fails under Keras 3); add --set backend=jax")
    check_installed("jax")
    if spec.evaluation.protocol == "kfold" or spec.seeds:
        raise LaunchError(f"--processes {count} trains one model; {'k-fold' if spec.evaluation.protocol == 'kfold' else 'seeds (repeats)'} "
                          "trains several: run it without --processes")
    if spec.train.batch_size % count:
        raise LaunchError(f"train.batch_size {spec.train.batch_size} is the global batch and cannot be split evenly over {count} processes; "
                          f"use a multiple of {count}")
    available, what = device_budget(spec.device)
    if count > available:
        raise LaunchError(f"--processes {count}: this machine has {available} {what} for device: {spec.device} (one per process)")
    if coordinator is not None:
        check_port_free(coordinator)


def device_budget(device: str) -> tuple[int, str]:
    """How many processes this machine can give a device each: its GPUs (counted without starting a GPU
    runtime, which would take their memory), else its CPU cores."""
    gpus = sorted(p.name for p in Path("/dev").glob("nvidia[0-9]*"))
    if device != "cpu" and gpus:
        return len(gpus), "GPU(s)"
    return os.cpu_count() or 1, "CPU core(s)"


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LaunchError(f"--coordinator {address!r}: give HOST:PORT, e.g. 127.0.0.1:12355")
    return host, int(port)


def check_port_free(address: str) -> None:
    """Process 0 serves JAX's coordinator at this address: a port already in use is refused now, in one line."""
    host, port = split_address(address)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise LaunchError(f"--coordinator {address}: the port is busy or cannot be bound ({exc.strerror}); choose another port") from None


def free_address() -> str:
    """A localhost port no one listens on now, for the coordinator."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def process_command(command: list[str], address: str, index: int, count: int) -> list[str]:
    return [sys.executable, "-m", "kexp", *command, "--coordinator", address, "--process-id", str(index), "--num-processes", str(count)]


def process_env(index: int, device: str) -> dict[str, str]:
    """Process i's environment: with GPUs (and not device: cpu), GPU i alone."""
    env = dict(os.environ)
    if device != "cpu" and device_budget(device)[1] == "GPU(s)":
        env["CUDA_VISIBLE_DEVICES"] = str(index)
    return env


def launch(command: list[str], count: int, device: str, coordinator: str | None, run_dir: Path | None) -> LaunchOutcome:
    """Start the run's `count` processes and wait for all; see the module's docstring."""
    address = coordinator or free_address()
    with tempfile.TemporaryDirectory(prefix="kexp-launch-") as logs:
        processes = [start_process(command, address, i, count, device, Path(logs)) for i in range(count)]
        with forwarded_signals(processes):
            first = supervise(processes)
        error = kexp_error(Path(logs) / f"process-{first.index}.log") if first is not None and first.index else None
    recorded = False
    # process 0 records its own failures, unless it was killed
    if first is not None and run_dir is not None and (first.index or first.returncode < 0):
        from kexp.run.lifecycle import mark_failed_by_peer

        words = f"{first.describe()}{': ' + error if error else ''}; the run's other processes were stopped"
        recorded = mark_failed_by_peer(run_dir, words)
    leader = processes[0].returncode
    code = 1 if recorded else leader if leader >= 0 else 128 - leader
    return LaunchOutcome(code, first, recorded, error)


def start_process(command: list[str], address: str, index: int, count: int, device: str, logs: Path) -> subprocess.Popen:
    """Process 0 writes to this terminal (its stderr through filtered_stderr); the others to logs/process-<i>.log.
    Each in a session of its own, so a Ctrl-C reaches them once, forwarded from here."""
    if index == 0:
        process = subprocess.Popen(process_command(command, address, index, count), env=process_env(index, device), stderr=subprocess.PIPE,
                                   start_new_session=True)
        threading.Thread(target=filtered_stderr, args=(process.stderr,), name="kexp-process-0-stderr", daemon=True).start()
        return process
    with open(logs / f"process-{index}.log", "wb") as output:
        return subprocess.Popen(process_command(command, address, index, count), env=process_env(index, device), stdout=output,
                                stderr=output, start_new_session=True)


# What JAX's runtime writes when it stops a process whose peer is gone: its C++ log lines and a stack
# trace, after kexp's own one-line error (the launcher then says which process died).
RUNTIME_NOISE = re.compile(rb"^(\*\*\* Check failure stack trace|    @ +0x|[EFW]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ |\d+$|The tasks have crashed|\[Gloo\]"
                           rb"|INTERNAL: |UNAVAILABLE: |Barrier result|This suggests that the workers|RPC: /xla|\s*$)")


def filtered_stderr(stream) -> None:
    """Process 0's stderr on this one, less RUNTIME_NOISE."""
    for line in iter(stream.readline, b""):
        if not RUNTIME_NOISE.match(line):
            sys.stderr.buffer.write(line)
            sys.stderr.buffer.flush()


@contextlib.contextmanager
def forwarded_signals(processes: list[subprocess.Popen]):
    """SIGTERM, SIGINT and SIGUSR1 to the launcher go to every process of the run (each stops at the same epoch end)."""
    def forward(signum, frame):
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in HANDLED}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def supervise(processes: list[subprocess.Popen]) -> ProcessExit | None:
    """Wait for every process; after the first that ends badly the rest get STOP_SECONDS, after process 0 ends
    LEADER_GONE_SECONDS, then SIGKILL. The first bad end, or None."""
    first, deadline, leader_gone = None, None, None
    while any(process.poll() is None for process in processes):
        for i, process in enumerate(processes):
            code = process.poll()
            if first is None and code is not None and code != 0:
                first, deadline = ProcessExit(i, code), time.monotonic() + STOP_SECONDS
        if processes[0].poll() is not None and leader_gone is None:  # the others have nothing to save: a few seconds to finish
            leader_gone = time.monotonic()
            deadline = min(deadline or math.inf, leader_gone + LEADER_GONE_SECONDS)
        if deadline is not None and time.monotonic() > deadline:
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        time.sleep(0.1)
    if first is None:  # a process that ended badly in the same poll as the last one
        first = next((ProcessExit(i, p.returncode) for i, p in enumerate(processes) if p.returncode), None)
    return first


def kexp_error(path: Path) -> str | None:
    """The last `kexp: error: …` line a process wrote (what it died of, when kexp knew), else None."""
    with contextlib.suppress(OSError):
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.startswith("kexp: error: ")]
        return lines[-1].removeprefix("kexp: error: ")[:300] if lines else None
    return None
