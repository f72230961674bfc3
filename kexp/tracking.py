"""Hand a run to the tools users already watch: TensorBoard logs and an MLflow run.

The run directory stays the source of truth; these are copies for other tools, made as the
run goes. TensorBoard: Keras' own callback, writing into `<member dir>/tensorboard/`, so
`tensorboard --logdir runs/` shows every run, fold and sweep trial side by side. MLflow (the
optional extra `kexp[mlflow]`): params (the flattened resolved spec), per-epoch metrics, tags,
and at the end the final metrics and the run directory's files as artifacts. The MLflow run
id is kept in `<run>/mlflow.json`, so `kexp resume` continues the same MLflow run.

Neither mlflow nor TensorFlow is imported until a run asks for them.
"""

from __future__ import annotations

import math
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kexp.errors import KexpError
from kexp.run.files import ARTIFACT_FILES, ARTIFACT_FOLDERS, RunFiles
from kexp.run.io import write_json
from kexp.run.records import read_json
from kexp.spec.schema import MlflowSpec, TensorBoardSpec, TrackingSpec  # noqa: F401  (the spec's sections, defined with it)

# kexp's final states as MLflow run statuses (failed and diverged, or anything else: FAILED)
MLFLOW_STATUS = {"completed": "FINISHED", "interrupted": "KILLED"}
# MLflow's limit on a param value: older MLflow refuses a longer one, newer cuts it with a warning
PARAM_LIMIT = 6000
# MLflow retries an unreachable server for about four minutes per call (7 retries, backoff 2 s
# doubling). A run should not wait that long to learn the server is down, nor every epoch.
PROBE_SECONDS = 10
STALL_SECONDS = 30


def tensorboard_callback(member_dir: Path, options: TensorBoardSpec):
    """Keras' TensorBoard callback writing per-epoch scalars (and the graph) into member_dir/tensorboard."""
    import keras

    profile = options.profile_batches
    return keras.callbacks.TensorBoard(
        log_dir=str(RunFiles(member_dir).tensorboard),
        histogram_freq=1 if options.histograms else 0,
        write_graph=options.write_graph,
        profile_batch=tuple(int(p) for p in profile.split(",")) if isinstance(profile, str) else (profile or 0),
        update_freq="epoch",
    )


def flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys ({"train": {"epochs": 4}} -> {"train.epochs": 4}); lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        flat.update(flatten(value, name + ".") if isinstance(value, dict) else {name: value})
    return flat


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of metrics.json worth a chart: per split, the report's summary, timings."""
    wanted = {part: metrics.get(part) for part in ("train", "validation", "test")}
    wanted["report"] = {k: v for k, v in (metrics.get("report") or {}).items() if isinstance(v, (int, float))}
    wanted.update({k: metrics.get(k) for k in ("fit_seconds", "wall_seconds", "epochs_completed")})
    return {k: float(v) for k, v in flatten(wanted).items() if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class MlflowRun:
    """One kexp run's MLflow run, written through MlflowClient (no global active run)."""

    def __init__(self, client, run_id: str, experiment: str = "") -> None:
        self.client, self.run_id, self.experiment = client, run_id, experiment
        self.failures: list[str] = []
        self.gave_up = False

    def log_metrics(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(f"{prefix}{k}", float(v), now, step) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)]
        self._safely(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def finish(self, run_dir: Path, state: str, metrics: dict[str, Any] | None) -> None:
        """Final metrics, the run directory's files as artifacts, kexp.status, and the MLflow status."""
        if metrics:
            self.log_metrics(final_metrics(metrics), step=int(metrics.get("epochs_completed") or 0), prefix="final.")
        for name in ARTIFACT_FILES:
            if (run_dir / name).is_file():
                self._safely(lambda name=name: self.client.log_artifact(self.run_id, str(run_dir / name)))
        for folder in ARTIFACT_FOLDERS:  # each under its own name
            if (run_dir / folder).is_dir():
                self._safely(lambda folder=folder: self.client.log_artifacts(self.run_id, str(run_dir / folder), folder))
        model = RunFiles(run_dir).model
        if model.is_file():
            self._safely(lambda: self.client.log_artifact(self.run_id, str(model), "model"))
        self._safely(lambda: self.client.set_tag(self.run_id, "kexp.status", state))
        self._safely(lambda: self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(state, "FAILED")))

    def _safely(self, call: Callable[[], Any]) -> None:
        """A tracking server that hiccups must not fail the training: note it and go on.

        A call that failed only after MLflow's own minutes of retries means the server is gone;
        later calls are skipped, so a dead server costs one stall, not one per epoch."""
        if self.gave_up:
            return
        started = time.monotonic()
        try:
            call()
        except Exception as exc:  # MLflow raises many kinds (REST, file store, network)
            self.failures.append(f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            if time.monotonic() - started > STALL_SECONDS:
                self.gave_up = True
                self.failures.append(f"no answer from {self.client.tracking_uri} after MLflow's retries; the rest of this run was not logged to MLflow")


def import_mlflow():
    try:
        import mlflow
    except ImportError:
        raise KexpError("tracking.mlflow needs MLflow: pip install 'kexp[mlflow]'") from None
    return mlflow


def check_installed(tensorboard: bool, mlflow: bool) -> None:
    """Before any run directory exists: the packages the spec's tracking needs are there."""
    if tensorboard:
        try:
            import tensorboard  # noqa: F401  (TensorFlow's summaries need it to write anything)
        except ImportError:
            raise KexpError("train.tensorboard needs TensorBoard: pip install 'kexp[tensorboard]'") from None
    if mlflow:
        import_mlflow()


# A folder as the tracking URI (`./mlruns`, `file:///…`) is MLflow's file store, which MLflow 3
# refuses unless this is set ("maintenance mode"); kexp sets it for a run that names a folder.
FILE_STORE_SWITCH = "MLFLOW_ALLOW_FILE_STORE"


def local_folder(uri: str | None) -> Path | None:
    """The folder a tracking URI names (a plain path or file://), or None for a server or database."""
    if not uri:
        return None
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    return None if "://" in uri or uri.startswith(("databricks", "sqlite:", "postgresql:", "mysql:", "mssql:")) else Path(uri)


def store_uri(uri: str | None) -> str | None:
    """The URI MLflow is given: a folder as an absolute file:// URI (a resume from another folder
    finds the same store), with MLflow's file store allowed; anything else as written."""
    folder = local_folder(uri)
    if folder is None:
        return uri
    os.environ[FILE_STORE_SWITCH] = "true"
    return folder.expanduser().resolve().as_uri()


DEFAULT_STORE, DEFAULT_ARTIFACTS = "mlflow.db", "mlartifacts"


def given_uri(options: MlflowSpec) -> str | None:
    """The tracking URI the user gave: tracking.mlflow.uri (--mlflow-uri), else $MLFLOW_TRACKING_URI; None: kexp chooses."""
    return options.uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def tracking_uri(options: MlflowSpec, runs_dir: Path) -> str:
    """The given URI, else a SQLite store beside the runs (<runs>/mlflow.db; MLflow's own default
    would put mlflow.db and mlruns/ wherever kexp was started)."""
    return given_uri(options) or f"sqlite:///{(Path(runs_dir) / DEFAULT_STORE).resolve()}"


def store_note(options: MlflowSpec, runs_dir: Path) -> str | None:
    """What kexp chose or did to make the store work, for the run's output."""
    uri = tracking_uri(options, runs_dir)
    if given_uri(options) is None:
        return (f"no tracking URI given (tracking.mlflow.uri, --mlflow-uri or $MLFLOW_TRACKING_URI): a SQLite store beside the runs, "
                f"artifacts in {Path(runs_dir) / DEFAULT_ARTIFACTS}; view it with `mlflow ui --backend-store-uri {uri}`")
    folder = local_folder(uri)
    if folder is None:
        return None
    return (f"{uri} is a folder: MLflow's file store there ({FILE_STORE_SWITCH}=true set for this run, as MLflow 3 asks); "
            f"view it with `{FILE_STORE_SWITCH}=true mlflow ui --backend-store-uri {folder.expanduser().resolve().as_uri()}`")


def check_mlflow_reachable(options: MlflowSpec, runs_dir: Path) -> None:
    """Before any run directory exists: the store opens and an HTTP tracking server answers (a run
    that could not be tracked would otherwise be left behind as failed)."""
    uri = tracking_uri(options, runs_dir)
    check_reachable(uri)
    if not uri.startswith(("http://", "https://")):
        connect(uri)  # a store MLflow refuses (a database it cannot open) fails here, not after the data loads


def start_mlflow_run(run_dir: Path, spec_document: dict[str, Any], options: MlflowSpec, name: str, version: str) -> MlflowRun:
    """The MLflow run of this kexp run: created (params and tags logged), or, for a resumed run,
    the one its mlflow.json names, continued. An unreachable store is a KexpError, in seconds."""
    import_mlflow()
    saved = RunFiles(run_dir).mlflow
    if saved.is_file():
        return resume_mlflow_run(read_json(saved), options)
    return create_mlflow_run(run_dir, spec_document, options, name, version)


def create_mlflow_run(run_dir: Path, spec_document: dict[str, Any], options: MlflowSpec, name: str, version: str) -> MlflowRun:
    """A new MLflow run in the experiment (created if need be), recorded in run_dir/mlflow.json."""
    client = connect(tracking_uri(options, run_dir.parent))
    # kexp's default store: its artifacts beside it too (MLflow's default would be ./mlruns of the current folder)
    artifacts = (run_dir.parent / DEFAULT_ARTIFACTS).resolve().as_uri() if given_uri(options) is None else None
    tags = {"kexp.run_id": run_dir.name, "kexp.version": version, "kexp.run_dir": str(run_dir.resolve()), "kexp.status": "running", "kexp.name": name}
    with one_line_errors(client.tracking_uri):
        experiment_name = options.experiment or name
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name, artifact_location=artifacts)
        run_id = client.create_run(experiment_id, run_name=run_dir.name, tags=tags).info.run_id
        # written before the params, so a resume finds this MLflow run rather than starting a second
        write_json(RunFiles(run_dir).mlflow, {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": client.tracking_uri})
        log_params(client, run_id, spec_document)
    return MlflowRun(client, run_id, experiment_name)


def resume_mlflow_run(saved: dict[str, Any], options: MlflowSpec) -> MlflowRun:
    """The MLflow run an earlier attempt started, marked running again.

    With no uri in the spec it is looked up where it was created (mlflow.json), since
    $MLFLOW_TRACKING_URI or MLflow's cwd-relative default may differ in the resuming shell."""
    client = connect(options.uri or saved.get("tracking_uri") or given_uri(options))
    with one_line_errors(client.tracking_uri):
        client.update_run(saved["run_id"], status="RUNNING")
        client.set_tag(saved["run_id"], "kexp.status", "running")
    return MlflowRun(client, saved["run_id"])


def log_params(client, run_id: str, spec_document: dict[str, Any]) -> None:
    """The resolved spec as params, dotted keys; lists and None as text, cut to MLflow's limit."""
    from mlflow.entities import Param

    params = [Param(k, "null" if v is None else str(v)[:PARAM_LIMIT]) for k, v in flatten(spec_document).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run_id, params=params[start:start + 100])


def connect(uri: str | None):
    """An MlflowClient for uri (None: MLflow's default). MLflow opens the store here, so an
    unknown scheme or a store it refuses (MLflow 3's file store) fails here."""
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=store_uri(uri))
    except Exception as exc:  # MlflowException, or the store's own (SQLAlchemy, OSError)
        raise mlflow_error(uri or "the default tracking URI", exc) from None


@contextmanager
def one_line_errors(uri: str) -> Iterator[None]:
    """A store that is down or refuses becomes one KexpError line naming the URI (no traceback)."""
    check_reachable(uri)
    try:
        yield
    except Exception as exc:  # MLflow raises many kinds (REST, SQLAlchemy, file store, network)
        raise mlflow_error(uri, exc) from None


def mlflow_error(uri: str, exc: Exception) -> KexpError:
    return KexpError(f"MLflow at {uri}: {type(exc).__name__}: {' '.join(str(exc).split())}")  # whole: MLflow's hint is often at the end


def check_reachable(uri: str) -> None:
    """An HTTP tracking server answers at all (any status will do), within PROBE_SECONDS."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri, timeout=PROBE_SECONDS).close()
    except urllib.error.HTTPError:
        return  # it answered: a 404 or 401 for the bare URL still means a server is there
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError):
            return  # something answered TLS; certificates are MLflow's business (MLFLOW_TRACKING_INSECURE_TLS)
        raise KexpError(f"MLflow at {uri}: cannot connect ({reason}); start the tracking server or fix tracking.mlflow.uri") from None
