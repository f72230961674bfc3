"""Wall time and accuracy of `kexp train configs/pima.yaml` against the plain Keras script.

    KEXP_DATA_DIR=../shared/data python benchmarks/pima_vs_keras.py [--repeats 3]

Three commands: the plain script, kexp with the config as written (a whole epoch per
TensorFlow call), and kexp with steps_per_execution=1 (the same call pattern as the
script). Each repeat runs all as fresh processes (TensorFlow start-up included), alternating
which goes first, and the result is written to benchmarks/results/pima_vs_keras.json.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, run_metrics, write_result


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("KEXP_DATA_DIR", "data"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    runs_dir = tempfile.mkdtemp(prefix="kexp-bench-runs-")
    baseline = [sys.executable, "benchmarks/baselines/pima_keras.py", str(data_dir / "pima-indians-diabetes.data.csv")]
    kexp_cmd = [sys.executable, "-m", "kexp", "train", "configs/pima.yaml", "--runs-dir", runs_dir, "--data-dir", str(data_dir)]
    kexp_plain = kexp_cmd + ["--set", "train.steps_per_execution=1"]
    rows = {"keras": [], "kexp": [], "kexp_steps_per_execution_1": []}
    for i in range(args.repeats):
        order = [("keras", baseline), ("kexp", kexp_cmd), ("kexp_steps_per_execution_1", kexp_plain)]
        for name, cmd in order if i % 2 == 0 else order[::-1]:
            seconds, out = timed(cmd, env)
            if name == "keras":
                accuracy = float(re.search(r"Accuracy: ([\d.]+)", out).group(1)) / 100
            else:
                accuracy = run_metrics(out)["train"]["accuracy"]
            rows[name].append({"seconds": round(seconds, 2), "accuracy": round(accuracy, 4)})
            print(f"{name:6s} run {i + 1}: {seconds:6.1f} s  accuracy {accuracy:.4f}", flush=True)
    summary = {name: {"median_seconds": statistics.median(r["seconds"] for r in runs), "runs": runs} for name, runs in rows.items()}
    for name in ("kexp", "kexp_steps_per_execution_1"):
        summary[f"{name}_over_keras_time_ratio"] = round(summary[name]["median_seconds"] / summary["keras"]["median_seconds"], 3)
    write_result("pima_vs_keras", summary)
    print(json.dumps({k: (v if not isinstance(v, dict) else v["median_seconds"]) for k, v in summary.items()}, indent=2))


if __name__ == "__main__":
    main()
