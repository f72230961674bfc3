"""`kexp sweep --backend ray`: each trial is a Ray task that runs the trial's `python -m kexp`
command (the same one the local backend runs) on whichever node has the resources.

Ray places and retries nothing here: the sweep driver keeps `--parallel` tasks in flight and
reads each trial's outcome from its run directory, exactly as locally. So every node must see
the sweep directory and the data directory at the same absolute paths (a shared filesystem:
NFS, Lustre, a bucket mounted alike), and have kexp installed in the same Python at the same
path. Without a shared filesystem a trial writes its run directory on the worker's own disk:
the driver finds no status.json there and records the trial as failed, with the worker's
message in logs/<id>.txt if that file is shared, else nothing. kexp makes the data and sweep
paths absolute before submitting, so relative paths never resolve against a worker's cwd.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

from kexp.errors import KexpError


def run_trial_process(command: list[str], env: dict[str, str], log: str) -> int:
    """On the worker: the trial as a child process; a cancelled task passes SIGTERM on, so the trial checkpoints."""
    import ray

    with open(log, "a", encoding="utf-8") as out:
        out.write(f"kexp sweep: Ray task on node {ray.util.get_node_ip_address()} (worker pid {os.getpid()})\n")
        out.flush()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
        try:
            return proc.wait()
        except KeyboardInterrupt:  # ray.cancel() raises this in the task
            proc.send_signal(signal.SIGTERM)
            return proc.wait()


class RayBackend:
    """The LocalBackend interface (launch, poll, stop, close) over Ray tasks."""

    def __init__(self, address: str | None, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0) -> None:
        try:
            import ray
        except ImportError:
            raise KexpError("--backend ray needs Ray: pip install 'kexp[ray]' (or pip install ray)") from None
        self.ray = ray
        self.started_here = not ray.is_initialized()
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise KexpError(f"cannot reach the Ray cluster at {address or 'a new local instance'}: {' '.join(str(exc).split())}") from None
        self.task = ray.remote(run_trial_process).options(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=0)
        self.cpus_per_trial = cpus_per_trial

    def launch(self, command: list[str], env: dict[str, str], log: Path):
        threads = str(max(1, int(self.cpus_per_trial)))
        budget = {"TF_NUM_INTRAOP_THREADS": threads, "OMP_NUM_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1"}
        return self.task.remote(command, {**budget, **env}, str(log))

    def poll(self, ref) -> int | None:
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            return None
        try:
            return int(self.ray.get(ref))
        except self.ray.exceptions.TaskCancelledError:
            return 143
        except self.ray.exceptions.RayError:
            return 1  # the worker died: the trial's own status.json says how far it got

    def process(self, ref) -> None:
        return None  # on some node of the cluster: its status.json, once written, tells

    def stop(self, ref) -> None:
        self.ray.cancel(ref)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
