"""IMDB: `kexp train configs/imdb.yaml` against the tutorial's approach, whole process.

    KEXP_DATA_DIR=../shared/data python benchmarks/imdb_vs_keras.py

Runs, each under /usr/bin/time -v: the plain script (benchmarks/baselines/imdb_keras.py),
kexp with an empty token cache, and kexp again with the cache filled. Reports wall
seconds, peak RSS and test accuracy; writes benchmarks/results/imdb_vs_keras.json.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, peak_rss_mb, run_metrics, write_result


def measured(cmd: list[str], env: dict) -> dict:
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    return {"seconds": round(seconds, 1), "peak_rss_mb": peak_rss_mb(done.stderr), "stdout": done.stdout}


def main() -> None:
    data_dir = Path(os.environ.get("KEXP_DATA_DIR", "data"))
    cache = tempfile.mkdtemp(prefix="kexp-bench-cache-")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KEXP_CACHE_DIR": cache}
    runs = tempfile.mkdtemp(prefix="kexp-bench-runs-")
    results = {}
    base = measured([sys.executable, "benchmarks/baselines/imdb_keras.py", str(data_dir / "aclImdb_v1.tar.gz")], env)
    base["test_accuracy"] = float(re.search(r"test accuracy ([\d.]+)", base["stdout"]).group(1))
    base["vectorize_seconds"] = float(re.search(r"vectorize ([\d.]+) s", base["stdout"]).group(1))
    results["keras_tutorial"] = base
    for name in ("kexp_cold_cache", "kexp_warm_cache"):
        run = measured([sys.executable, "-m", "kexp", "train", "configs/imdb.yaml", "--runs-dir", runs, "--data-dir", str(data_dir)], env)
        run["test_accuracy"] = round(run_metrics(run["stdout"])["test"]["accuracy"], 4)
        results[name] = run
    for r in results.values():
        r.pop("stdout")
    write_result("imdb_vs_keras", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
