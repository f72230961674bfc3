"""kexp against the tutorials' own scripts, as whole processes, alternating.

    KEXP_DATA_DIR=../shared/data NLTK_DATA=../shared/nltk_data python benchmarks/run.py [--only pima,sms] [--repeat N] [--skip-baseline]

For each workload and each repeat (seed 0, 1, ...) it runs the plain Keras script written the
way the tutorial writes it (benchmarks/baselines/, `--seed S`) and then `kexp train` on the
matching config (`--set seed=S`), alternating baseline, kexp, baseline, kexp, so a slow minute
of the machine hits both sides. Each process is measured from start to exit: wall seconds, peak
RSS (`/usr/bin/time -v`), its metric, and its start-up (process start to the first training
batch; baselines print it from a one-line callback, kexp records `timing.startup_seconds`).

kexp's token cache lives in a scratch folder: every kexp run starts with it empty (as the
baselines redo their preprocessing every time), except imdb_warm, which reuses the tokens an
earlier run cached (imdb_cold's, or one untimed warm-up). The baseline has no cache, so one run
per seed serves both IMDB rows. Run directories and caches are removed at the end.

Writes benchmarks/results/run.json (every process, a summary per workload, the machine) and
benchmarks/run.md (the table). Workloads not run this time keep their previous results;
--skip-baseline reruns only kexp and keeps the previous baseline numbers of the same seeds.
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
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, environment, peak_rss_mb, printed_run_dir, write_result  # noqa: E402

TABLE = ROOT / "benchmarks" / "run.md"


@dataclass(frozen=True)
class Workload:
    baseline: str  # script in benchmarks/baselines/
    data: str  # its argument, relative to the data directory
    config: str
    split: str  # the part of metrics.json holding the metric the tutorial reports
    sets: tuple[str, ...] = ()
    warm_cache: bool = False  # kexp reuses cached tokens (else its cache starts empty)
    note: str = ""


WORKLOADS = {
    "pima": Workload("pima_keras.py", "pima-indians-diabetes.data.csv", "configs/pima.yaml", "train", note="accuracy on the training rows, as the tutorial"),
    "mnist_mlp": Workload("mnist_mlp_keras.py", "mnist", "configs/mnist_mlp.yaml", "test"),
    "mnist_cnn": Workload("mnist_cnn_keras.py", "mnist", "configs/mnist_cnn.yaml", "test", sets=("train.epochs=3",), note="3 epochs"),
    "imdb_cold": Workload("imdb_keras.py", "aclImdb_v1.tar.gz", "configs/imdb.yaml", "test", note="from the raw archive; kexp's token cache empty"),
    "imdb_warm": Workload("imdb_keras.py", "aclImdb_v1.tar.gz", "configs/imdb.yaml", "test", warm_cache=True, note="kexp's tokens cached by an earlier run"),
    "sms": Workload("sms_keras.py", "sms/SMSSpamCollection", "configs/sms_spam.yaml", "test", note="kexp's token cache empty"),
}


@dataclass
class Measured:
    """One process: what the table is made of."""

    seed: int
    wall_seconds: float
    peak_rss_mb: int
    metric: float | None
    startup_seconds: float | None
    extra: dict = field(default_factory=dict)


def timed(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a whole process under /usr/bin/time -v (peak RSS of that process alone).

    Returns it, its wall seconds (start to exit) and the epoch time just before it started,
    which a baseline's `BENCH first_batch` time is measured from.
    """
    started_at, clock = time.time(), time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - clock
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-1500:]}\n{done.stderr[-2500:]}")
    return done, wall, started_at


def run_baseline(work: Workload, seed: int, data_dir: Path) -> Measured:
    """The tutorial's script; its metric and first batch come from its `BENCH` lines."""
    script = ROOT / "benchmarks" / "baselines" / work.baseline
    done, wall, started_at = timed([sys.executable, str(script), str(data_dir / work.data), "--seed", str(seed)], environment())
    found = dict(re.findall(r"^BENCH (\w+) (\S+)$", done.stdout, re.M))
    startup = float(found["first_batch"]) - started_at if "first_batch" in found else None
    return Measured(seed, wall, peak_rss_mb(done.stderr), float(found["metric"]) if "metric" in found else None, startup)


