"""Prepared data shared by a sweep's trials: read -> split -> fit -> transform once, loaded by each trial.

    env = shared_data_env(sweep_dir, spec, data_dir, emit)   # the sweep driver, before it launches a trial
    shared = load_shared_data(spec, data_dir, emit)          # the trial (prepare_data): SharedData, or None

Trials that share the data spec share an entry, a folder <cache>/<fingerprint>/ holding:

    objects.pkl   the RawData, the first member's rows and its Dataset, pickled with their arrays out of band
    arrays.bin    those arrays, 64-byte aligned: memory-mapped copy-on-write on load, so the trials share one
                  copy in the page cache, and loading IMDB's 550 MB takes milliseconds (a plain pickle took 3 s)
    entry.json    the fingerprint, the data files' identity (path, size, mtime), the arrays' offsets, sizes

An entry is written in a temp folder and renamed into place, so a reader sees all of it or nothing, and two
writers never mix. A trial checks what it loads (files unchanged, sizes, the pickle's SHA-256, its own rows
equal to the entry's) and on any doubt warns and prepares the data itself. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import kexp
from kexp.datasets.base import Dataset, RawData
from kexp.datasets.pipeline import Member, plan_members, prepare_dataset, read_data
from kexp.events import Emit, discard, reporting
from kexp.plugins import is_plugin_entry
from kexp.registry import DATASETS
from kexp.run.io import now_iso
from kexp.text import file_identity

SHARED_DATA_ENV = "KEXP_SHARED_DATA"  # the folder of entries, set by the sweep driver for its trials; "off" in the driver's: no sharing
OFF = {"off", "none", "0"}
DATA_CACHE = "data-cache"  # that folder's name in a sweep directory
FORMAT = 1
ALIGN = 64


@dataclass
class SharedData:
    """What prepare_data needs so a trial skips read, tokenize, fit and transform."""

    raw: RawData
    members: list[Member]
    data: Dataset
    fingerprint: str


class UnusableEntry(Exception):
    """Why an entry cannot be used (damaged, stale, another format): the trial prepares the data itself."""


def data_fingerprint(spec: Any, data_dir: Path) -> str | None:
    """A hash of what decides the prepared data, short of the files' content (checked on load); None
    when it is not shared: a plugin's dataset, whose objects and code kexp cannot vouch for."""
    if is_plugin_entry(DATASETS.get(spec.data.name).fn):
        return None
    key = {"data": spec.data.model_dump(mode="json"), "split_seed": spec.split_seed, "validation_split": spec.train.validation_split,
           "evaluation": spec.evaluation.model_dump(mode="json"), "data_dir": os.path.abspath(data_dir), "kexp": kexp.__version__, "format": FORMAT}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


# --- writing --------------------------------------------------------------------------------


def prepare_shared_data(spec: Any, data_dir: Path, cache_dir: Path) -> Path | None:
    """The entry for the spec's data, prepared and written unless a usable one is there; None if not shareable."""
    fingerprint = data_fingerprint(spec, data_dir)
    if fingerprint is None:
        return None
    entry = Path(cache_dir) / fingerprint
    if entry_ready(entry, fingerprint):
        return entry
    clock = time.perf_counter()
    raw = read_data(spec, data_dir)
    members = plan_members(raw, spec)
    data = prepare_dataset(raw, members[0].rows)
    write_entry(entry, fingerprint, raw, members[0].rows, data, time.perf_counter() - clock)
    return entry


def write_entry(entry: Path, fingerprint: str, raw: RawData, rows: dict[str, np.ndarray], data: Dataset, seconds: float = 0.0) -> None:
    """objects.pkl, arrays.bin and entry.json in a temp folder, renamed to `entry`; a writer that loses the race discards its own."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".{entry.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        buffers: list[pickle.PickleBuffer] = []
        objects = pickle.dumps((raw, rows, data), protocol=5, buffer_callback=buffers.append)
        (tmp / "objects.pkl").write_bytes(objects)
        spans = write_buffers(tmp / "arrays.bin", buffers)
        meta = {"format": FORMAT, "fingerprint": fingerprint, "kexp": kexp.__version__, "created": now_iso(),
                "files": [list(file_identity(Path(f))) for f in raw.files], "objects_sha256": hashlib.sha256(objects).hexdigest(),
                "objects_bytes": len(objects), "arrays_bytes": (tmp / "arrays.bin").stat().st_size, "buffers": spans,
                "prepare_seconds": round(seconds, 2), "tokens_from_cache": raw.summary.get("tokens_from_cache")}
        (tmp / "entry.json").write_text(json.dumps(meta, indent=1))
        if entry.exists():  # a damaged one (entry_ready said no): replaced
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not entry_ready(entry, fingerprint):  # not another writer's whole entry: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_buffers(path: Path, buffers: list[pickle.PickleBuffer]) -> list[list[int]]:
    """Each buffer's bytes at a 64-byte aligned offset; [offset, length] of each."""
    spans = []
    with open(path, "wb") as out:
        for buffer in buffers:
            raw = buffer.raw()  # contiguous bytes of the array, no copy
            offset = -out.tell() % ALIGN
            out.write(b"\0" * offset)
            spans.append([out.tell(), raw.nbytes])
            out.write(raw)
    return spans


# --- reading --------------------------------------------------------------------------------


def entry_ready(entry: Path, fingerprint: str) -> bool:
    """Whether `entry` looks whole and current (metadata, sizes, the pickle's hash, the files unchanged), short of loading it."""
    try:
        meta = read_meta(entry)
        check_meta(entry, meta, fingerprint)
        read_objects(entry, meta)
    except UnusableEntry:
        return False
    return True


