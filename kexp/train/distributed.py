"""One run over several processes (backend: jax): who this process is, JAX's distributed runtime,
data parallelism over every process's devices, and the agreements the processes need.

    group = ProcessGroup(count, index, coordinator)   # from the CLI (kexp.train.launch starts them)
    join(group)                                       # before any JAX array exists
    placement = jax_placement(device, group)          # DataParallel over all processes' devices
    ... model.fit: Keras shards each global batch (train.batch_size) over the processes ...
    agreed_signal(pending)                            # at each epoch end: a signal to one stops all
    localize(model)                                   # after the fit: scored by one process alone

Process 0 (the leader) owns the run directory; the others train in a scratch directory of their
own (kexp.train.experiment.run_worker). Keras' DataParallel takes every process's share of a
batch from the same tf.data feed (rebatch, then shard), so each process reads all the data.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kexp.errors import DeviceError, PeerLost, repeats_once

# A process that stops sending heartbeats (killed, or its machine gone) makes JAX's runtime stop
# the others after this long, instead of its default 100 s; kexp.train.launch then records the run.
HEARTBEAT_SECONDS = 10


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in one run: `index` of `count`; the coordinator is process 0's host:port
    (None under Slurm, where JAX reads srun's variables itself)."""

    count: int = 1
    index: int = 0
    coordinator: str | None = None

    @property
    def multi(self) -> bool:
        return self.count > 1

    @property
    def leader(self) -> bool:
        return self.index == 0


SINGLE = ProcessGroup()


_joined: list[ProcessGroup] = []  # JAX's runtime is one per process: the group this process joined, if any


def joined() -> bool:
    return bool(_joined)


def join(group: ProcessGroup) -> None:
    """Start JAX's distributed runtime for this process (every process of the group calls it; it waits for all)."""
    import jax

    from kexp.train.runtime import quiet_native_stderr

    with quiet_native_stderr():  # Gloo's "Rank 0 is connected to 1 peer ranks"
        jax.distributed.initialize(coordinator_address=group.coordinator, num_processes=group.count, process_id=group.index,
                                   heartbeat_timeout_seconds=HEARTBEAT_SECONDS)
    _joined.append(group)


def device_name(device) -> str:
    """'cpu:0', 'gpu:1': a JAX device as keras.device and env.json name it."""
    return f"{device.platform}:{device.id}"


def jax_devices(platform: str | None = None) -> list:
    import jax

    try:
        return jax.devices(platform)
    except RuntimeError:  # "Unknown backend: 'gpu' requested": no GPU, or JAX without CUDA
        return []


def jax_placement(device: str, group: ProcessGroup):
    """The Placement for `auto|cpu|gpu|gpu:N|all` under JAX: one device, or Keras' DataParallel over
    every local device (device: all) or every device of every process (several processes)."""
    import jax
    import keras

    from kexp.train.runtime import Placement

    if device == "all" or group.multi:
        devices = jax_devices("cpu" if device == "cpu" else None)
        placement = Placement([device_name(d) for d in devices], keras.distribution.DataParallel(devices=devices), backend="jax",
                              processes=group.count, process_index=group.index)
        if group.multi:
            from kexp.train.runtime import quiet_native_stderr

            with quiet_native_stderr():  # the first collective: Gloo's "Rank 0 is connected to 1 peer ranks"
                placement.hosts = process_facts()
        return placement
    if device == "cpu" or (device == "auto" and not jax_devices("gpu")):
        return Placement([device_name(jax_devices("cpu")[0])], backend="jax")
    gpus = jax_devices("gpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= len(gpus):
        seen = f"sees {len(gpus)} GPU(s)" if gpus else "sees no GPU (is jax[cuda12] installed, and a driver?)"
        raise DeviceError(f"device '{device}' was requested but JAX {jax.__version__} {seen}; use device: cpu or auto")
    return Placement([device_name(gpus[index])], backend="jax")


def agreed_signal(pending: signal.Signals | None) -> signal.Signals | None:
    """The first signal any process of the run has received (every process calls this at the same point:
    it is one all-gather), or None; so all stop at the same epoch end."""
    from jax.experimental import multihost_utils

    codes = np.asarray(multihost_utils.process_allgather(np.array([int(pending or 0)], np.int32))).reshape(-1)
    received = [int(code) for code in codes if code]
    return signal.Signals(received[0]) if received else None


def process_facts() -> list[dict]:
    """Each process's host and devices, gathered from all (each knows only its own host name)."""
    import jax
    from jax.experimental import multihost_utils

    name = np.zeros(64, np.uint8)
    raw = socket.gethostname().encode()[:64]
    name[: len(raw)] = np.frombuffer(raw, np.uint8)
    hosts = np.asarray(multihost_utils.process_allgather(name)).reshape(-1, 64)
    return [{"process": i, "host": bytes(row).rstrip(b"\0").decode(errors="replace"),
             "devices": [device_name(d) for d in jax.devices() if d.process_index == i]} for i, row in enumerate(hosts)]


def write_weights_digest(model, index: int) -> None:
    """For tests (KEXP_PROCESS_DIGESTS=<folder>): each process writes the SHA-256 of its final weights to
    <folder>/process-<i>.sha256, so a test can see that every process ends with the same model."""
    folder = os.environ.get("KEXP_PROCESS_DIGESTS")
    if folder:
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights())).hexdigest()
        (Path(folder) / f"process-{index}.sha256").write_text(digest)


def lost_peer(exc: Exception) -> PeerLost | None:
    """A collective that failed because another process is gone (JAX's XlaRuntimeError), as one line; None for anything else."""
    runtime = type(exc).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
    if not runtime and not re.search(r"Gloo|Connection (reset|closed)|heartbeat|UNAVAILABLE|coordination service", str(exc)):
        return None
    cause = repeats_once(" ".join(str(exc).split()))[:240]
    return PeerLost(f"another process of the run stopped answering ({cause})")


def localize(model) -> None:
    """After a multi-process fit: every variable (weights, optimizer, metrics) as a plain array of this
    process, and no distribution, so this process alone can score and save the model. DataParallel keeps
    every variable whole on every process, so each holds the same values."""
    import keras

    keras.distribution.set_distribution(None)
    seen, variables = set(), [*model.variables, *(model.optimizer.variables if model.optimizer is not None else [])]
    for metric in model.metrics:
        variables.extend(metric.variables)
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            variable.assign(np.asarray(variable.value))
    model.train_function = model.test_function = model.predict_function = None
