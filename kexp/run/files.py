"""Every name in a run directory and a sweep directory, spelled once.

    runs/<YYYYMMDD-HHMMSS>-<name>-<4 random chars>/
      config.yaml     the resolved spec; `kexp train <run>/config.yaml` repeats the run
      status.json     running -> completed | failed | interrupted | diverged, with pid, host,
                      attempt, last epoch and heartbeat (kexp.run.lifecycle owns it)
      env.json        versions, device, host, seed, the resolved spec, data checksums, attempts
      log.txt         one line per start, resume and stop; the traceback of a failure
      events.jsonl    every event but `batch`, one JSON line each (kexp.events)
      .lock           the flock one process holds while it works on the run
      checkpoints/    the last two resumable states (kexp.train.checkpoint)
      history.json    Keras history, one value per finished epoch
      metrics.json    final train/validation/test metrics and timings
      model.keras     the trained model
      preprocessing/  preprocessing.json: the fitted preprocessing (vocabulary, scaling), class names
      plots/          learning curves
      folds/<i>/, repeats/<seed>/   each member's own history, metrics (and model) of a k-fold or repeated run
      tensorboard/, mlflow.json     TensorBoard logs; the MLflow run's id (kexp.tracking)
      evaluations/, export/         what `kexp evaluate` and `kexp export` add later

    <runs-dir>/sweeps/<UTC time>-<name>-<xxxx>/
      sweep.yaml, manifest.json, specs/<id>.yaml, logs/<id>.txt, <id>/ (a run directory each),
      summary.json, summary.csv, summary.png

Imports nothing of kexp's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.yaml"
STATUS = "status.json"
ENV = "env.json"
METRICS = "metrics.json"
HISTORY = "history.json"
MODEL = "model.keras"
EVENTS = "events.jsonl"
LOG = "log.txt"
LOCK = ".lock"
PREPROCESSING_DIR = "preprocessing"
PREPROCESSING_FILE = Path(PREPROCESSING_DIR) / "preprocessing.json"
CHECKPOINTS = "checkpoints"
# inside checkpoints/epoch-NNNN/ (kexp.train.checkpoint writes and checks them)
CHECKPOINT_ARRAYS = "state.npz"
CHECKPOINT_STATE = "state.json"
PLOTS = "plots"
FOLDS = "folds"
REPEATS = "repeats"
TENSORBOARD = "tensorboard"
MLFLOW = "mlflow.json"
EVALUATIONS = "evaluations"
EXPORT = "export"
# The small files `kexp runs` and `kexp compare` read; any of them (or the lock) marks a folder as a run.
SMALL_FILES = (CONFIG, STATUS, ENV, METRICS, HISTORY)
# What an MLflow run receives as artifacts: every small file, the events and the log.
ARTIFACT_FILES = (CONFIG, ENV, STATUS, METRICS, HISTORY, EVENTS, LOG)
ARTIFACT_FOLDERS = (PLOTS, PREPROCESSING_DIR)

SWEEPS = "sweeps"
SWEEP_SPEC = "sweep.yaml"
MANIFEST = "manifest.json"
TRIAL_SPECS = "specs"
TRIAL_LOGS = "logs"
SUMMARY = "summary"  # summary.json, summary.csv, summary.png


@dataclass(frozen=True)
class RunFiles:
    """The paths of one run directory's files (or a member's folder: the same names inside)."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def status(self) -> Path:
        return self.path / STATUS

    @property
    def env(self) -> Path:
        return self.path / ENV

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def events(self) -> Path:
        return self.path / EVENTS

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def preprocessing(self) -> Path:
        return self.path / PREPROCESSING_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def plots(self) -> Path:
        return self.path / PLOTS

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def mlflow(self) -> Path:
        return self.path / MLFLOW

    @property
    def evaluations(self) -> Path:
        return self.path / EVALUATIONS

    @property
    def export(self) -> Path:
        return self.path / EXPORT

    def member(self, protocol: str, name: str) -> Path:
        """A member's folder: folds/<i>[-<repeat>]/ of a k-fold run, repeats/<seed>/ of a run repeated per seed."""
        return self.path / (FOLDS if protocol == "kfold" else REPEATS) / name.removeprefix("fold-").removeprefix("seed-")

    def member_histories(self) -> list[Path]:
        """Every member's history.json, folds first, each group in name order."""
        return sorted(self.path.glob(f"{FOLDS}/*/{HISTORY}")) + sorted(self.path.glob(f"{REPEATS}/*/{HISTORY}"))


@dataclass(frozen=True)
class SweepFiles:
    """The paths of one sweep directory's files."""

    path: Path

    @property
    def spec(self) -> Path:
        return self.path / SWEEP_SPEC

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def trial_specs(self) -> Path:
        return self.path / TRIAL_SPECS

    @property
    def trial_logs(self) -> Path:
        return self.path / TRIAL_LOGS

    def trial_spec(self, trial_id: str) -> Path:
        return self.path / TRIAL_SPECS / f"{trial_id}.yaml"

    def trial_log(self, trial_id: str) -> Path:
        return self.path / TRIAL_LOGS / f"{trial_id}.txt"

    def summary(self, suffix: str) -> Path:
        """summary.json, summary.csv or summary.png (suffix "json", "csv", "png")."""
        return self.path / f"{SUMMARY}.{suffix}"
