"""Run directories: create them (never reused), write JSON atomically, read them back.

    runs/<YYYYMMDD-HHMMSS>-<name>-<4 random chars>/
      config.yaml     the resolved spec; `kexp train <run>/config.yaml` repeats the run
      status.json     running -> completed | failed | interrupted | diverged, with pid, host,
                      attempt, last epoch and heartbeat (kexp.lifecycle owns it)
      env.json        versions, device, host, seed, the resolved spec, data checksums, attempts
      log.txt         one line per start, resume and stop; the traceback of a failure
      checkpoints/    the last two resumable states (kexp.train.checkpoint)
      history.json    Keras history, one value per finished epoch
      metrics.json    final train/validation/test metrics and timings
      model.keras     the trained model
      preprocessing/  preprocessing.json: the fitted preprocessing (vocabulary, scaling), class names
      plots/          learning curves

Nothing here imports TensorFlow: reading runs must stay fast.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import string
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kexp.errors import RunDirError

DEFAULT_RUNS_DIR = Path("runs")
_SUFFIX_CHARS = string.ascii_lowercase + string.digits


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def create_run_dir(runs_dir: Path, name: str, utc: bool = False) -> Path:
    """A new, empty run directory; a clash (same second, same suffix) just draws again."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the runs directory {runs_dir}: {exc.strerror}; choose another with --runs-dir") from None
    stamp = (datetime.now(UTC) if utc else datetime.now()).strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        suffix = "".join(secrets.choice(_SUFFIX_CHARS) for _ in range(4))
        path = runs_dir / f"{stamp}-{name}-{suffix}"
        try:
            path.mkdir(exist_ok=False)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirError(f"cannot create a run directory in {runs_dir}: {exc.strerror}; choose another with --runs-dir") from None
    raise RunDirError(f"could not create a new run directory under {runs_dir}")


def create_named_run_dir(path: Path) -> Path:
    """Exactly this (new or empty) directory, for a caller that chose the path (a sweep's trial)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the run directory {path}: {exc.strerror}") from None
    if any(path.iterdir()):
        raise RunDirError(f"{path}: the run directory already exists and is not empty; an earlier run is never overwritten")
    return path


def check_runs_dir(runs_dir: Path) -> None:
    """Fail now, before any data is read, if run directories cannot be created under runs_dir."""
    probe = Path(runs_dir).absolute()
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise RunDirError(f"cannot create the runs directory {runs_dir}: {probe} is not a directory; choose another with --runs-dir")
    try:  # a real attempt: permissions alone miss read-only mounts and /proc-like folders
        os.rmdir(tempfile.mkdtemp(prefix=".kexp-probe-", dir=probe))
    except OSError as exc:
        raise RunDirError(f"cannot create the runs directory {runs_dir}: {probe} is not writable ({exc.strerror}); choose another with --runs-dir") from None


def _to_json(value: Any) -> Any:
    """numpy scalars and arrays -> plain Python, for json.dump."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def umask() -> int:
    """The process umask (read without changing it where /proc allows; the swap is brief elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(parent: Path, prefix: str, suffix: str = "") -> Path:
    """tempfile.mkdtemp, but with the umask's permissions (mkdtemp always makes 0700): a checkpoint
    or export folder renamed into place must be as readable to colleagues as the files in it."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix))
    os.chmod(path, 0o777 & ~umask())
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Temp file in the same folder, flush, fsync, rename, fsync the folder: after a crash or
    power loss a reader finds the old file or the new one, never half of one."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # named after the file meant, not the temp name it never got
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        # mkstemp makes 0600 files; colleagues on a shared server should read metrics like the model
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_durably(tmp: Path, path: Path) -> None:
    """fsync a finished temp file (or folder of files), rename it over `path`, fsync the parent."""
    for file in [tmp] if tmp.is_file() else [p for p in tmp.iterdir() if p.is_file()] + [tmp]:
        fsync_file(file) if file.is_file() else fsync_dir(file)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def finite_or_none(value: Any, path: str = "", found: dict[str, str] | None = None) -> Any:
    """A copy with NaN and +-inf replaced by None; `found` collects "key.index" -> "nan" for each."""
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0):
        number = float(value)
        if not math.isfinite(number):
            if found is not None:
                found[path] = str(number)
            return None
        return value
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return finite_or_none(value.tolist(), path, found)
    if isinstance(value, dict):
        return {k: finite_or_none(v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v, f"{path}.{i}" if path else str(i), found) for i, v in enumerate(value)]
    return value


