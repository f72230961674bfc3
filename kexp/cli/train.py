"""`kexp train` and `kexp resume`: a run's events shown live, then its final metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kexp.cli.common import (
    AllowChangedCodeOption,
    DataDirOption,
    LogEveryOption,
    LogFormatOption,
    RunsDirOption,
    SetOption,
    VerboseOption,
    console,
    exit_on_error,
    quiet_unless,
    usage_error,
)
from kexp.cli.completion import complete_runs
from kexp.cli.processes import CoordinatorOption, NumProcessesOption, ProcessesOption, ProcessIdOption, check_group, child_options, launch_training, launched_run, process_group


def train(
    config: Annotated[Path | None, typer.Argument(help="Experiment spec (YAML), e.g. configs/pima.yaml or runs/<id>/config.yaml")] = None,
    set_: SetOption = [],
    data_dir: DataDirOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    repeat: Annotated[int | None, typer.Option("--repeat", min=1, max=100, help="Train N times with seeds seed, seed+1, ... and report mean, std and 95% CI (sets `seeds`)")] = None,
    resume_dir: Annotated[Path | None, typer.Option("--resume", help="Continue this stopped run in its own directory instead (same as `kexp resume RUN_DIR`)", autocompletion=complete_runs)] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Write the run to exactly this new (or empty) directory instead of <runs-dir>/<time>-<name>-<xxxx>/")] = None,
    log_format: LogFormatOption = "auto",
    log_every: LogEveryOption = None,
    verbose: VerboseOption = False,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Write TensorBoard logs into <run>/tensorboard/ (sets train.tensorboard)")] = False,
    mlflow: Annotated[bool, typer.Option("--mlflow", help="Also log the run to MLflow: $MLFLOW_TRACKING_URI, else a SQLite store beside the runs (<runs-dir>/mlflow.db) (sets tracking.mlflow)")] = False,
    mlflow_uri: Annotated[str | None, typer.Option("--mlflow-uri", help="Log to the MLflow tracking server or store at this URI (implies --mlflow)")] = None,
    processes: ProcessesOption = None,
    coordinator: CoordinatorOption = None,
    process_id: ProcessIdOption = None,
    num_processes: NumProcessesOption = None,
) -> None:
    """Train the experiment in CONFIG and write a new run directory.

    Exit codes: 0 completed, 1 failed, 2 invalid spec or usage, 3 diverged (NaN loss),
    130 / 138 / 143 stopped by SIGINT / SIGUSR1 / SIGTERM after saving a checkpoint.
    """
    from kexp.datasets.base import resolve_data_dir

    if resume_dir is not None:
        if config is not None or set_ or repeat is not None or run_dir is not None:
            usage_error("--resume continues a run as it was: give no CONFIG, --set, --repeat or --run-dir with it")
        return resume(resume_dir, data_dir, log_format, log_every, verbose)
    if config is None:
        usage_error("missing CONFIG: kexp train configs/<name>.yaml (or --resume RUN_DIR)")
    check_log_format(log_format)
    quiet_unless(verbose)
    with exit_on_error():
        spec = train_spec(config, set_, repeat=repeat, tensorboard=tensorboard, mlflow=mlflow, mlflow_uri=mlflow_uri)
        group = process_group(coordinator, process_id, num_processes, spec.backend)
        if processes is not None and processes > 1 and not group.multi:
            flags = ["--tensorboard"] * tensorboard + ["--mlflow"] * mlflow + (["--mlflow-uri", mlflow_uri] if mlflow_uri else [])
            launch_training(config, spec, processes, coordinator, run_dir, runs_dir, child_options(set_, data_dir, log_format, log_every, verbose) + flags)
        if group.multi:
            check_group(spec, group)
        from kexp.cli.display import display
        from kexp.train.experiment import run_experiment, run_worker

        if not group.leader:
            return run_worker(spec=spec, data_dir=resolve_data_dir(data_dir), group=group)
        with display(log_format, console, log_every) as (chosen, emit):
            result = run_experiment(spec=spec, data_dir=resolve_data_dir(data_dir), runs_dir=runs_dir, emit=emit, run_dir=run_dir, group=group)
    show_run_result(result, chosen)


def train_spec(config: Path, overrides: list[str], *, repeat: int | None, tensorboard: bool, mlflow: bool, mlflow_uri: str | None):
    """The spec in `config` with --set and what --repeat / --tensorboard / --mlflow set, as overrides
    (so config.yaml records them and a resume repeats them)."""
    from kexp.spec import load_spec, read_yaml

    source = read_yaml(config)  # once: a spec from a pipe cannot be read twice
    spec = load_spec(config, overrides, source=source)
    extra = tracking_overrides(spec, tensorboard, mlflow, mlflow_uri)
    if repeat is not None:
        extra.append(f"seeds=[{', '.join(str(spec.seed + i) for i in range(repeat))}]")
    return load_spec(config, [*overrides, *extra], source=source) if extra else spec


def tracking_overrides(spec, tensorboard: bool, mlflow: bool, mlflow_uri: str | None) -> list[str]:
    """--tensorboard / --mlflow / --mlflow-uri as spec overrides; options the spec already sets are kept."""
    extra = []
    if tensorboard and spec.train.tensorboard is None:
        extra.append("train.tensorboard=true")
    if mlflow_uri is not None:
        extra.append(f"tracking.mlflow.uri={json.dumps(mlflow_uri)}")
    elif mlflow and spec.tracking.mlflow is None:
        extra.append("tracking.mlflow={}")
    return extra


def check_log_format(log_format: str) -> None:
    from kexp.cli.display import LOG_FORMATS

    if log_format not in LOG_FORMATS:
        usage_error(f"--log-format {log_format!r}: choose from {', '.join(LOG_FORMATS)}")


def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run directory that was interrupted, failed or crashed: runs/<id>", autocompletion=complete_runs)],
    data_dir: DataDirOption = None,
    log_format: LogFormatOption = "auto",
    log_every: LogEveryOption = None,
    verbose: VerboseOption = False,
    allow_changed_code: AllowChangedCodeOption = False,
    coordinator: CoordinatorOption = None,
    process_id: ProcessIdOption = None,
    num_processes: NumProcessesOption = None,
) -> None:
    """Continue a stopped run in the same directory from its last checkpoint (a completed run is left unchanged).

    Refused when config.yaml was edited or the data changed since the run started, when
    another process holds the run, or when it diverged. Exit codes as for `kexp train`.
    A run trained over N processes resumes over N processes.
    """
    from kexp.datasets.base import resolve_data_dir

    check_log_format(log_format)
    quiet_unless(verbose)
    with exit_on_error():
        from kexp.cli.display import display
        from kexp.train.experiment import recorded_processes, resume_experiment, run_worker

        recorded, spec = recorded_processes(run_dir)
        group = process_group(coordinator, process_id, num_processes, spec.backend if spec is not None else "tensorflow")
        if recorded > 1 and not group.multi:
            from kexp.train.launch import check_processes

            check_processes(spec, recorded, coordinator)
            command = ["resume", str(run_dir), *child_options([], data_dir, log_format, log_every, verbose)]
            launched_run(command + ["--allow-changed-code"] * allow_changed_code, recorded, spec, coordinator, Path(run_dir))
        if group.multi:
            check_group(spec, group)
        if not group.leader:
            return run_worker(spec=spec, data_dir=resolve_data_dir(data_dir), group=group, resume_from=Path(run_dir))
        with display(log_format, console, log_every) as (chosen, emit):
            result = resume_experiment(run_dir=run_dir, data_dir=resolve_data_dir(data_dir), emit=emit, allow_changed_code=allow_changed_code,
                                       group=group)
    show_run_result(result, chosen)


def show_run_result(result, chosen: str) -> None:
    """The final metrics, unless the run's events were JSON lines (there run_finished carries them)."""
    from kexp.cli.results import show_result

    if chosen != "jsonl":
        show_result(result, plain=chosen == "plain")
