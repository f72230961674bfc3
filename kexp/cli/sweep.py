"""`kexp sweep`: one run per point of a parameter space, shown trial by trial, then summarized."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape as literal  # help text shown as written, `[ray]` included (rich markup otherwise)

from kexp.cli.common import AllowChangedCodeOption, DataDirOption, RunsDirOption, SetOption, console, exit_on_error, print_warning, usage_error


def sweep(
    config: Annotated[Path | None, typer.Argument(help="Experiment spec (YAML), with or without a `sweep:` section")] = None,
    param: Annotated[list[str], typer.Option("--param", help="KEY=V1,V2,... (values parsed as YAML), or KEY=LOW..HIGH / KEY=log:LOW..HIGH for --samples. Several form a grid.")] = [],
    set_: SetOption = [],
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, max=100, help="Train each point N times (seed, seed+1, ...): mean ± std in the summary")] = None,
    samples: Annotated[int | None, typer.Option("--samples", min=1, help="Random or tpe search: N trials drawn from the values and ranges")] = None,
    method: Annotated[str | None, typer.Option("--method", help=literal("grid, random, or tpe (Optuna's TPE learns from finished trials; pip install 'kexp[optuna]'). Default: grid, random with --samples"))] = None,
    prune: Annotated[str | None, typer.Option("--prune", help="none, median, asha or hyperband: Optuna's pruner stops hopeless trials at an epoch boundary (marked pruned)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="tpe's sampler seed (default: the spec's seed)")] = None,
    sync: Annotated[bool, typer.Option("--sync", help="tpe with --parallel N: propose N at a time once the last N ended: the same command proposes the same points (default: as slots free up; faster, not reproducible)")] = False,
    storage: Annotated[str | None, typer.Option("--storage", help="The study in an RDB shared by several drivers, e.g. postgresql://user:pass@host/db (default: study.journal in the sweep folder)")] = None,
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Trials at once (local: CPU threads are divided among them; with GPUs: one per GPU)")] = 1,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, help="Failures of a trial before it is left failed (an interrupted trial is always continued)")] = 2,
    trials_per_gpu: Annotated[int, typer.Option("--trials-per-gpu", min=1, help="Pack K small trials on each GPU")] = 1,
    backend: Annotated[str, typer.Option("--backend", help=literal("local (child processes) or ray (Ray tasks; pip install 'kexp[ray]')"))] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster: auto or HOST:PORT (default: start a local Ray)")] = None,
    cpus_per_trial: Annotated[float, typer.Option("--cpus-per-trial", min=0.1, help="Ray: CPUs each trial asks for (and its TensorFlow threads)")] = 1.0,
    metric: Annotated[str | None, typer.Option("--metric", help="Metric the summary compares (default: the task's main one)")] = None,
    data_dir: DataDirOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    resume_dir: Annotated[Path | None, typer.Option("--resume", help="Continue this sweep directory")] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new sweep even if one with the same spec and space exists")] = False,
    allow_changed_code: AllowChangedCodeOption = False,
) -> None:
    """Train one run per point of a parameter space; re-running the same command continues the sweep.

    Writes <runs-dir>/sweeps/<time>-<name>-<xxxx>/ with a run directory per trial,
    manifest.json and summary.json/.csv/.png (tpe and pruning: the Optuna study in
    study.journal). Exit 0 when every trial completed or was pruned, 1 if any failed,
    130/143 when stopped (running trials are checkpointed: resume later).
    """
    from kexp.cli.display import SweepDisplay
    from kexp.cli.results import print_sweep_summary
    from kexp.datasets.base import resolve_data_dir

    check_usage(backend, config, resume_dir, starting_options=bool(method or prune or seed is not None or sync or samples))
    with exit_on_error():
        from kexp.sweep.driver import run_sweep
        from kexp.sweep.space import SearchOptions, plan_sweep

        search = SearchOptions(method=method, prune=prune, sampler_seed=seed, sync=sync)
        plan = None if config is None else plan_sweep(config=config, overrides=set_, params=param, seeds=seeds, samples=samples, metric=metric,
                                                      search=search)
        display = SweepDisplay(console, print_warning)
        result = run_sweep(plan=plan, runs_dir=runs_dir, data_dir=resolve_data_dir(data_dir), parallel=parallel, max_attempts=max_attempts,
                           trials_per_gpu=trials_per_gpu, backend=backend, address=address, resume_dir=resume_dir, new=new,
                           cpus_per_trial=cpus_per_trial, emit=display, allow_changed_code=allow_changed_code, storage=storage)
        display.stop()
    print_sweep_summary(result)
    raise typer.Exit(result.exit_code)


def check_usage(backend: str, config: Path | None, resume_dir: Path | None, starting_options: bool) -> None:
    if backend not in ("local", "ray"):
        usage_error(f"--backend {backend}: expected local or ray")
    if resume_dir is not None and starting_options:
        usage_error("--resume continues a sweep as it was started: leave out --method, --prune, --seed, --sync and --samples")
    if (config is None) == (resume_dir is None):
        usage_error("give a CONFIG to start (or continue) a sweep, or --resume SWEEP_DIR, not both")
