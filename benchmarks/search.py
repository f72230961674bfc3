"""Issue 27's measured target: TPE with ASHA pruning against the tutorial's 6-point grid, on MNIST.

    KEXP_DATA_DIR=../shared/data python benchmarks/search.py [--work /tmp/kexp-search] [--seeds 0 1 2]

configs/mnist_mlp.yaml at 6 epochs a trial (--set train.epochs=6), two trials at a time:
  grid:  --param model.hidden_units.0=10,25,50,100,150,200                (6 trials x 6 epochs)
  tpe:   --param model.hidden_units.0=10..200 --method tpe --prune asha --samples 12 --seed S, for each S
  kill:  the tpe sweep with the first seed again, its driver and running trials killed with SIGKILL
         after 4 trials ended, then `kexp sweep --resume DIR`
Target: each tpe sweep's best test accuracy within 0.3 points of the grid's best, while running at most
half of the grid-equivalent epochs (12 trials x 6 = 72, so <= 36, counted from every trial's
history.json); wall times beside the grid's. After the kill: 12 distinct trials numbered 0-11 and the
trials that had ended byte-identical (history.json, metrics.json).
Numbers go to benchmarks/results/search.json.
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, environment, write_result

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mnist_mlp.yaml"
EPOCHS = 6
GRID = "model.hidden_units.0=10,25,50,100,150,200"
TPE = ["--param", "model.hidden_units.0=10..200", "--method", "tpe", "--prune", "asha", "--samples", "12"]


def sweep_command(runs: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "kexp", "sweep", str(CONFIG), "--set", f"train.epochs={EPOCHS}", "--parallel", "2",
            "--runs-dir", str(runs), *args]


def only_sweep(runs: Path) -> Path:
    [sweep_dir] = (runs / "sweeps").iterdir()
    return sweep_dir


def sweep_numbers(sweep_dir: Path) -> dict:
    """Best test accuracy, epochs run (every trial's history.json) and states, from the sweep's files."""
    trials = json.loads((sweep_dir / "manifest.json").read_text())["trials"]
    epochs, completed = 0, []
    for trial in trials:
        history = sweep_dir / trial["run_dir"] / "history.json"
        epochs += json.loads(history.read_text())["epochs"] if history.is_file() else 0
        metrics = sweep_dir / trial["run_dir"] / "metrics.json"
        if trial["state"] == "completed" and metrics.is_file():
            completed.append((json.loads(metrics.read_text())["test"]["accuracy"], trial["params"]))
    best = max(completed, key=lambda c: c[0], default=None)
    states = [t["state"] for t in trials]
    return {"best_test_accuracy": best[0] if best else None, "best_params": best[1] if best else None, "epochs_run": epochs,
            "trials": len(trials), "completed": states.count("completed"), "pruned": states.count("pruned"),
            "points": [[t["params"]["model.hidden_units.0"], t["state"]] for t in trials]}


def timed_sweep(runs: Path, *args: str) -> dict:
    start = time.monotonic()
    done = subprocess.run(sweep_command(runs, *args), env=environment(), capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"sweep failed ({done.returncode}): {done.stderr[-2000:]}{done.stdout[-2000:]}")
    return {**sweep_numbers(only_sweep(runs)), "wall_seconds": round(time.monotonic() - start, 1)}


def ended_files(sweep_dir: Path) -> dict[str, bytes]:
    files = {}
    for trial in json.loads((sweep_dir / "manifest.json").read_text())["trials"]:
        if trial["state"] in ("completed", "pruned"):
            for name in ("history.json", "metrics.json"):
                path = sweep_dir / trial["run_dir"] / name
                if path.is_file():
                    files[f"{trial['id']}/{name}"] = path.read_bytes()
    return files


def kill_and_resume(runs: Path, seed: int) -> dict:
    """SIGKILL the driver and its running trials once 4 trials ended; resume; check what the issue asks."""
    driver = subprocess.Popen(sweep_command(runs, *TPE, "--seed", str(seed)), env=environment(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        manifests = list(runs.glob("sweeps/*/manifest.json"))
        trials = json.loads(manifests[0].read_text())["trials"] if manifests else []
        if sum(t["state"] in ("completed", "pruned") for t in trials) >= 4 and any(t["state"] == "running" for t in trials):
            break
        time.sleep(0.2)
    sweep_dir = only_sweep(runs)
    driver.kill()
    driver.wait()
    killed = []
    for trial in json.loads((sweep_dir / "manifest.json").read_text())["trials"]:  # the trials too, as when a node goes down
        if trial["state"] == "running":
            with contextlib.suppress(ProcessLookupError):
                os.kill(trial["process"]["pid"], signal.SIGKILL)
            killed.append(trial["id"])
    before = ended_files(sweep_dir)
    resumed = subprocess.run([sys.executable, "-m", "kexp", "sweep", "--resume", str(sweep_dir)], env=environment(),
                             capture_output=True, text=True, timeout=3600)
    trials = json.loads((sweep_dir / "manifest.json").read_text())["trials"]
    after = ended_files(sweep_dir)
    return {"killed_trials": killed, "ended_before_kill": sorted({k.split("/")[0] for k in before}), "resume_exit_code": resumed.returncode,
            "numbers": [t["number"] for t in trials], "distinct_run_dirs": len({t["run_dir"] for t in trials if (sweep_dir / t["run_dir"]).is_dir()}),
            "distinct_points": len({json.dumps(t["params"]) for t in trials}),  # TPE may propose an integer twice
            "states": [t["state"] for t in trials], "attempts": [t["attempts"] for t in trials],
            "ended_trials_byte_identical": all(after.get(k) == v for k, v in before.items())}


def target_met(result: dict) -> bool:
    kill = result["kill_and_resume"]
    return all(s["within_0.3_points"] and s["at_most_half_the_epochs"] for s in result["tpe"]) and kill["resume_exit_code"] == 0 \
        and kill["numbers"] == list(range(12)) and kill["distinct_run_dirs"] == 12 and kill["ended_trials_byte_identical"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kexp-search"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kill-only", action="store_true", help="redo the kill -9 and resume step only, into results/search.json")
    args = parser.parse_args()
    if args.work.exists():
        subprocess.run(["rm", "-rf", str(args.work)], check=True)
    if args.kill_only:
        result = json.loads((RESULTS / "search.json").read_text())
        result["kill_and_resume"] = kill = kill_and_resume(args.work / "kill", args.seeds[0])
        print(f"kill -9 and resume: {kill}")
        result["target_met"] = target_met(result)
        print(f"wrote {write_result('search', result)}; target met: {result['target_met']}")
        return
    grid = timed_sweep(args.work / "grid", "--param", GRID)
    print(f"grid: best {grid['best_test_accuracy']:.4f} at {grid['best_params']}, {grid['epochs_run']} epochs, {grid['wall_seconds']} s")
    searches = []
    for seed in args.seeds:
        tpe = timed_sweep(args.work / f"tpe-{seed}", *TPE, "--seed", str(seed))
        tpe["seed"] = seed
        tpe["within_0.3_points"] = tpe["best_test_accuracy"] is not None and tpe["best_test_accuracy"] >= grid["best_test_accuracy"] - 0.003
        tpe["at_most_half_the_epochs"] = tpe["epochs_run"] <= 12 * EPOCHS // 2
        tpe["wall_vs_grid"] = round(tpe["wall_seconds"] / grid["wall_seconds"], 2)
        searches.append(tpe)
        print(f"tpe seed {seed}: best {tpe['best_test_accuracy']:.4f} at {tpe['best_params']}, {tpe['epochs_run']} epochs "
              f"({tpe['pruned']} pruned), {tpe['wall_seconds']} s ({tpe['wall_vs_grid']}x the grid)")
    kill = kill_and_resume(args.work / "kill", args.seeds[0])
    print(f"kill -9 and resume: {kill}")
    result = {"config": str(CONFIG.name), "epochs_per_trial": EPOCHS, "parallel": 2, "grid": grid, "tpe": searches, "kill_and_resume": kill}
    result["target_met"] = target_met(result)
    print(f"wrote {write_result('search', result)}; target met: {result['target_met']}")


if __name__ == "__main__":
    main()