def read_meta(entry: Path) -> dict[str, Any]:
    try:
        meta = json.loads((entry / "entry.json").read_text())
    except (OSError, ValueError) as exc:
        raise UnusableEntry(f"entry.json unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise UnusableEntry("entry.json is not an object")
    return meta


def check_meta(entry: Path, meta: dict[str, Any], fingerprint: str) -> None:
    """UnusableEntry unless the entry is of this format and fingerprint, whole, and its data files are as they were."""
    if meta.get("format") != FORMAT or meta.get("fingerprint") != fingerprint:
        raise UnusableEntry(f"written for another format or fingerprint ({meta.get('format')}, {meta.get('fingerprint')})")
    for name, size in (("objects.pkl", meta.get("objects_bytes")), ("arrays.bin", meta.get("arrays_bytes"))):
        try:
            actual = (entry / name).stat().st_size
        except OSError:
            raise UnusableEntry(f"{name} is missing") from None
        if actual != size:
            raise UnusableEntry(f"{name} has {actual} bytes, {size} were written")
    for path, size, mtime in meta.get("files", []):
        try:
            now = list(file_identity(Path(path)))
        except OSError:
            raise UnusableEntry(f"{path} is no longer there") from None
        if now != [path, size, mtime]:
            raise UnusableEntry(f"{path} changed since the entry was prepared")


def read_objects(entry: Path, meta: dict[str, Any]) -> bytes:
    """objects.pkl, checked against its SHA-256 (a megabyte or so: the big arrays are in arrays.bin)."""
    try:
        objects = (entry / "objects.pkl").read_bytes()
    except OSError as exc:
        raise UnusableEntry(f"objects.pkl unreadable ({exc})") from None
    if hashlib.sha256(objects).hexdigest() != meta.get("objects_sha256"):
        raise UnusableEntry("objects.pkl differs from what was written")
    return objects


def load_entry(entry: Path, fingerprint: str) -> tuple[RawData, dict[str, np.ndarray], Dataset]:
    """The entry's objects, their arrays memory-mapped copy-on-write (writable, private to this process); UnusableEntry if damaged."""
    meta = read_meta(entry)
    check_meta(entry, meta, fingerprint)
    objects = read_objects(entry, meta)
    spans = meta.get("buffers", [])
    mapped = np.memmap(entry / "arrays.bin", dtype=np.uint8, mode="c") if meta["arrays_bytes"] else np.zeros(0, np.uint8)
    if any(offset + length > len(mapped) for offset, length in spans):
        raise UnusableEntry("arrays.bin is shorter than its index")
    try:
        raw, rows, data = pickle.loads(objects, buffers=[mapped[offset:offset + length] for offset, length in spans])
    except Exception as exc:  # a damaged or foreign pickle can raise nearly anything
        raise UnusableEntry(f"objects.pkl does not load ({type(exc).__name__}: {exc})") from None
    if not (isinstance(raw, RawData) and isinstance(data, Dataset) and isinstance(rows, dict)):
        raise UnusableEntry("objects.pkl holds something else")
    return raw, rows, data


def load_shared_data(spec: Any, data_dir: Path, emit: Emit = discard) -> SharedData | None:
    """The spec's prepared data from the folder KEXP_SHARED_DATA names, or None (not set, no entry, or unusable: warned)."""
    folder = os.environ.get(SHARED_DATA_ENV, "")
    fingerprint = data_fingerprint(spec, data_dir) if folder and folder.lower() not in OFF else None
    if fingerprint is None or not (Path(folder) / fingerprint).is_dir():
        return None
    entry, clock = Path(folder) / fingerprint, time.perf_counter()
    try:
        raw, rows, data = load_entry(entry, fingerprint)
        members = plan_members(raw, spec)  # this trial's own members (its seeds); their rows must be the entry's
        if rows.keys() != members[0].rows.keys() or not all(np.array_equal(rows[k], members[0].rows[k]) for k in rows):
            raise UnusableEntry("its rows differ from this spec's split")
    except UnusableEntry as exc:
        emit("warning", message=f"shared data {entry} not used: {exc}; this trial prepares the data itself")
        return None
    data.summary["shared_data"] = fingerprint
    emit("shared_data_loaded", fingerprint=fingerprint, entry=str(entry), seconds=round(time.perf_counter() - clock, 3))
    return SharedData(raw, members, data, fingerprint)


# --- the sweep driver's hook ----------------------------------------------------------------


def shared_data_env(sweep_dir: Path, spec: Any, data_dir: Path, emit: Emit = discard) -> dict[str, str]:
    """The environment a trial needs to load its data from the sweep's cache (<sweep_dir>/data-cache),
    the entry prepared first if missing; {} when the data cannot be shared or preparing it failed (warned:
    each trial then prepares its own, and reports its own error)."""
    cache_dir = Path(sweep_dir) / DATA_CACHE
    if os.environ.get(SHARED_DATA_ENV, "").lower() in OFF:  # the driver's own environment turns sharing off
        return {}
    fingerprint = data_fingerprint(spec, data_dir)
    if fingerprint is None:
        return {}
    env = {SHARED_DATA_ENV: str(cache_dir.resolve())}
    clock = time.perf_counter()
    if entry_ready(cache_dir / fingerprint, fingerprint):
        emit("shared_data", fingerprint=fingerprint, seconds=round(time.perf_counter() - clock, 2), reused=True)
        return env
    try:
        with reporting(emit):  # the tokenizer's progress events
            prepare_shared_data(spec, data_dir, cache_dir)
    except Exception as exc:  # never the sweep's failure: the trials meet the same error and record it in their runs
        emit("warning", message=f"the sweep's shared data was not prepared ({type(exc).__name__}: {exc}); each trial prepares its own")
        return {}
    emit("shared_data", fingerprint=fingerprint, seconds=round(time.perf_counter() - clock, 2), reused=False)
    return env
