"""kexp against the tutorials' own scripts, as whole processes, one after the other.

    KEXP_DATA_DIR=../shared/data NLTK_DATA=../shared/nltk_data python benchmarks/run.py [--only pima,sms] [--repeat N]

For each workload and each repeat (seed 0, 1, ...) it runs the plain Keras script written the
way the tutorial writes it (benchmarks/baselines/) and then `kexp train` on the matching
config with the same seed, alternating, so a slow minute of the machine hits both. Each
process is timed from start to exit, with its peak RSS (`/usr/bin/time -v`), its metric, and
its start-up (process start to the first training batch). IMDB runs twice for kexp: with
an empty token cache (cold) and with the cache a previous run left (warm); the baseline has no
cache, so its runs serve both rows.

Writes benchmarks/results/run.json (every process, and a summary per workload) and
benchmarks/run.md (the table). Results of workloads not run this time are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, environment, peak_rss_mb, write_result  # noqa: E402


@dataclass(frozen=True)
class Workload:
    baseline: str  # script in benchmarks/baselines/
    data: str  # its argument, under the data directory
    config: str
    split: str  # where metrics.json has the metric the tutorial reports
    sets: tuple[str, ...] = ()
    cache: str | None = None  # kexp's token cache: cold (emptied) or warm
    note: str = ""


WORKLOADS = {
    "pima": Workload("pima_keras.py", "pima-indians-diabetes.data.csv", "configs/pima.yaml", "train", note="accuracy on the training rows, as the tutorial"),
    "mnist_mlp": Workload("mnist_mlp_keras.py", "mnist", "configs/mnist_mlp.yaml", "test"),
    "mnist_cnn": Workload("mnist_cnn_keras.py", "mnist", "configs/mnist_cnn.yaml", "test", sets=("train.epochs=3",), note="3 epochs"),
    "imdb_cold": Workload("imdb_keras.py", "aclImdb_v1.tar.gz", "configs/imdb.yaml", "test", cache="cold", note="from the raw archive, empty token cache"),
    "imdb_warm": Workload("imdb_keras.py", "aclImdb_v1.tar.gz", "configs/imdb.yaml", "test", cache="warm", note="token cache from an earlier run"),
    "sms": Workload("sms_keras.py", "sms/SMSSpamCollection", "configs/sms_spam.yaml", "test"),
}


@dataclass
class Measured:
    wall_seconds: float
    peak_rss_mb: int
    metric: float | None
    startup_seconds: float | None
    extra: dict = field(default_factory=dict)


def timed(args: list[str], env: dict[str, str], logs: Path) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a whole process under /usr/bin/time -v; returns it, its wall seconds and its start (epoch seconds)."""
    started_at, clock = time.time(), time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - clock
    logs.parent.mkdir(parents=True, exist_ok=True)
    logs.with_suffix(".out").write_text(done.stdout)
    logs.with_suffix(".err").write_text(done.stderr)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({done.returncode}); see {logs}.err:\n{done.stderr[-2000:]}")
    return done, wall, started_at


def run_baseline(work: Workload, seed: int, data_dir: Path, logs: Path) -> Measured:
    script = ROOT / "benchmarks" / "baselines" / work.baseline
    done, wall, started_at = timed([sys.executable, str(script), str(data_dir / work.data), str(seed)], environment(), logs)
    found = dict(re.findall(r"^BENCH (\w+) (\S+)$", done.stdout, re.M))
    first = float(found["first_batch"]) - started_at if "first_batch" in found else None
    return Measured(wall, peak_rss_mb(done.stderr), float(found["metric"]), first)


def run_kexp(work: Workload, seed: int, runs: Path, cache: Path | None, logs: Path) -> Measured:
    env = environment()
    if cache is not None:
        env["KEXP_CACHE_DIR"] = str(cache)
    sets = [arg for s in (*work.sets, f"seed={seed}") for arg in ("--set", s)]
    args = [sys.executable, "-m", "kexp", "train", work.config, "--runs-dir", str(runs), "--log-format", "plain", *sets]
    done, wall, _ = timed(args, env, logs)
    run_dir = Path(re.search(r"run directory: (\S+)", done.stdout).group(1))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    env_json = json.loads((run_dir / "env.json").read_text())
    shutil.rmtree(run_dir)
    extra = {"fit_seconds": metrics["fit_seconds"], "steps_per_execution": env_json.get("steps_per_execution")}
    return Measured(wall, peak_rss_mb(done.stderr), metrics[work.split]["accuracy"], (metrics.get("timing") or {}).get("startup_seconds"), extra)


