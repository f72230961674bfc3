"""The run directory's training files: config.yaml and env.json at the start, each member's and the
run's metrics.json, model.keras and preprocessing at the end (kexp.run writes them atomically)."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any

import kexp
from kexp.backends import backend_versions
from kexp.datasets.base import Dataset, summarize
from kexp.plugins import plugins_of_run
from kexp.preprocessing import to_document
from kexp.registry import DATASETS, MODELS
from kexp.report.plots import BackgroundPlots
from kexp.run.files import RunFiles
from kexp.run.io import replace_durably
from kexp.run.lifecycle import Run, pause_for_tests
from kexp.run.records import has_history, mark_env_ended, read_metrics, write_config, write_env, write_metrics, write_plugin_copies, write_preprocessing
from kexp.spec import ExperimentSpec
from kexp.train.compile import compiles_steps
from kexp.train.loop import LoopPlan
from kexp.train.runtime import Placement, thread_settings
from kexp.train.session import FitOutcome, MemberJob, MemberResult, Session


def member_dir(run_dir: Path, spec: ExperimentSpec, member) -> Path:
    """Where a member writes history.json: the run itself, or folds/<i>[-seed-<s>]/ or repeats/<seed>/."""
    if member.name is None:
        return run_dir
    folder = RunFiles(run_dir).member(spec.evaluation.protocol, member.name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def finish_member(session: Session, job: MemberJob, outcome: FitOutcome) -> MemberResult:
    """A fold's or repeat's own files: metrics.json, learning curves and, with save_models, its model and preprocessing."""
    member, data, spec = job.member, job.data, session.spec
    folder = member_dir(session.run.path, spec, member)
    result = MemberResult({"name": member.name, "seed": member.seed, **outcome.to_json(), "data": summarize(data)})
    write_metrics(folder, result.document)
    session.plots.wait(folder)
    if spec.evaluation.save_models:
        save_model(job.compiled.model, RunFiles(folder).model)
        write_preprocessing(folder, to_document(data.preprocessing, data.task, data.class_names, data.positive_class, data.raw_input_unsupported))
    return result


def read_member_result(folder: Path) -> MemberResult:
    """A member that finished in an earlier attempt, as its metrics.json says."""
    return MemberResult(read_metrics(folder).document)


def aggregate_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, std and 95% CI of every metric over the members; top-level train/test hold the means."""
    from kexp.report.aggregate import aggregate_members

    aggregate = aggregate_members(results, parts=("train", "validation", "test", "report"))
    means = {part: {name: summary["mean"] for name, summary in metrics.items()} for part, metrics in aggregate.items()}
    members = [{key: r.get(key) for key in ("name", "seed", "train", "validation", "test", "report", "epochs_completed")} for r in results]
    return {
        **{part: means.get(part) for part in ("train", "validation", "test")},
        "report": means.get("report"),
        "aggregate": aggregate,
        "members": members,
        "epochs_completed": sum(r["epochs_completed"] for r in results),
        "fit_seconds": sum(r["fit_seconds"] for r in results),
    }


def remove_checkpoints(run_dir: Path, spec: ExperimentSpec, members: list) -> None:
    """A completed run keeps its model, not its checkpoints (MBs per member)."""
    import shutil

    from kexp.train.checkpoint import CHECKPOINTS

    for member in members:
        shutil.rmtree(member_dir(run_dir, spec, member) / CHECKPOINTS, ignore_errors=True)


def current_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers may run as a uid with no passwd entry
        return None


REPRODUCIBILITY_VARIABLES = ("TF_ENABLE_ONEDNN_OPTS", "TF_DETERMINISTIC_OPS", "TF_CUDNN_DETERMINISTIC", "CUDA_VISIBLE_DEVICES",
                             "PYTHONHASHSEED", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "KERAS_BACKEND",
                             "XLA_FLAGS")


def environment(device: Placement, seed: int, data_dir: Path) -> dict[str, Any]:
    """The versions, machine, devices and settings a run ran with, for env.json."""
    import keras
    import numpy
    import tensorflow as tf

    return {
        "kexp": kexp.__version__,
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "backend": device.backend,  # Keras' backend; its own versions beside it (jax, jaxlib)
        **backend_versions(device.backend),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "user": current_user(),
        "device": device.name,
        "devices": device.devices,  # the devices the model ran on (replicas under device: all)
        "processes": device.processes,  # one run over several (kexp train --processes N, backend jax)
        **({"process_hosts": device.hosts} if device.hosts else {}),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "cpu_count": os.cpu_count(),
        "threads": thread_settings(),
        "machine": platform.machine(),
        # settings that change numbers or placement, as they were for this run
        "environment_variables": {k: v for k, v in os.environ.items() if k in REPRODUCIBILITY_VARIABLES},
        "seed": seed,
        "data_dir": str(data_dir.resolve()),
        "argv": sys.argv,
    }


def write_run_start(run: Run, spec: ExperimentSpec, data: Dataset, device: Placement, plan: LoopPlan, data_dir: Path,
                    with_preprocessing: bool = True) -> None:
    """config.yaml, env.json (and the fitted preprocessing) of a new run."""
    run_dir = run.path
    header = f"# Resolved spec of run {run_dir.name} (kexp {kexp.__version__}). Repeat it with: kexp train {RunFiles(run_dir).config}\n"
    write_config(run_dir, header + spec.to_yaml())
    # the data's fingerprint and the spec go in at the start: an interrupted run can be checked and resumed
    speed = {"steps_per_execution": plan.steps_per_execution, "loop": plan.loop,
             "xla_flags": plan.xla_flags, "jit_compile": compiles_steps(spec.train),
             "precision": spec.train.precision}
    plugins = plugins_of_run(spec.plugins, DATASETS.module_of(spec.data.name), MODELS.module_of(spec.model.name))
    write_plugin_copies(run_dir, {p.copy: Path(p.file) for p in plugins if p.copy})
    env = {**environment(device, spec.seed, data_dir), **speed, "deterministic": spec.train.deterministic,
           "spec": spec.model_dump(mode="json"), "spec_files": [file.to_json() for file in spec.spec_files],
           "data_files": data.summary.get("files", []), "plugins": [p.to_json() for p in plugins], "started": run.started, "ended": None}
    write_env(run_dir, env)
    if with_preprocessing:  # folds and repeats each fit their own (kept with save_models)
        write_preprocessing(run_dir, to_document(data.preprocessing, data.task, data.class_names, data.positive_class, data.raw_input_unsupported))


def save_model(model, path: Path) -> None:
    """Save beside the target, fsync, rename: a kill or power loss mid-save never leaves half a model.keras."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    try:
        model.save(tmp)
        replace_durably(tmp, path)
    except OSError as exc:  # a full disk or quota: no half-written temp file left, and the file named
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def finish_run(run: Run, model, metrics: dict[str, Any], plots: BackgroundPlots) -> None:
    """The run's last files, then `completed`; a run of several members (model None) keeps no single model."""
    pause_for_tests("finish")
    if model is not None:
        save_model(model, RunFiles(run.path).model)
    write_metrics(run.path, metrics)
    if has_history(run.path):
        plots.wait(run.path)
    mark_env_ended(run.path)
    run.complete()
