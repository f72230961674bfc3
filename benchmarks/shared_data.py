"""A sweep's data prepared once (kexp.datasets.shared): an 8-trial IMDB sweep on an empty token cache, with and without sharing.

    KEXP_DATA_DIR=../shared/data NLTK_DATA=../shared/nltk_data python benchmarks/shared_data.py [--parallel 2] [--only shared unshared]

Workload: configs/imdb.yaml with --set train.epochs=1, swept over model.hidden_units.0 = 8, 16, ..., 64 (8 trials),
`kexp sweep --parallel P` (default 2: the case where trials used to tokenize side by side). Cases, each real processes
in one temp folder (deleted at the end):

  single    `kexp train configs/imdb.yaml --set train.epochs=1` twice on a token cache of its own: the first tokenizes
            (cold), the second is the warm single run; its start-up is the reference.
  shared    the sweep on an empty token cache (KEXP_CACHE_DIR a new folder), data shared (the default).
  unshared  the same with KEXP_SHARED_DATA=off in the driver's environment: each trial reads and prepares its own.

Start-up is metrics.json's timing.startup_seconds: process start -> the first batch trained (kexp.train.callbacks.FirstBatchClock).
Tokenizations: the shared entry's entry.json (tokens_from_cache false: the driver tokenized) plus every trial whose metrics.json
data summary says tokens_from_cache false without shared_data (it tokenized itself).
Reported: tokenizations, each trial's start-up and its ratio to the warm single run's (target: tokenized once, every ratio <= 1.2),
the driver's preparation seconds, sweep wall seconds. Writes benchmarks/results/shared_data.json (under "parallel-P", each P and case
its latest run, each case with the warm single start-up it was compared with). About 5 minutes on 2 CPU cores.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from common import RESULTS, ROOT, STARTED, Proc, printed_run_dir, write_result

CONFIG = "configs/imdb.yaml"
SET = ["--set", "train.epochs=1"]
PARAM = "model.hidden_units.0=8,16,24,32,40,48,56,64"
CASES = ["single", "shared", "unshared"]
TARGET = 1.2


def kexp(args: list[str], logs: Path, env: dict[str, str], timeout: float = 1800) -> Proc:
    """`python -m kexp ARGS` with `env` added to the benchmark environment (through env(1)), waited for; exit 0 or the script stops."""
    proc = Proc(["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "kexp", *args], logs)
    code = proc.wait(timeout)
    if code != 0:
        sys.exit(f"{' '.join(args)} exited {code}:\n{proc.stderr[-3000:]}")
    return proc


def single(tmp: Path) -> dict:
    env = {"KEXP_CACHE_DIR": str(tmp / "single-tokens")}
    runs = []
    for name in ("cold", "warm"):
        proc = kexp(["train", CONFIG, *SET, "--runs-dir", str(tmp / "single-runs")], tmp / f"single-{name}", env)
        metrics = json.loads((printed_run_dir(proc.stdout) / "metrics.json").read_text())
        runs.append({"run": name, "startup_seconds": metrics["timing"]["startup_seconds"], "wall_seconds": round(time.monotonic() - proc.started, 2),
                     "tokens_from_cache": metrics["data"].get("tokens_from_cache"), "test_accuracy": metrics["test"]["accuracy"]})
    return {"cold": runs[0], "warm": runs[1]}


def sweep(tmp: Path, name: str, parallel: int, share: bool) -> dict:
    env = {"KEXP_CACHE_DIR": str(tmp / f"{name}-tokens"), **({} if share else {"KEXP_SHARED_DATA": "off"})}
    runs = tmp / f"{name}-runs"
    proc = kexp(["sweep", CONFIG, *SET, "--param", PARAM, "--parallel", str(parallel), "--runs-dir", str(runs)], tmp / name, env)
    wall = round(time.monotonic() - proc.started, 2)
    [sweep_dir] = (runs / "sweeps").iterdir()
    entries = [json.loads(p.read_text()) for p in sorted((sweep_dir / "data-cache").glob("*/entry.json"))]
    trials = []
    for trial in json.loads((sweep_dir / "manifest.json").read_text())["trials"]:
        metrics = json.loads((sweep_dir / trial["run_dir"] / "metrics.json").read_text())
        data = metrics["data"]
        trials.append({"id": trial["id"], "hidden_units": trial["params"]["model.hidden_units.0"], "startup_seconds": metrics["timing"]["startup_seconds"],
                       "shared_data": "shared_data" in data, "tokenized": data.get("tokens_from_cache") is False and "shared_data" not in data,
                       "test_accuracy": metrics["test"]["accuracy"]})
    tokenized = sum(e.get("tokens_from_cache") is False for e in entries) + sum(t["tokenized"] for t in trials)
    return {"parallel": parallel, "wall_seconds": wall, "entries": len(entries), "tokenizations": tokenized,
            "prepare_seconds": [e.get("prepare_seconds") for e in entries], "entry_bytes": [e.get("arrays_bytes", 0) + e.get("objects_bytes", 0) for e in entries],
            "prepared_once_line": "data: prepared once" in proc.stdout, "trials": trials}


def with_ratios(case: dict, warm: float) -> dict:
    ratios = [round(t["startup_seconds"] / warm, 3) for t in case["trials"]]
    for trial, ratio in zip(case["trials"], ratios):
        trial["startup_ratio"] = ratio
    return {**case, "measured": datetime.now(UTC).isoformat(timespec="seconds"), "warm_single_startup_seconds": warm,
            "startup_ratio_max": max(ratios), "startup_ratio_median": statistics.median(ratios), "startup_within_target": max(ratios) <= TARGET}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=CASES[1:], default=CASES[1:], metavar="NAME", help="sweeps to run besides single: shared, unshared")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # run the cleanup below
    tmp = Path(tempfile.mkdtemp(prefix="kexp-bench-shared-"))
    started = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        results: dict = {"single": single(tmp)}
        warm = results["single"]["warm"]["startup_seconds"]
        for name in args.only:
            results[name] = with_ratios(sweep(tmp, name, args.parallel, share=name == "shared"), warm)
            print(f"{name}: {results[name]['tokenizations']} tokenization(s), start-up ratio max {results[name]['startup_ratio_max']} "
                  f"(median {results[name]['startup_ratio_median']}), wall {results[name]['wall_seconds']} s", flush=True)
    finally:
        for proc in STARTED:
            proc.kill_group()
        shutil.rmtree(tmp, ignore_errors=True)
    document = {"measured": started, "cpus": len(os.sched_getaffinity(0)), "config": CONFIG, "set": SET[1], "param": PARAM,
                "target": {"tokenizations": 1, "startup_ratio_max": TARGET}, "warm_single_startup_seconds": warm, **results}
    print(f"warm single start-up {warm} s; cold single {results['single']['cold']['startup_seconds']} s")
    previous = RESULTS / "shared_data.json"
    kept = json.loads(previous.read_text()) if previous.exists() else {}
    kept[f"parallel-{args.parallel}"] = {**kept.get(f"parallel-{args.parallel}", {}), **document}  # each --parallel and case its latest run
    print(f"wrote {write_result('shared_data', kept).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
