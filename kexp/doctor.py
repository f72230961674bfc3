"""`kexp doctor`: is this machine ready to train? One check per thing kexp depends on.

Each check says ok, warn (kexp works, but something is off or absent that some experiments
need) or fail (something kexp needs is broken), what it found, and the fix. The version
minimums are the ones kexp's own package metadata declares, so they cannot drift from
pyproject.toml. TensorFlow is imported here only, and only when the checks run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OK, WARN, FAIL = "ok", "warn", "fail"
NLTK_CORPORA = ("stopwords", "wordnet")  # what kexp/text.py asks NLTK for (stopwords: true, lemmatize: true)
GPU_PACKAGE_FIX = "pip install 'tensorflow[and-cuda]' (Linux: brings CUDA and cuDNN as pip packages)"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn or fail
    found: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def run_checks(data_dir: Path | None, runs_dir: Path) -> list[Check]:
    """Every check, in the order a user would fix them: Python and packages, devices, NLTK, data, runs."""
    with quiet_tensorflow():
        tf_checks, tf = check_tensorflow()
        checks = [check_python(), *tf_checks]
        if tf is not None:
            checks += [check_gpus(tf, find_nvidia_driver()), check_cuda_build(tf)]
    checks += [check_nltk_corpus(name) for name in NLTK_CORPORA]
    checks += check_data(data_dir)
    checks.append(check_runs_dir(runs_dir))
    return checks


def quiet_tensorflow() -> Any:
    """TensorFlow's start-up lines hidden as `kexp train` hides them, unless TF_CPP_MIN_LOG_LEVEL=0 asks for
    them (they are how TensorFlow says why it found no GPU)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return contextlib.nullcontext()
    from kexp.train.runtime import filtered_native_stderr

    return filtered_native_stderr()


# --- Python and packages ------------------------------------------------------------------


