"""Train tutorial configs and tabulate their metrics, time and peak memory.

    KEXP_DATA_DIR=../shared/data NLTK_DATA=../shared/nltk_data python benchmarks/tutorials.py \
        [configs/mnist_mlp.yaml "configs/mnist_cnn.yaml --set train.epochs=3" ...]

Each argument is a config plus optional kexp arguments (default: every tutorial config).
Each runs as `kexp train` under /usr/bin/time -v; writes benchmarks/results/tutorials.json.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["configs/pima.yaml", "configs/sms_spam.yaml", "configs/imdb.yaml", "configs/imdb_dropout.yaml",
           "configs/mnist_mlp.yaml", "configs/mnist_cnn.yaml --set train.epochs=3"]


def main() -> None:
    runs = tempfile.mkdtemp(prefix="kexp-bench-runs-")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out_path = ROOT / "benchmarks" / "results" / "tutorials.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    for item in sys.argv[1:] or DEFAULT:
        args = shlex.split(item)
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "kexp", "train", *args, "--runs-dir", runs]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{item} failed:\n{done.stderr[-3000:]}")
        run_dir = Path(re.search(r"run directory: (\S+)", done.stdout).group(1))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
        results[item] = {
            "command": "kexp train " + item,
            "train": metrics["train"],
            "test": metrics["test"],
            "epochs": metrics["epochs_completed"],
            "fit_seconds": round(metrics["fit_seconds"], 1),
            "wall_seconds": round(metrics["wall_seconds"], 1),
            "peak_rss_mb": round(peak_kb / 1024),
        }
        print(json.dumps({item: results[item]}), flush=True)
    out_path.parent.mkdir(exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