def strict_json(data: Any, indent: int | None = 2) -> str:
    """Strict JSON (RFC 8259 has no NaN; JSON.parse and jq misread bare NaN/Infinity): non-finite
    numbers become null, listed under "non_finite" ({"metrics.loss": "inf"})."""
    found: dict[str, str] = {}
    clean = finite_or_none(data, found=found)
    if found and isinstance(clean, dict):
        clean["non_finite"] = found
    return json.dumps(clean, indent=indent, default=_to_json, allow_nan=False)


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, strict_json(data) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: not found") from None
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc})") from None


PREPROCESSING_FILE = Path("preprocessing") / "preprocessing.json"


def write_preprocessing(run_dir: Path, document: dict[str, Any]) -> None:
    """The fitted preprocessing as data (kexp.preprocessing.to_document); the run store owns the file."""
    (run_dir / PREPROCESSING_FILE).parent.mkdir(exist_ok=True)
    write_json(run_dir / PREPROCESSING_FILE, document)


def read_preprocessing(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / PREPROCESSING_FILE)


@dataclass
class RunRecord:
    """A finished (or interrupted) run directory, reopened for evaluate, predict and export."""

    path: Path
    spec: Any  # kexp.spec.ExperimentSpec, from config.yaml
    status: dict[str, Any]
    env: dict[str, Any]
    metrics: dict[str, Any] | None
    preprocessing: dict[str, Any]  # kexp.preprocessing.to_document's dict
    warnings: list[str] = field(default_factory=list)

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"


def open_run(run_dir: Path) -> RunRecord:
    """Reopen a run directory, or say in one line why it cannot be used (RunDirError)."""
    from kexp.spec import load_spec

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir}: not a kexp run directory (no config.yaml)")
    env = read_json(run_dir / "env.json")
    check_not_from_newer_kexp(run_dir / "env.json", env)
    status = read_json(run_dir / "status.json")
    warnings = usable_state(run_dir / "status.json", status)
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else None
    if metrics and metrics.get("members"):
        raise RunDirError(f"{run_dir}: a {metrics.get('protocol')} run of {len(metrics['members'])} members has no single model; "
                          "its metrics.json holds each member's numbers and their mean, std and 95% CI")
    if not (run_dir / "model.keras").is_file():
        raise RunDirError(f"{run_dir / 'model.keras'}: not found; the run saved no model")
    if not zipfile.is_zipfile(run_dir / "model.keras"):  # checked here, before TensorFlow takes seconds to start
        raise RunDirError(f"{run_dir / 'model.keras'}: damaged or not a Keras model (not a .keras zip archive)")
    if not (run_dir / PREPROCESSING_FILE).exists():
        raise RunDirError(f"{run_dir / PREPROCESSING_FILE}: not found; the run directory is incomplete (or made before kexp 0.2): train again")
    return RunRecord(run_dir, load_spec(run_dir / "config.yaml"), status, env, metrics, read_preprocessing(run_dir), warnings)


def check_not_from_newer_kexp(source: Path, env: dict[str, Any]) -> None:
    import kexp

    made_by = str(env.get("kexp", "0"))
    if version_tuple(made_by) > version_tuple(kexp.__version__):
        raise RunDirError(f"{source}: the run was made by kexp {made_by}, newer than this kexp {kexp.__version__}; upgrade kexp")


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def usable_state(source: Path, status: dict[str, Any]) -> list[str]:
    """Warnings for a run whose model can be used; RunDirError for one whose model cannot."""
    state = status.get("state")
    if state == "completed":
        return []
    if state == "interrupted":
        return [f"{source.parent.name} was interrupted ({status.get('error', 'by a signal')}): using the model as it was then"]
    if state == "failed":
        raise RunDirError(f"{source}: the run failed ({status.get('error', 'no reason recorded')}); its model is not a trained one")
    if state == "diverged":
        raise RunDirError(f"{source}: the run diverged ({status.get('error', 'NaN loss')}); it has no usable model")
    from kexp.lifecycle import effective_state

    if effective_state(status) == "crashed":
        raise RunDirError(f"{source}: the run crashed (its process {status.get('pid')} on {status.get('host')} is gone); "
                          f"continue it with: kexp resume {source.parent}")
    raise RunDirError(f"{source}: the run is '{state}' (still training); it has no final model yet")


def write_status(run_dir: Path, state: str, **fields: Any) -> None:
    """status.json, atomically; on a full disk (no room for the temp file) rewritten in place instead,
    which fits in the blocks the old file holds: a run that fails for want of space still says so."""
    status = {"state": state, "updated": now_iso(), **fields}
    try:
        write_json(run_dir / "status.json", status)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or not (run_dir / "status.json").is_file():
            raise
        text = strict_json(status) + "\n"
        with open(run_dir / "status.json", "r+", encoding="utf-8") as f:  # no truncation first: the old blocks are reused
            f.write(text)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