def run_kexp(work: Workload, seed: int, runs: Path, cache: Path) -> Measured:
    """`kexp train` on the config; the metric and start-up come from its run's metrics.json."""
    env = {**environment(), "KEXP_CACHE_DIR": str(cache)}
    sets = [arg for s in (*work.sets, f"seed={seed}") for arg in ("--set", s)]
    args = [sys.executable, "-m", "kexp", "train", work.config, "--runs-dir", str(runs), "--log-format", "plain", *sets]
    done, wall, _ = timed(args, env)
    run_dir = printed_run_dir(done.stdout)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    env_json = json.loads((run_dir / "env.json").read_text())
    epochs = json.loads((run_dir / "history.json").read_text()).get("epoch_seconds") or []
    shutil.rmtree(run_dir)
    extra = {
        "fit_seconds": metrics.get("fit_seconds"),
        "epoch_seconds_sum": sum(epochs),  # far below fit_seconds: time lost outside the epochs (it was 25 s for the CNN)
        "steps_per_execution": env_json.get("steps_per_execution"),
        "tokens_from_cache": (metrics.get("data") or {}).get("tokens_from_cache"),
    }
    startup = (metrics.get("timing") or {}).get("startup_seconds")  # null until kexp records it
    return Measured(seed, wall, peak_rss_mb(done.stderr), metrics[work.split]["accuracy"], startup, extra)


def summarize(records: list[Measured]) -> dict:
    """Metric: mean and std over the seeds; times and memory: medians (robust to one slow run)."""
    metrics = [r.metric for r in records if r.metric is not None]
    startups = [r.startup_seconds for r in records if r.startup_seconds is not None]
    return {
        "metric_mean": statistics.fmean(metrics) if metrics else None,
        "metric_std": statistics.stdev(metrics) if len(metrics) > 1 else 0.0,
        "wall_median": statistics.median(r.wall_seconds for r in records),
        "peak_rss_mb_median": statistics.median(r.peak_rss_mb for r in records),
        "startup_median": statistics.median(startups) if startups else None,
        "runs": [asdict(r) for r in records],
    }


def previous_baseline(previous: dict | None, seeds: list[int]) -> list[Measured] | None:
    """The baseline runs an earlier run.json has for exactly these seeds (for --skip-baseline)."""
    if not previous or not previous.get("baseline"):
        return None
    by_seed = {run.get("seed", seed): run for seed, run in zip(previous["seeds"], previous["baseline"]["runs"])}
    if not all(s in by_seed for s in seeds):
        return None
    return [Measured(**{**by_seed[s], "seed": s}) for s in seeds]


def kexp_cache(scratch: Path, name: str, work: Workload, seed: int) -> Path:
    """The token cache a kexp run gets: a new empty folder, or the config's shared warm one.

    A warm cache is filled by an earlier run of the same config (imdb_cold's last run, whose
    folder is kept under the config's name) or, failing that, by one untimed warm-up run.
    """
    shared = scratch / "cache" / Path(work.config).stem
    if not work.warm_cache:
        shutil.rmtree(shared, ignore_errors=True)  # empty, and left filled for a warm row after it
        return shared
    if not shared.exists():
        print(f"{name}: untimed warm-up run to fill the token cache", flush=True)
        run_kexp(work, seed, scratch / "runs", shared)
    return shared


def bench(name: str, work: Workload, seeds: list[int], data_dir: Path, scratch: Path, baselines: dict, previous: dict | None, skip_baseline: bool) -> dict:
    """Baseline and kexp alternately, one seed at a time; a baseline two rows share runs once."""
    kexp_runs = []
    for seed in seeds:
        key = (work.baseline, seed)
        if not skip_baseline and key not in baselines:
            print(f"{name} seed {seed}: baseline {work.baseline}", flush=True)
            baselines[key] = run_baseline(work, seed, data_dir)
        cache = kexp_cache(scratch, name, work, seed)
        print(f"{name} seed {seed}: kexp train {work.config}", flush=True)
        kexp_runs.append(run_kexp(work, seed, scratch / "runs", cache))
    base_runs = previous_baseline(previous, seeds) if skip_baseline else [baselines[(work.baseline, s)] for s in seeds]
    base, ours = (summarize(base_runs) if base_runs else None), summarize(kexp_runs)
    return {
        "config": work.config, "sets": list(work.sets), "metric": f"{work.split} accuracy", "note": work.note, "repeats": len(seeds), "seeds": seeds,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "baseline_reused": skip_baseline and base is not None,
        "baseline": base, "kexp": ours,
        "speedup": base["wall_median"] / ours["wall_median"] if base else None,  # baseline median wall / kexp median wall
        "rss_ratio": ours["peak_rss_mb_median"] / base["peak_rss_mb_median"] if base else None,
    }


