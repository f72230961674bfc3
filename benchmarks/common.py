"""Helpers the benchmark scripts share (run them as `python benchmarks/<script>.py`)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def write_result(name: str, data) -> Path:
    """benchmarks/results/<name>.json, the file each script's numbers are read from."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def printed_run_dir(kexp_stdout: str) -> Path:
    """The run directory that `kexp train` printed last."""
    return Path(re.findall(r"run directory: (\S+)", kexp_stdout)[-1])


def run_metrics(kexp_stdout: str) -> dict:
    """metrics.json of the run directory that `kexp train` printed."""
    return json.loads((printed_run_dir(kexp_stdout) / "metrics.json").read_text())


def peak_rss_mb(time_v_stderr: str) -> int:
    """Peak resident memory from `/usr/bin/time -v` output."""
    return round(int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_v_stderr).group(1)) / 1024)


def environment() -> dict[str, str]:
    """The caller's environment with data paths made absolute (processes run with cwd at the repo root)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_USAGE_STATS_ENABLED": "0"}
    for key in ("KEXP_DATA_DIR", "NLTK_DATA"):
        if env.get(key):
            env[key] = str(Path(env[key]).resolve())
    return env


STARTED: list["Proc"] = []  # every process a script started, killed (with its group) when it ends


class Proc:
    """A process in its own process group, its output in files (a full pipe would stall it)."""

    def __init__(self, args: list[str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = logs / "stdout.txt", logs / "stderr.txt"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen(args, cwd=ROOT, env=environment(), stdout=out, stderr=err, start_new_session=True)
        self.started = time.monotonic()
        STARTED.append(self)

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill_group(self) -> None:
        """SIGKILL the process and whatever is left in its group (its group id is its pid)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.wait(30)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def tail(self, lines: int = 5) -> list[str]:
        """The last lines of stderr without /usr/bin/time's report."""
        text = self.stderr.split("\tCommand being timed:")[0]
        return [line for line in text.strip().splitlines() if line.strip()][-lines:]

    def fail(self, what: str) -> None:
        self.kill_group()
        sys.exit(f"{what}\nstdout:\n{self.stdout[-2000:]}\nstderr:\n{self.stderr[-3000:]}")
