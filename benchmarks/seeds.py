"""Train one config over several seeds; report each test accuracy and the mean.

    KEXP_DATA_DIR=../shared/data python benchmarks/seeds.py configs/imdb_dropout.yaml --seeds 1 2 3
    KEXP_DATA_DIR=../shared/data python benchmarks/seeds.py configs/mnist_mlp.yaml --seeds 1 2 3

Writes benchmarks/results/seeds_<config name>.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, run_metrics, write_result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    runs = tempfile.mkdtemp(prefix="kexp-bench-runs-")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    rows = []
    for seed in args.seeds:
        cmd = [sys.executable, "-m", "kexp", "train", args.config, "--set", f"seed={seed}", "--runs-dir", runs]
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
        metrics = run_metrics(out)
        rows.append({"seed": seed, "test_accuracy": round(metrics["test"]["accuracy"], 4), "wall_seconds": round(metrics["wall_seconds"], 1)})
        print(rows[-1], flush=True)
    accuracies = [r["test_accuracy"] for r in rows]
    summary = {"config": args.config, "runs": rows, "mean_test_accuracy": round(statistics.mean(accuracies), 4),
               "min_test_accuracy": min(accuracies), "max_test_accuracy": max(accuracies)}
    write_result(f"seeds_{Path(args.config).stem}", summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
