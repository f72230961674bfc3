"""Low-level file writing for run directories: atomic text and JSON, fsync, temp folders, SHA-256, time stamps.

Imports nothing of kexp's, so every module (data loaders, checkpoints, events) can use it
without an import cycle.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def parse_time(value: Any) -> datetime | None:
    """An ISO time stamp in UTC (one recorded without an offset is taken as UTC), or None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    # in UTC, so that the ISO strings sort in time order whatever offset a run recorded
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


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


def rewrite_in_place(path: Path, text: str) -> None:
    """Overwrite an existing file without a temp file (no truncation first: the old blocks are
    reused), for a file that must be written when the disk has no room for a second copy."""
    with open(path, "r+", encoding="utf-8") as f:
        f.write(text)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())


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


def sha256_file(path: Path) -> str:
    """SHA-256 of one file, read in 1 MiB blocks (also how `kexp data fetch` verifies downloads)."""
    return add_file(hashlib.sha256(), path).hexdigest()


def add_file(digest: Any, path: Path) -> Any:
    """Feed a file into a hashlib digest, 1 MiB at a time."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest
