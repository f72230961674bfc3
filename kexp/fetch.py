"""`kexp data fetch NAME`: download a data set from its canonical source, verified by SHA-256.

Downloads go to a temporary file beside the target and are renamed only after the
checksum matches, so a broken or tampered download never looks like data.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kexp.errors import DataError
from kexp.events import Emit, discard
from kexp.run.io import sha256_file

MNIST_MIRROR = "https://storage.googleapis.com/cvdf-datasets/mnist"


@dataclass(frozen=True)
class Source:
    url: str
    sha256: str
    target: str  # path under the data directory
    # For a zip archive: the member to extract to `extract_to` (the archive itself is kept as `target`).
    member: str | None = None
    extract_to: str | None = None


SOURCES: dict[str, list[Source]] = {
    "pima": [
        Source(
            "https://raw.githubusercontent.com/jbrownlee/Datasets/master/pima-indians-diabetes.data.csv",
            "6bfe5d0f379d17a0e0819b996407e3c09bf80febd4287f2ed212190dfff154af",
            "pima-indians-diabetes.data.csv",
        )
    ],
    "mnist": [
        Source(f"{MNIST_MIRROR}/train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", "mnist/train-images-idx3-ubyte.gz"),
        Source(f"{MNIST_MIRROR}/train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", "mnist/train-labels-idx1-ubyte.gz"),
        Source(f"{MNIST_MIRROR}/t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", "mnist/t10k-images-idx3-ubyte.gz"),
        Source(f"{MNIST_MIRROR}/t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", "mnist/t10k-labels-idx1-ubyte.gz"),
    ],
    "imdb": [
        Source(
            "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
            "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
            "aclImdb_v1.tar.gz",
        )
    ],
    "sms_spam": [
        Source(
            "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
            "1587ea43e58e82b14ff1f5425c88e17f8496bfcdb67a583dbff9eefaf9963ce3",
            "sms/smsspamcollection.zip",
            member="SMSSpamCollection",
            extract_to="sms/SMSSpamCollection",
        )
    ],
}


def download(url: str, sha256: str, target: Path, emit: Emit = discard) -> Path:
    """Stream `url` to `target`, reporting download_started / download_progress / download_ended
    events (kexp.events); keep the file only if its SHA-256 matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            emit("download_started", name=target.name, url=url, total=total)
            try:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    digest.update(block)
                    emit("download_progress", name=target.name, bytes=len(block))
            finally:  # the display closes its bar before any message about the download
                emit("download_ended", name=target.name)
        if digest.hexdigest() != sha256:
            raise DataError(f"{url}: SHA-256 is {digest.hexdigest()}, expected {sha256}; the download was discarded")
        tmp.replace(target)
        return target
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"{url}: download failed: {exc}. Without internet, copy the file to {target} yourself.") from None
    finally:
        tmp.unlink(missing_ok=True)


def fetch(name: str, data_dir: Path, emit: Emit = discard) -> list[Path]:
    """Make every file of data set `name` present and verified under data_dir; return their paths."""
    if name not in SOURCES:
        raise DataError(f"no download source for '{name}'; known: {', '.join(sorted(SOURCES))}")
    paths = []
    for source in SOURCES[name]:
        target = data_dir / source.target
        if not (target.is_file() and sha256_file(target) == source.sha256):
            download(source.url, source.sha256, target, emit)
        if source.member:
            target = extract_member(target, source.member, data_dir / source.extract_to)
        paths.append(target)
    return paths


def extract_member(archive: Path, member: str, destination: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(destination, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{archive}: cannot extract {member}: {exc}") from None
    return destination


# --- what is already there: shared by `kexp data list` and `kexp doctor` ----------------


@dataclass(frozen=True)
class FileCheck:
    """One file `kexp data fetch` writes, as found in a data directory."""

    path: Path  # absolute
    # valid (SHA-256 matches), present (no published hash to compare), missing, differs (reads
    # whole but is not the published file: a re-packed or edited copy kexp can use), unreadable
    state: str
    # Read by kexp; False for an archive whose member kexp reads once extracted (sms/smsspamcollection.zip).
    needed: bool
    url: str | None  # where `kexp data fetch` gets it; None for a member extracted from an archive
    expected_sha256: str | None
    bytes: int | None = None
    sha256: str | None = None
    problem: str | None = None  # why an unreadable file cannot be read ("truncated gzip stream")


def check_files(name: str, data_dir: Path) -> list[FileCheck]:
    """Every file of data set `name` that `kexp data fetch` would write, checked under data_dir."""
    files = []
    for source in SOURCES[name]:
        files.append(check_file(data_dir / source.target, source.sha256, source.url, needed=source.extract_to is None))
        if source.extract_to:
            files.append(check_file(data_dir / source.extract_to, None, None, needed=True))
    return files


def check_file(path: Path, expected_sha256: str | None, url: str | None, needed: bool) -> FileCheck:
    """Size and SHA-256 of one file against the published hash (~0.1 s for the 80 MB IMDB archive)."""
    path = Path(os.path.abspath(path))  # absolute and without `..`, as describe_files records inputs
    if not path.is_file():
        return FileCheck(path, "missing", needed, url, expected_sha256)
    try:
        size, digest = path.stat().st_size, sha256_file(path)
    except OSError as exc:
        return FileCheck(path, "unreadable", needed, url, expected_sha256, problem=exc.strerror)
    if digest != expected_sha256:  # not the published file (or none published): does it still read whole?
        problem = archive_problem(path)
        if problem is not None:
            return FileCheck(path, "unreadable", needed, url, expected_sha256, size, digest, problem)
    state = "present" if expected_sha256 is None else "valid" if digest == expected_sha256 else "differs"
    return FileCheck(path, state, needed, url, expected_sha256, size, digest)


def archive_problem(path: Path) -> str | None:
    """Why a compressed file does not decompress to its end (a cut-short download), or None.

    Only for files whose hash differs from the published one: a re-packed copy that reads
    fine is usable, a truncated one fails minutes later in the middle of reading."""
    import gzip
    import zipfile
    import zlib

    name = path.name.lower()
    try:
        if name.endswith((".gz", ".tgz")):
            with gzip.open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        elif name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"damaged zip archive (member {bad} fails its CRC check)"
    except EOFError:
        return "truncated gzip stream, the file was cut short: download it again"
    except (OSError, zlib.error, zipfile.BadZipFile) as exc:
        return f"damaged archive ({' '.join(str(exc).split())})"
    return None


def dataset_state(files: list[FileCheck]) -> str:
    """ready, missing (nothing there), incomplete (a file kexp reads is absent or unreadable) or
    differs (every file reads, one is not the published file: usable, and runs record its hash)."""
    if all(f.state == "missing" for f in files):
        return "missing"
    if any(f.state in ("missing", "unreadable") for f in files if f.needed) or any(f.state == "unreadable" for f in files):
        return "incomplete"
    if any(f.state == "differs" for f in files):
        return "differs"
    return "ready"


def check_datasets(data_dir: Path) -> dict[str, list[FileCheck]]:
    """Every data set `kexp data fetch` can get, by name, with its files checked under data_dir."""
    return {name: check_files(name, data_dir) for name in sorted(SOURCES)}
