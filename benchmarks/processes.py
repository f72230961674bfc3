"""One run over two local processes (backend jax, kexp train --processes 2) against one process, same spec, same machine.

    KEXP_DATA_DIR=../shared/data python benchmarks/processes.py [--epochs 2] [--batch-size 32]

Trains configs/mnist_mlp.yaml under jax in one process, then over two (train.batch_size is the global
batch either way), then 3 epochs in one process; writes benchmarks/results/processes.json with each
run's test accuracy, fit and wall seconds, and the two-process cost as a ratio of fit times.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, write_result


def train(runs: Path, epochs: int, batch_size: int, processes: int) -> dict:
    cmd = [sys.executable, "-m", "kexp", "train", "configs/mnist_mlp.yaml", "--set", "backend=jax", "--set", f"train.epochs={epochs}",
           "--set", f"train.batch_size={batch_size}", "--runs-dir", str(runs), "--log-format", "plain"]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    run = max(runs.iterdir(), key=lambda p: p.stat().st_mtime)
    metrics, env = json.loads((run / "metrics.json").read_text()), json.loads((run / "env.json").read_text())
    return {"command": " ".join(cmd[3:]), "processes": env["processes"], "epochs": epochs, "batch_size": batch_size,
            "test_accuracy": round(metrics["test"]["accuracy"], 4), "fit_seconds": round(metrics["fit_seconds"], 1),
            "wall_seconds": round(metrics["wall_seconds"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kexp-bench-processes-") as runs:
        one = train(Path(runs) / "one", args.epochs, args.batch_size, 1)
        two = train(Path(runs) / "two", args.epochs, args.batch_size, 2)
        three_epochs = train(Path(runs) / "three", 3, args.batch_size, 1)
    result = {"one_process": one, "two_processes": two, "one_process_3_epochs": three_epochs,
              "two_process_fit_time_ratio": round(two["fit_seconds"] / one["fit_seconds"], 2),
              "note": "ratio > 1: two processes on this machine's cores took longer than one"}
    print(json.dumps(result, indent=1))
    write_result("processes", result)


if __name__ == "__main__":
    main()