def summarize(records: list[Measured]) -> dict:
    metrics = [r.metric for r in records if r.metric is not None]
    startups = [r.startup_seconds for r in records if r.startup_seconds is not None]
    return {
        "metric_mean": statistics.fmean(metrics) if metrics else None,
        "metric_std": statistics.stdev(metrics) if len(metrics) > 1 else 0.0,
        "wall_median": statistics.median(r.wall_seconds for r in records),
        "peak_rss_mb_median": statistics.median(r.peak_rss_mb for r in records),
        "startup_median": statistics.median(startups) if startups else None,
        "runs": [vars(r) for r in records],
    }


def bench(name: str, work: Workload, repeat: int, data_dir: Path, scratch: Path, baselines: dict[str, list[Measured]]) -> dict:
    """Baseline and kexp alternately, one seed per repeat; a baseline shared by two rows runs once."""
    warm = scratch / "cache-warm"
    if work.cache == "warm" and not warm.exists():  # fill the cache once, untimed
        run_kexp(work, 0, scratch / "runs", warm, scratch / "logs" / f"{name}-warmup")
    kexp_runs = []
    for seed in range(repeat):
        key = f"{work.baseline}:{seed}"
        if key not in baselines:
            print(f"{name} seed {seed}: baseline {work.baseline}", flush=True)
            baselines[key] = [run_baseline(work, seed, data_dir, scratch / "logs" / f"{name}-baseline-{seed}")]
        cache = warm if work.cache == "warm" else (scratch / f"cache-cold-{seed}" if work.cache == "cold" else None)
        print(f"{name} seed {seed}: kexp train {work.config}", flush=True)
        kexp_runs.append(run_kexp(work, seed, scratch / "runs", cache, scratch / "logs" / f"{name}-kexp-{seed}"))
    base = summarize([baselines[f"{work.baseline}:{s}"][0] for s in range(repeat)])
    ours = summarize(kexp_runs)
    return {"config": work.config, "sets": list(work.sets), "metric": f"{work.split} accuracy", "note": work.note, "repeats": repeat,
            "seeds": list(range(repeat)), "baseline": base, "kexp": ours, "speedup": base["wall_median"] / ours["wall_median"],
            "rss_ratio": ours["peak_rss_mb_median"] / base["peak_rss_mb_median"]}


def markdown(results: dict) -> str:
    def metric(side: dict) -> str:
        return f"{side['metric_mean']:.4f} ± {side['metric_std']:.4f}"

    def startup(side: dict) -> str:
        return "-" if side["startup_median"] is None else f"{side['startup_median']:.1f}"

    lines = [
        "# kexp against the tutorials' scripts (`python benchmarks/run.py`)",
        "",
        f"{results['machine']['cpus']} CPUs, TensorFlow {results['machine']['tensorflow']}, {results['machine']['date']}. "
        "Whole processes, alternating; metric: mean ± std over the seeds; times and memory: medians.",
        "",
        "| workload | seeds | metric | baseline | kexp | wall baseline (s) | wall kexp (s) | speed-up | peak RSS baseline / kexp (MB) | start-up baseline / kexp (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["workloads"].items():
        b, k = r["baseline"], r["kexp"]
        lines.append(f"| {name} | {r['repeats']} | {r['metric']} | {metric(b)} | {metric(k)} | {b['wall_median']:.1f} | {k['wall_median']:.1f} | "
                     f"{r['speedup']:.2f}x | {b['peak_rss_mb_median']:,.0f} / {k['peak_rss_mb_median']:,.0f} | {startup(b)} / {startup(k)} |")
    return "\n".join(lines) + "\n"


def machine() -> dict:
    version = subprocess.run([sys.executable, "-c", "import tensorflow as tf; print(tf.__version__)"], capture_output=True, text=True,
                             env=environment()).stdout.strip()
    return {"cpus": os.cpu_count(), "tensorflow": version, "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help=f"comma-separated, from {', '.join(WORKLOADS)}")
    parser.add_argument("--repeat", type=int, default=1, help="seeds 0..N-1 for each side")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        sys.exit(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    data_dir = Path(os.environ.get("KEXP_DATA_DIR", "data")).resolve()
    previous = RESULTS / "run.json"
    results = json.loads(previous.read_text()) if previous.exists() else {"workloads": {}}
    results["machine"] = machine()
    baselines: dict[str, list[Measured]] = {}
    with tempfile.TemporaryDirectory(prefix="kexp-bench-") as scratch:
        for name in names:
            results["workloads"][name] = bench(name, WORKLOADS[name], args.repeat, data_dir, Path(scratch), baselines)
            results["workloads"] = {n: results["workloads"][n] for n in WORKLOADS if n in results["workloads"]}
            write_result("run", results)
            (ROOT / "benchmarks" / "run.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
