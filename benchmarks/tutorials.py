"""Train tutorial configs and tabulate their metrics, time and peak memory.

    KEXP_DATA_DIR=../shared/data NLTK_DATA=../shared/nltk_data python benchmarks/tutorials.py \
        [configs/mnist_mlp.yaml "configs/mnist_cnn.yaml --set train.epochs=3" ...]

Each argument is a config plus optional kexp arguments (default: every tutorial config).
Each runs as `kexp train` under /usr/bin/time -v; writes benchmarks/results/tutorials.json.
"""

import json
import os
import shlex
import subprocess
import sys
import tempfile

from common import ROOT, RESULTS, peak_rss_mb, run_metrics, write_result
DEFAULT = ["configs/pima.yaml", "configs/sms_spam.yaml", "configs/imdb.yaml", "configs/imdb_dropout.yaml",
           "configs/mnist_mlp.yaml", "configs/mnist_cnn.yaml --set train.epochs=3"]


def main() -> None:
    runs = tempfile.mkdtemp(prefix="kexp-bench-runs-")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    previous = RESULTS / "tutorials.json"
    results = json.loads(previous.read_text()) if previous.exists() else {}
    for item in sys.argv[1:] or DEFAULT:
        args = shlex.split(item)
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "kexp", "train", *args, "--runs-dir", runs]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{item} failed:\n{done.stderr[-3000:]}")
        metrics = run_metrics(done.stdout)
        results[item] = {
            "command": "kexp train " + item,
            "train": metrics["train"],
            "test": metrics["test"],
            "epochs": metrics["epochs_completed"],
            "fit_seconds": round(metrics["fit_seconds"], 1),
            "wall_seconds": round(metrics["wall_seconds"], 1),
            "peak_rss_mb": peak_rss_mb(done.stderr),
        }
        print(json.dumps({item: results[item]}), flush=True)
    write_result("tutorials", results)


if __name__ == "__main__":
    main()
