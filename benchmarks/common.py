"""Helpers the benchmark scripts share (run them as `python benchmarks/<script>.py`)."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def write_result(name: str, data) -> Path:
    """benchmarks/results/<name>.json, the file each script's numbers are read from."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def run_metrics(kexp_stdout: str) -> dict:
    """metrics.json of the run directory that `kexp train` printed."""
    run_dir = Path(re.search(r"run directory: (\S+)", kexp_stdout).group(1))
    return json.loads((run_dir / "metrics.json").read_text())


def peak_rss_mb(time_v_stderr: str) -> int:
    """Peak resident memory from `/usr/bin/time -v` output."""
    return round(int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_v_stderr).group(1)) / 1024)
