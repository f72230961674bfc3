"""The options of one run over several processes (backend jax), and the paths `kexp train` / `kexp resume` take with them.

    --processes N                       this command starts N local processes (kexp.train.launch) and waits
    --coordinator H:P --process-id I --num-processes N   this process is number I of N (by hand, or from the launcher)
    srun -n N kexp train SPEC           Slurm's variables say the same (JAX reads them itself)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from kexp.cli.common import console, err_console, usage_error

ProcessesOption = Annotated[int | None, typer.Option("--processes", min=1, max=1024, show_default=False,
                                                     help="Train this one run over N local processes (backend: jax; keras.distribution.DataParallel, "
                                                          "train.batch_size the global batch); on a cluster: srun -n N kexp train SPEC")]
CoordinatorOption = Annotated[str | None, typer.Option("--coordinator", show_default=False,
                                                       help="HOST:PORT of process 0, which serves JAX's coordinator (with --processes: the port to use)")]
ProcessIdOption = Annotated[int | None, typer.Option("--process-id", min=0, show_default=False, help="This process's number, 0 to N-1 (with --coordinator)")]
NumProcessesOption = Annotated[int | None, typer.Option("--num-processes", min=1, show_default=False, help="How many processes the run has (with --coordinator)")]


def process_group(coordinator: str | None, process_id: int | None, num_processes: int | None, backend: str):
    """This process's ProcessGroup: given by hand or by the launcher, or by Slurm (srun -n N) under backend jax; else one process."""
    from kexp.train.distributed import SINGLE, ProcessGroup

    if process_id is not None or num_processes is not None:
        if process_id is None or num_processes is None or coordinator is None:
            usage_error("--coordinator, --process-id and --num-processes go together (or use --processes N on one machine)")
        if process_id >= num_processes:
            usage_error(f"--process-id {process_id} must be below --num-processes {num_processes}")
        return ProcessGroup(num_processes, process_id, coordinator)
    tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    if backend == "jax" and tasks > 1 and "SLURM_STEP_ID" in os.environ:
        return ProcessGroup(tasks, int(os.environ.get("SLURM_PROCID", "0")), None)
    return SINGLE


def check_group(spec, group) -> None:
    """A process of a multi-process run: the same checks as the launcher's, before any data; process 0's port must be free."""
    from kexp.train.launch import check_processes

    check_processes(spec, group.count, group.coordinator if group.leader else None)


def launched_run(command: list[str], count: int, spec, coordinator: str | None, run_dir: Path) -> None:
    """Start the run's processes here and wait; exit with the run's code (the launcher's verdict when process 0 could not give one)."""
    from kexp.train.launch import launch

    console.print(f"processes: {count} (process 0 shown here; run directory {run_dir})", highlight=False, markup=False)
    outcome = launch(command, count, spec.device, coordinator, run_dir)
    if outcome.recorded_failure:
        err_console.print(f"kexp: error: {outcome.first_failure.describe()}"
                          f"{': ' + outcome.worker_error if outcome.worker_error else ''}; the run was recorded failed; "
                          f"continue with: kexp resume {run_dir}", highlight=False, markup=False, soft_wrap=True)
    elif outcome.worker_error and outcome.exit_code:
        err_console.print(f"kexp: {outcome.first_failure.describe()}: {outcome.worker_error}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(outcome.exit_code)


def launch_training(config: Path, spec, count: int, coordinator: str | None, run_dir: Path | None, runs_dir: Path, options: list[str]) -> None:
    """`kexp train --processes N`: checked before any data, then N processes of `kexp train CONFIG OPTIONS --run-dir DIR`."""
    from kexp.run.dirs import new_run_path
    from kexp.train.launch import check_processes

    check_processes(spec, count, coordinator)
    chosen_dir = run_dir or new_run_path(runs_dir, spec.name)
    launched_run(["train", str(config), *options, "--runs-dir", str(runs_dir), "--run-dir", str(chosen_dir)], count, spec, coordinator, chosen_dir)


def child_options(set_: list[str], data_dir: Path | None, log_format: str, log_every: int | None, verbose: bool) -> list[str]:
    """The options every process of the run is started with (the launcher adds --coordinator, --process-id, --num-processes)."""
    options = [item for value in set_ for item in ("--set", value)] + ["--log-format", log_format]
    options += ["--data-dir", str(data_dir)] if data_dir is not None else []
    options += ["--log-every", str(log_every)] if log_every is not None else []
    return options + (["--verbose"] if verbose else [])
