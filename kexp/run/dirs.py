"""New run directories: created, never reused; and the check, before any work, that they can be."""

from __future__ import annotations

import os
import secrets
import string
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from kexp.errors import RunDirError

_SUFFIX_CHARS = string.ascii_lowercase + string.digits


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


def new_run_path(runs_dir: Path, name: str) -> Path:
    """Where a new run would go (<runs_dir>/<time>-<name>-<xxxx>), not yet created: for a launcher that hands
    its processes the directory process 0 then creates (kexp train --processes)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    while True:
        path = Path(runs_dir) / f"{stamp}-{name}-{''.join(secrets.choice(_SUFFIX_CHARS) for _ in range(4))}"
        if not path.exists():
            return path


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