def declared_requirements() -> tuple[str, dict[str, str]]:
    """(Requires-Python, {package: minimum version}) as kexp's metadata declares them."""
    try:
        meta = importlib.metadata.metadata("kexp")
        python, requires = meta.get("Requires-Python", ""), importlib.metadata.requires("kexp") or []
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        text = (Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8")
        declared = re.search(r'requires-python\s*=\s*"([^"]+)"', text)
        python = declared[1] if declared else ""
        requires = re.findall(r'^\s*"([^"]+)",', text, flags=re.MULTILINE)
    minimums = {}
    for requirement in requires:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", requirement)
        if match:  # a requirement with a marker (`; extra == "ray"`) is not for every install
            minimums[match[1].lower()] = match[2]
    return python, minimums


def version_tuple(version: str) -> tuple[int, ...]:
    """'2.16.1' -> (2, 16, 1); '2.17.0rc1' -> (2, 17, 0): enough to compare against a >= minimum."""
    return tuple(int(re.match(r"\d*", part)[0] or 0) for part in version.split("+")[0].split("."))


def at_least(version: str, minimum: str) -> bool:
    have, need = version_tuple(version), version_tuple(minimum)
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


def check_python() -> Check:
    python, _ = declared_requirements()
    version = ".".join(map(str, sys.version_info[:3]))
    minimum = python.removeprefix(">=").strip()
    if minimum and not at_least(version, minimum):
        return Check("python", FAIL, f"{version} ({sys.executable}); kexp needs {python}", f"use Python {minimum} or newer")
    return Check("python", OK, f"{version} ({sys.executable})")


def check_tensorflow() -> tuple[list[Check], Any]:
    """TensorFlow's and Keras' version checks, and the imported tensorflow module (None if it would not import)."""
    _, minimums = declared_requirements()
    checks, tf = [], None
    for name in ("tensorflow", "keras"):
        minimum = minimums.get(name, "0")
        install = f"pip install -U '{name}>={minimum}'"
        try:
            module = __import__(name)
        except Exception as exc:  # a broken install raises more than ImportError (missing shared libraries, ABI mismatch)
            checks.append(Check(name, FAIL, f"does not import: {' '.join(str(exc).split())[:200]}", install))
            continue
        tf = module if name == "tensorflow" else tf
        version = getattr(module, "__version__", "unknown")
        if not at_least(version, minimum):
            checks.append(Check(name, FAIL, f"{version}; kexp needs {name}>={minimum}", install))
        else:
            checks.append(Check(name, OK, f"{version} (kexp needs >={minimum})"))
    return checks, tf


# --- GPUs -----------------------------------------------------------------------------------


def find_nvidia_driver() -> str | None:
    """What shows an NVIDIA driver is installed: nvidia-smi's GPU list, else /proc/driver/nvidia; None if neither."""
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"nvidia-smi (which failed: {exc})"
        if done.returncode != 0:
            return f"nvidia-smi (which failed: {' '.join((done.stderr or done.stdout).split())[:160]})"
        gpus = [line.split(", ") for line in done.stdout.strip().splitlines() if line.strip()]
        return "; ".join(f"{g[0]} (driver {g[-1]})" for g in gpus) or "nvidia-smi (no GPU listed)"
    if Path("/proc/driver/nvidia").exists():
        return "an NVIDIA driver (/proc/driver/nvidia)"
    return None


def check_gpus(tf: Any, driver: str | None) -> Check:
    """The GPUs TensorFlow sees; when a driver is there but TensorFlow sees none, why and what to do."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return Check("gpus", OK, ", ".join(describe_gpu(tf, gpu) for gpu in gpus))
    if driver is None:
        return Check("gpus", OK, "none: no NVIDIA driver on this machine; training runs on the CPU")
    if not tf.test.is_built_with_cuda():
        return Check("gpus", WARN, f"none visible to TensorFlow, which is a CPU-only build; found {driver}", GPU_PACKAGE_FIX)
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return Check("gpus", WARN, f"none visible: CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU; found {driver}", "unset CUDA_VISIBLE_DEVICES, or list the GPUs to use")
    cuda = dict(tf.sysconfig.get_build_info()).get("cuda_version", "?")
    return Check(
        "gpus",
        WARN,
        f"none visible to TensorFlow (built for CUDA {cuda}); found {driver}: its CUDA libraries are missing or the driver is too old for CUDA {cuda}",
        f"{GPU_PACKAGE_FIX}; check that the driver supports CUDA {cuda} (nvidia-smi); TF_CPP_MIN_LOG_LEVEL=0 kexp doctor shows TensorFlow's own reason",
    )


def describe_gpu(tf: Any, gpu: Any) -> str:
    try:
        details = tf.config.experimental.get_device_details(gpu)
    except Exception:  # details are a nicety; the device itself was found
        details = {}
    name = details.get("device_name", gpu.name)
    capability = details.get("compute_capability")
    return f"{gpu.name.removeprefix('/physical_device:')} {name}" + (f" (compute {capability[0]}.{capability[1]})" if capability else "")


def check_cuda_build(tf: Any) -> Check:
    """The CUDA and cuDNN versions this TensorFlow was built against (what the driver must support)."""
    info = dict(tf.sysconfig.get_build_info())
    if info.get("is_cuda_build"):
        return Check("cuda build", OK, f"CUDA {info.get('cuda_version', '?')}, cuDNN {info.get('cudnn_version', '?')}")
    if info.get("is_rocm_build"):
        return Check("cuda build", OK, f"ROCm {info.get('rocm_version', '?')} (AMD GPUs)")
    return Check("cuda build", OK, "none: a CPU-only TensorFlow")


# --- NLTK -----------------------------------------------------------------------------------


def check_nltk_corpus(name: str) -> Check:
    """Found as kexp/text.py looks for it: NLTK's search path (NLTK_DATA first), as a folder or a zip."""
    from kexp.text import OFFLINE_ENV

    try:
        import nltk
    except Exception as exc:
        return Check(f"nltk {name}", FAIL, f"nltk does not import: {exc}", "pip install 'nltk>=3.8'")
    fix = f"python -m nltk.downloader {name}, or set NLTK_DATA to a folder holding corpora/{name}.zip"
    for resource in (f"corpora/{name}", f"corpora/{name}.zip"):
        try:
            return Check(f"nltk {name}", OK, str(nltk.data.find(resource)).removesuffix(f"/{name}/"))
        except LookupError:
            pass
        except (OSError, zipfile.BadZipFile) as exc:  # a truncated download: NLTK finds the zip but cannot open it
            return Check(f"nltk {name}", FAIL, f"{resource} is damaged: {exc}", f"delete it, then {fix}")
    needed_by = "text option stopwords: true" if name == "stopwords" else "text option lemmatize: true"
    looked = ", ".join(nltk.data.path[:2]) + (f" and {len(nltk.data.path) - 2} more" if len(nltk.data.path) > 2 else "")
    if os.environ.get(OFFLINE_ENV):
        return Check(f"nltk {name}", FAIL, f"not found (looked in {looked}); {OFFLINE_ENV} is set, so kexp will not download it", fix)
    return Check(f"nltk {name}", WARN, f"not found (looked in {looked}); needed by {needed_by}, which downloads it on first use when online", fix)


# --- data and runs --------------------------------------------------------------------------


def describe_data_dir(cli_value: Path | None) -> tuple[Path, str]:
    """The data directory kexp would use and where that choice came from."""
    from kexp.datasets.base import DATA_DIR_ENV, resolve_data_dir

    origin = "--data-dir" if cli_value is not None else f"${DATA_DIR_ENV}" if os.environ.get(DATA_DIR_ENV) else "the default"
    return resolve_data_dir(cli_value), origin


def check_data(cli_value: Path | None) -> list[Check]:
    """The data directory itself, then one check per data set `kexp data fetch` knows."""
    from kexp.datasets.base import DATA_DIR_ENV
    from kexp.fetch import SOURCES

    data_dir, origin = describe_data_dir(cli_value)
    where = f"{os.path.abspath(data_dir)} (from {origin})"
    if not data_dir.is_dir():
        return [Check("data directory", FAIL, f"{where} does not exist",
                      f"point --data-dir or {DATA_DIR_ENV} at the folder holding the data, or create it and run `kexp data fetch pima`")]
    checks = [Check("data directory", OK, f"{where}; csv and text_csv read your own files, synthetic needs none")]
    return checks + [check_dataset(name, data_dir) for name in sorted(SOURCES)]


def check_dataset(name: str, data_dir: Path) -> Check:
    """ok: every file there (and matching the published SHA-256 where one is known); warn: absent or differing; fail: half there."""
    from kexp.fetch import check_files, dataset_state

    files = check_files(name, data_dir)
    state = dataset_state(files)
    fetch = f"kexp data fetch {name}"
    if state == "missing":
        names = ", ".join(f.path.name for f in files if f.needed)
        return Check(f"data {name}", WARN, f"not in the data directory ({names})", f"{fetch} when you need it")
    if state == "incomplete":
        absent = [f"{f.path.name} {f.state}" + (f" ({f.problem})" if f.problem else "") for f in files
                  if f.state == "unreadable" or (f.needed and f.state == "missing")]
        return Check(f"data {name}", FAIL, f"incomplete: {', '.join(absent)}; kexp cannot read {name}", fetch)
    if state == "differs":
        # it reads whole (archives are decompressed to their end to know): a re-packed or edited copy
        # kexp can use, so no fetch is suggested, which would overwrite it
        return Check(f"data {name}", WARN, f"{describe_files(files)}; every file reads whole, so kexp uses them",
                     "none needed (each run records the hashes it read)")
    return Check(f"data {name}", OK, describe_files(files))


def describe_files(files: list[Any]) -> str:
    """'4 files, 11,369,320 B; t10k-images-idx3-ubyte.gz is not the published file (sha256 8d4221…)' (the file's name when there is one)."""
    present = [f for f in files if f.state != "missing"]
    names = present[0].path.name if len(present) == 1 else f"{len(present)} files"
    differ = [f for f in present if f.state == "differs"]
    if differ:
        which = f"{names} is" if len(present) == 1 else f"{', '.join(f.path.name for f in differ)} {'is' if len(differ) == 1 else 'are'}"
        verdict = f"{which} not the published file (sha256 {', '.join((f.sha256 or '')[:12] + '…' for f in differ)})"
    elif any(f.state == "valid" for f in present):
        verdict = "SHA-256 matches the published download"
    else:
        verdict = "no published SHA-256 to compare"
    return f"{names}, {sum(f.bytes for f in present):,} B; {verdict}"


def check_runs_dir(runs_dir: Path) -> Check:
    """Whether run directories can be made there, probed as `kexp train` does (never creating runs_dir itself)."""
    from kexp.errors import RunDirError
    from kexp.run.dirs import check_runs_dir as probe_runs_dir

    where = os.path.abspath(runs_dir)
    try:
        probe_runs_dir(runs_dir)
    except RunDirError as exc:
        return Check("runs directory", FAIL, str(exc).rsplit("; choose another", 1)[0], "choose a writable folder with --runs-dir, or fix its permissions")
    if Path(runs_dir).is_dir():
        return Check("runs directory", OK, f"{where}: writable")
    parent = next(p for p in Path(runs_dir).absolute().parents if p.exists())
    return Check("runs directory", OK, f"{where} does not exist yet; kexp train creates it in {parent}, which is writable")


def failed(checks: list[Check]) -> bool:
    return any(check.status == FAIL for check in checks)
