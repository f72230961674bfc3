"""The values the stages of one run hand each other (kexp.train.experiment reads them in order).

Prepared: the data side, before any model. Session: what every stage of an open run reads.
MemberJob: one member's fit. FitOutcome, MemberResult, RunFacts: typed results, turned into
metrics.json's documents once (to_json).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexp.datasets.base import Dataset, RawData
from kexp.datasets.pipeline import Member
from kexp.events import RecordingEmit
from kexp.report.plots import BackgroundPlots
from kexp.run.lifecycle import Run
from kexp.spec import ExperimentSpec
from kexp.train.checkpoint import Checkpoint
from kexp.train.compile import CompiledModel
from kexp.train.runtime import Placement
from kexp.train.signals import SignalGuard


@dataclass(frozen=True)
class Prepared:
    """Every example as read, each member's rows, the first member's data, and the loss for the task."""

    raw: RawData
    members: list[Member]
    data: Dataset  # the first member's, preprocessing fitted on its training rows
    loss: str
    outputs: int  # units of the model's last layer for that loss


@dataclass
class Session:
    """What every stage of one open run reads: the spec, the run directory, the device, the data side."""

    spec: ExperimentSpec
    data_dir: Path
    emit: RecordingEmit
    guard: SignalGuard
    plots: BackgroundPlots
    run: Run
    device: Placement
    prepared: Prepared
    tracker: Any = None  # the run's kexp.tracking.MlflowRun, once started


@dataclass(frozen=True)
class MemberJob:
    """One member's fit: what it trains, where it writes, and where it resumes from."""

    member: Member
    folder: Path  # its history.json and checkpoints (the run itself for a single run)
    data: Dataset
    compiled: CompiledModel
    resume: Checkpoint | None
    model_path: Path | None  # where an interrupted single run keeps its model; None for folds and repeats


@dataclass(frozen=True)
class FitOutcome:
    """One member's fit and scores, as metrics.json holds them."""

    scores: dict[str, dict[str, float] | None]  # per part, in the order scored ("train" last when it is the last epoch's)
    report: dict[str, Any] | None
    epochs_completed: int
    fit_seconds: float
    train_metrics_from: str  # "evaluation" (a pass of its own) or "last_epoch"
    startup_seconds: float | None
    evaluate_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {**self.scores, "report": self.report, "epochs_completed": self.epochs_completed, "fit_seconds": self.fit_seconds,
                "train_metrics_from": self.train_metrics_from,
                "timing": {"startup_seconds": self.startup_seconds, "evaluate_seconds": self.evaluate_seconds}}


@dataclass(frozen=True)
class MemberResult:
    """A fold's or repeat's metrics.json document: written by this attempt, or read back from an earlier one."""

    document: dict[str, Any]

    def for_aggregate(self) -> dict[str, Any]:
        """The document with its report as flat numbers (f1.spam), as aggregate_results takes it."""
        return {**self.document, "report": flat_report(self.document.get("report"))}


@dataclass(frozen=True)
class RunFacts:
    """What metrics.json says about the run beside its scores (in this order)."""

    wall_seconds: float
    loss_function: str
    num_params: int
    task: str
    positive_class: str | None
    protocol: str
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def flat_report(report: dict[str, Any] | None) -> dict[str, float] | None:
    """balanced_accuracy and precision/recall/f1 per class as flat names (f1.spam), for aggregation."""
    if report is None:
        return None
    flat = {"balanced_accuracy": report["balanced_accuracy"]}
    for name, row in report["per_class"].items():
        flat.update({f"{key}.{name}": row[key] for key in ("precision", "recall", "f1")})
    return flat