def markdown(results: dict) -> str:
    """benchmarks/run.md: one row per workload, then what each row measured."""

    def side(r: dict | None, fmt, key: str) -> str:
        return "-" if r is None or r[key] is None else fmt(r[key])

    def metric(r: dict | None) -> str:
        if r is None or r["metric_mean"] is None:
            return "-"
        return f"{r['metric_mean']:.4f}" if len(r["runs"]) == 1 else f"{r['metric_mean']:.4f} ± {r['metric_std']:.4f}"

    m = results["machine"]
    lines = [
        "# kexp against the tutorials' scripts (`python benchmarks/run.py`)",
        "",
        f"{m['cpus']} CPUs, TensorFlow {m['tensorflow']}, Python {m['python']}, {m['date']}. Whole processes, baseline and kexp "
        "alternating, seeds 0..N-1; metric: mean ± std over the seeds; times and memory: medians; speed-up: baseline wall / kexp wall; "
        "start-up: process start to the first training batch.",
        "",
        "| workload | metric baseline | metric kexp | wall baseline (s) | wall kexp (s) | speed-up | peak RSS baseline/kexp (MB) | start-up baseline/kexp (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["workloads"].items():
        b, k = r["baseline"], r["kexp"]
        wall, rss, sec = (lambda v: f"{v:.1f}"), (lambda v: f"{v:,.0f}"), (lambda v: f"{v:.1f}")
        speedup = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        lines.append(f"| {name} | {metric(b)} | {metric(k)} | {side(b, wall, 'wall_median')} | {side(k, wall, 'wall_median')} | {speedup} | "
                     f"{side(b, rss, 'peak_rss_mb_median')} / {side(k, rss, 'peak_rss_mb_median')} | {side(b, sec, 'startup_median')} / {side(k, sec, 'startup_median')} |")
    lines += ["", "Rows:", ""]
    for name, r in results["workloads"].items():
        sets = "".join(f" --set {s}" for s in r["sets"])
        seeds = f"seed {r['seeds'][0]}" if len(r["seeds"]) == 1 else f"seeds {r['seeds'][0]}-{r['seeds'][-1]}"
        details = [r["metric"], seeds, *([r["note"]] if r["note"] else []), *([r["date"]] if "date" in r else []), *(["baseline numbers from an earlier run"] if r.get("baseline_reused") else [])]
        lines.append(f"- {name}: `{WORKLOADS[name].baseline}` vs `kexp train {r['config']}{sets}`; {', '.join(details)}")
    return "\n".join(lines) + "\n"


def machine() -> dict:
    """Facts that decide how comparable two run.json files are."""

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return {"cpus": os.cpu_count(), "tensorflow": installed("tensorflow") or installed("tensorflow-cpu"), "keras": installed("keras"),
            "python": platform.python_version(), "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help=f"comma-separated, from {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="processes per side; seeds 0..N-1")
    parser.add_argument("--skip-baseline", action="store_true", help="run only kexp; keep the previous baseline numbers of the same seeds")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        sys.exit(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    if args.repeat < 1:
        sys.exit("--repeat must be at least 1")
    data_dir = Path(environment().get("KEXP_DATA_DIR") or ROOT / "data")
    seeds = list(range(args.repeat))
    previous_path = RESULTS / "run.json"
    results = json.loads(previous_path.read_text()) if previous_path.exists() else {}
    previous_workloads = results.get("workloads", {})
    results = {"machine": machine(), "workloads": dict(previous_workloads)}
    baselines: dict[tuple[str, int], Measured] = {}
    with tempfile.TemporaryDirectory(prefix="kexp-bench-") as scratch:
        for name in sorted(names, key=list(WORKLOADS).index):  # imdb_cold before imdb_warm: its cache serves the warm row
            results["workloads"][name] = bench(name, WORKLOADS[name], seeds, data_dir, Path(scratch), baselines, previous_workloads.get(name), args.skip_baseline)
            results["workloads"] = {n: results["workloads"][n] for n in WORKLOADS if n in results["workloads"]}
            write_result("run", results)  # after every workload, so an interrupted run keeps what it measured
            TABLE.write_text(markdown(results))
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
