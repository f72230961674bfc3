"""The MNIST tutorial's hidden-units sweep: `kexp sweep` against one plain Keras process, on Ray, and stopped + resumed.

    KEXP_DATA_DIR=../shared/data python benchmarks/sweep.py [--only keras kexp ray kill]

Workload (configs/mnist_mlp_sweep.yaml): 784-M(sigmoid)-10, adam, 20 epochs, batch 128, seed 1,
for M = 10, 25, 50, 100, 150, 200. Every case is a real process on a runs directory in one temp
folder (deleted at the end, with every process still running from it):

  keras   benchmarks/baselines/mnist_sweep_keras.py: the tutorial's way, one process, M one after
          another; wall seconds, peak RSS (/usr/bin/time -v), train and test accuracy per M.
  kexp    `kexp sweep CONFIG --parallel 2`: wall, exit code, peak RSS of its largest process, each
          trial's accuracies (manifest.json -> the trial's metrics.json), summary.png (copied to
          results/sweep_summary.png). With keras in the same invocation: keras wall / kexp wall.
  ray     the same on a local Ray head (2 CPUs, this script's own, stopped at the end):
          `kexp sweep CONFIG --backend ray --address 127.0.0.1:PORT --parallel 2`; wall, accuracies,
          and with kexp in the same invocation the largest accuracy difference from it.
  kill    `kexp sweep CONFIG --parallel 1`, SIGTERM once trial-002 has 2 finished epochs; exit code
          and manifest states, then `kexp sweep --resume SWEEP_DIR`: trials 0 and 1 untouched
          (attempts 1, metrics.json byte for byte), trial-002 resumed (attempts 2, 20 epochs),
          summary.json complete.

All four take roughly 15-20 minutes on 2 CPU cores (each keeps both busy: run nothing else meanwhile).
Writes benchmarks/results/sweep.json (each case its latest run) and benchmarks/sweep.md.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from common import RESULTS, ROOT, STARTED, Proc, peak_rss_mb, write_result

CONFIG = "configs/mnist_mlp_sweep.yaml"
PARAM = "model.hidden_units.0"  # the swept key: M
PARALLEL = 2
EPOCHS = 20
KILL_PARALLEL = 1  # one trial at a time: trials 0 and 1 are finished when trial-002 is stopped
KILL_TRIAL, KILL_AFTER = "trial-002", 2  # SIGTERM once this trial has this many finished epochs
RAY_CPUS = 2
CASES = ["keras", "kexp", "ray", "kill"]
WAIT_TIMEOUT = 1800.0  # for the kill case's moment (two whole trials come first)
TIME = "/usr/bin/time"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=CASES, default=CASES, metavar="NAME", help=f"cases to run: {', '.join(CASES)}")
    names = [name for name in CASES if name in parser.parse_args().only]
    previous = RESULTS / "sweep.json"
    results = json.loads(previous.read_text()) if previous.exists() else {}
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # run the cleanup below
    tmp = Path(tempfile.mkdtemp(prefix="kexp-bench-sweep-"))
    now: dict[str, dict] = {}  # this invocation's results, for the comparisons
    try:
        for name in names:
            if name == "keras":
                result = measure_keras(tmp)
            elif name == "kexp":
                result = measure_sweep(tmp / "kexp", [], copy_png=True)
            elif name == "ray":
                result = measure_ray(tmp)
            else:
                result = measure_kill(tmp / "kill")
            now[name] = results[name] = {"measured": datetime.now(UTC).isoformat(timespec="seconds"), "cpu_count": cpu_count(), **result}
            if name == "kexp" and "keras" in now:
                results[name]["vs_keras"] = speed(now["keras"], now["kexp"])
            if name == "ray" and "kexp" in now:
                results[name]["vs_kexp"] = {"max_abs_accuracy_difference": max_difference(now["kexp"]["trials"], now["ray"]["trials"]),
                                            "kexp_wall_seconds": now["kexp"]["wall_seconds"]}
            print(json.dumps({name: results[name]}), flush=True)
    finally:
        cleanup(tmp)
    write_result("sweep", results)
    table = markdown_table(results)
    (ROOT / "benchmarks" / "sweep.md").write_text(table)
    print(table)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# --- processes ---------------------------------------------------------------------------


def run_timed(args: list[str], logs: Path) -> tuple[Proc, int, float]:
    """Run a command to the end under /usr/bin/time -v: the process, its exit code and wall seconds."""
    proc = Proc([TIME, "-v", *args], logs)
    code = proc.wait()
    return proc, code, time.monotonic() - proc.started


def peak_rss(proc: Proc) -> int | None:
    try:
        return peak_rss_mb(proc.stderr)
    except AttributeError:  # /usr/bin/time wrote no report
        return None


def kill_leftovers(tmp: Path) -> list[int]:
    """SIGKILL every process whose command line names the temp folder (trial processes run in their
    own sessions, so a dead sweep driver's group does not hold them); the pids killed."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(tmp) in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return killed


def cleanup(tmp: Path) -> None:
    for proc in STARTED:
        if proc.process.poll() is None:
            proc.kill_group()
    killed = kill_leftovers(tmp)
    if killed:
        print(f"killed leftover processes {killed}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)


# --- reading a sweep directory -----------------------------------------------------------


def read_json(path: Path) -> dict:
    """The file's JSON, or {} while it does not exist yet (kexp writes by rename: never half a file)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return {}


def find_sweep_dir(runs: Path) -> Path | None:
    root = runs / "sweeps"
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    return found[0] if len(found) == 1 else None


def trial_dir(sweep_dir: Path, trial: dict) -> Path:
    return sweep_dir / trial["run_dir"]


def find_trial(manifest: dict, trial_id: str) -> dict:
    return next((t for t in manifest.get("trials", []) if t["id"] == trial_id), {})


def trial_results(sweep_dir: Path | None) -> list[dict]:
    """Each trial of the manifest: M, state, attempts and its run's train and test accuracy."""
    manifest = read_json(sweep_dir / "manifest.json") if sweep_dir else {}
    rows = []
    for trial in manifest.get("trials", []):
        metrics = read_json(trial_dir(sweep_dir, trial) / "metrics.json")
        rows.append({"id": trial["id"], "units": trial["params"].get(PARAM), "seed": trial.get("seed"), "state": trial["state"],
                     "attempts": trial.get("attempts"), "exit_code": trial.get("exit_code"),
                     "train_accuracy": (metrics.get("train") or {}).get("accuracy"), "test_accuracy": (metrics.get("test") or {}).get("accuracy"),
                     "epochs": metrics.get("epochs_completed"), "fit_seconds": metrics.get("fit_seconds")})
    return rows


def history_epochs(run_dir: Path) -> int:
    return int(read_json(run_dir / "history.json").get("epochs") or 0)


def states(manifest: dict) -> dict[str, dict]:
    return {t["id"]: {"state": t["state"], "attempts": t.get("attempts"), "exit_code": t.get("exit_code")} for t in manifest.get("trials", [])}


# --- the cases ---------------------------------------------------------------------------


def measure_keras(tmp: Path) -> dict:
    """The baseline script as one process: wall, peak RSS and its JSON lines."""
    script = "benchmarks/baselines/mnist_sweep_keras.py"
    proc, code, seconds = run_timed([sys.executable, script], tmp / "keras-logs")
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    trials = [{"units": line["units"], "train_accuracy": line["train_accuracy"], "test_accuracy": line["test_accuracy"],
               "fit_seconds": line["fit_seconds"], "seconds": line["seconds"]} for line in lines if "units" in line and "train_accuracy" in line]
    total = next((line for line in lines if "total_wall_seconds" in line), {})
    return {
        "command": f"python {script}",
        "exit_code": code,
        "wall_seconds": round(seconds, 1),
        "peak_rss_mb": peak_rss(proc),
        "script_seconds": total.get("total_wall_seconds"),
        "read_seconds": total.get("read_seconds"),
        "trials": trials,
        "completed": len(trials),
        **({"stderr_tail": proc.tail()} if code else {}),
    }


def measure_sweep(runs: Path, extra: list[str], copy_png: bool = False) -> dict:
    """`kexp sweep CONFIG --parallel 2 --runs-dir RUNS [extra]` under /usr/bin/time -v."""
    args = ["sweep", CONFIG, "--parallel", str(PARALLEL), *extra]
    proc, code, seconds = run_timed([sys.executable, "-m", "kexp", *args, "--runs-dir", str(runs)], runs.parent / f"{runs.name}-logs")
    sweep_dir = find_sweep_dir(runs)
    trials = trial_results(sweep_dir)
    png = sweep_dir / "summary.png" if sweep_dir else None
    has_png = bool(png and png.is_file())
    if copy_png and has_png:
        RESULTS.mkdir(exist_ok=True)
        shutil.copyfile(png, RESULTS / "sweep_summary.png")
    summary = read_json(sweep_dir / "summary.json") if sweep_dir else {}
    return {
        "command": "kexp " + " ".join(args),
        "exit_code": code,
        "wall_seconds": round(seconds, 1),
        "peak_rss_mb": peak_rss(proc),  # the largest single process it waited for: the driver or a local trial
        "trials": trials,
        "completed": sum(t["state"] == "completed" for t in trials),
        "summary_json": bool(summary),
        "summary_complete": summary.get("complete"),
        "summary_png": has_png,
        **({"stderr_tail": proc.tail()} if code else {}),
    }


def speed(keras: dict, kexp: dict) -> dict:
    """keras wall / kexp wall: above 1, the sweep finished sooner than the one-process script."""
    ratio = keras["wall_seconds"] / kexp["wall_seconds"] if kexp["wall_seconds"] else None
    return {"keras_wall_seconds": keras["wall_seconds"], "ratio": round(ratio, 2) if ratio else None}


def max_difference(a: list[dict], b: list[dict]) -> float | None:
    """The largest |accuracy difference| between two sweeps' trials of the same M (train and test)."""
    by_units = {t["units"]: t for t in b}
    diffs = [abs(t[key] - by_units[t["units"]][key]) for t in a if t["units"] in by_units for key in ("train_accuracy", "test_accuracy")
             if t[key] is not None and by_units[t["units"]][key] is not None]
    return round(max(diffs), 6) if diffs else None


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_ray(tmp: Path) -> tuple[Proc, int]:
    """This script's own Ray head: `ray start --head --block` in its own process group, its temp folder
    and ports its own, so stopping it (SIGTERM, then the group) touches no other Ray on the machine
    (`ray stop` would stop every one)."""
    port, client_port, agent_port, agent_grpc_port, dashboard_port = free_ports(5)
    ray_cli = Path(sys.executable).with_name("ray")
    cmd = [str(ray_cli) if ray_cli.is_file() else "ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
           f"--num-cpus={RAY_CPUS}", "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={tmp / 'ray'}",
           f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent_port}",
           f"--dashboard-agent-grpc-port={agent_grpc_port}", f"--dashboard-port={dashboard_port}", "--disable-usage-stats"]
    head = Proc(cmd, tmp / "ray-head-logs")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if head.process.poll() is not None:
            head.fail(f"ray start exited ({head.process.returncode})")
        if "Ray runtime started" in head.stdout + head.stderr:
            return head, port
        time.sleep(0.5)
    head.fail("the Ray head did not start within 180 s")


def stop_ray(head: Proc) -> None:
    """SIGTERM to `ray start --block` stops its node's processes; then SIGKILL to anything left in the group."""
    if head.process.poll() is None:
        head.process.send_signal(signal.SIGTERM)
        head.wait(60)
    head.kill_group()


def measure_ray(tmp: Path) -> dict:
    head, port = start_ray(tmp)
    try:
        result = measure_sweep(tmp / "ray", ["--backend", "ray", "--address", f"127.0.0.1:{port}"])
    finally:
        stop_ray(head)
    result["command"] = result["command"].replace(f"127.0.0.1:{port}", "127.0.0.1:PORT")
    return {**result, "ray_cpus": RAY_CPUS}


def measure_kill(runs: Path) -> dict:
    """SIGTERM the sweep once KILL_TRIAL has KILL_AFTER epochs; then `kexp sweep --resume`."""
    logs = runs.parent / "kill-logs"
    sweep = Proc([sys.executable, "-m", "kexp", "sweep", CONFIG, "--parallel", str(KILL_PARALLEL), "--runs-dir", str(runs)], logs / "sweep")
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        if sweep.process.poll() is not None:
            sweep.fail(f"kexp sweep exited ({sweep.process.returncode}) before it could be stopped")
        if time.monotonic() > deadline:
            sweep.fail(f"{KILL_TRIAL} did not reach {KILL_AFTER} epochs within {WAIT_TIMEOUT:.0f} s")
        sweep_dir = find_sweep_dir(runs)
        if sweep_dir is not None:
            manifest = read_json(sweep_dir / "manifest.json")
            trial = find_trial(manifest, KILL_TRIAL)
            if trial.get("state") == "running" and history_epochs(trial_dir(sweep_dir, trial)) >= KILL_AFTER:
                break
        time.sleep(0.1)
    before = states(manifest)
    earlier = [t for t in manifest["trials"] if t["id"] < KILL_TRIAL]
    kept = {t["id"]: (trial_dir(sweep_dir, t) / "metrics.json").read_bytes() if (trial_dir(sweep_dir, t) / "metrics.json").is_file() else None
            for t in earlier}
    epochs_at_signal = history_epochs(trial_dir(sweep_dir, trial))
    since_start = time.monotonic() - sweep.started
    signalled = time.monotonic()
    sweep.process.send_signal(signal.SIGTERM)
    code = sweep.wait(120)
    to_exit = time.monotonic() - signalled
    if code is None:
        sweep.kill_group()  # it hung: recorded as such
    stopped = read_json(sweep_dir / "manifest.json")
    killed_dir = trial_dir(sweep_dir, trial)
    status = read_json(killed_dir / "status.json")
    stopped_trial = {"state": find_trial(stopped, KILL_TRIAL).get("state"), "status": status.get("state"), "exit_code": status.get("exit_code"),
                     "checkpoint_epoch": (status.get("checkpoint") or {}).get("epoch"), "history_epochs": history_epochs(killed_dir)}

    resumed = Proc([sys.executable, "-m", "kexp", "sweep", "--resume", str(sweep_dir), "--parallel", str(KILL_PARALLEL)], logs / "resume")
    resume_code = resumed.wait()
    resume_seconds = time.monotonic() - resumed.started
    after = read_json(sweep_dir / "manifest.json")
    summary = read_json(sweep_dir / "summary.json")
    history = read_json(killed_dir / "history.json")
    earlier_after = {}
    for tid, data in kept.items():
        t = find_trial(after, tid)
        metrics = trial_dir(sweep_dir, t) / "metrics.json" if t else None
        unchanged = data is not None and metrics is not None and metrics.is_file() and metrics.read_bytes() == data
        earlier_after[tid] = {"state": t.get("state"), "attempts": t.get("attempts"), "metrics_json_unchanged": unchanged}
    earlier_ok = len(earlier_after) == 2 and all(v["state"] == "completed" and v["attempts"] == 1 and v["metrics_json_unchanged"]
                                                 for v in earlier_after.values())
    killed_after = find_trial(after, KILL_TRIAL)
    trial_resumed = {"attempts": killed_after.get("attempts"), "state": killed_after.get("state"), "history_epochs": history.get("epochs"),
                     "loss_values": len(history.get("loss") or [])}
    trial_ok = (trial_resumed["attempts"] == 2 and trial_resumed["state"] == "completed" and trial_resumed["history_epochs"] == EPOCHS
                and trial_resumed["loss_values"] == EPOCHS)
    ok = (code == 143 and resume_code == 0 and earlier_ok and trial_ok
          and summary.get("complete") is True and all(t["state"] == "completed" for t in after.get("trials", [])))
    return {
        "command": f"kexp sweep {CONFIG} --parallel {KILL_PARALLEL}; SIGTERM; kexp sweep --resume SWEEP_DIR --parallel {KILL_PARALLEL}",
        "signalled_after": {"trial": KILL_TRIAL, "epochs": epochs_at_signal, "seconds_since_start": round(since_start, 1)},
        "manifest_at_signal": before,
        "exit_code": code,
        "seconds_to_exit": round(to_exit, 2),
        "manifest_after_stop": states(stopped),
        "stopped_trial": stopped_trial,
        "stop_stderr_tail": sweep.tail(3),
        "resume": {
            "exit_code": resume_code,
            "wall_seconds": round(resume_seconds, 1),
            "manifest": states(after),
            "earlier_trials": earlier_after,
            "earlier_trials_untouched": earlier_ok,
            "resumed_trial": trial_resumed,
            "resumed_trial_ok": trial_ok,
            "summary_complete": summary.get("complete"),
            "trials": trial_results(sweep_dir),
            **({"stderr_tail": resumed.tail()} if resume_code else {}),
        },
        "ok": ok,
    }


# --- the table ---------------------------------------------------------------------------


def markdown_table(results: dict) -> str:
    """sweep.md, from sweep.json alone."""
    cpus = sorted({r.get("cpu_count") for r in results.values() if r.get("cpu_count")})
    lines = ["# Sweep: the MNIST tutorial's hidden-units sweep, kexp vs one Keras process", "",
             f"Generated by `benchmarks/sweep.py` from `results/sweep.json` ({'/'.join(map(str, cpus)) or '?'}-core CPU; each row is the",
             f"latest run of that case). Workload `{CONFIG}`: 784-M(sigmoid)-10, adam, {EPOCHS} epochs, batch 128, seed 1,",
             "M = 10, 25, 50, 100, 150, 200. Peak RSS: the largest single process (`kexp`: the driver or one trial;",
             "`ray`: the driver only, trials run under Ray's workers)."]
    timed = [name for name in ("keras", "kexp", "ray") if name in results]
    if timed:
        lines += ["", "## Time", "", "| case | command | exit | wall | peak RSS | trials completed | compared |", "|---|---|---|---|---|---|---|"]
        for name in timed:
            r = results[name]
            rss = f"{r['peak_rss_mb']} MB" if r.get("peak_rss_mb") is not None else "-"
            lines.append(f"| `{name}` | `{r['command']}` | {r['exit_code']} | {r['wall_seconds']:.0f} s | {rss} | {r['completed']}/6 | {compared(name, r)} |")
    if timed:
        lines += ["", "## Accuracy per M (train / test)", "", "| M | " + " | ".join(timed) + " |", "|---" * (len(timed) + 1) + "|"]
        for units in (10, 25, 50, 100, 150, 200):
            cells = []
            for name in timed:
                t = next((t for t in results[name]["trials"] if t["units"] == units), None)
                cells.append(accuracy_cell(t))
            lines.append(f"| {units} | " + " | ".join(cells) + " |")
    if (RESULTS / "sweep_summary.png").is_file():
        lines += ["", "kexp's summary.png (the `kexp` case): ![summary](results/sweep_summary.png)"]
    if "kill" in results:
        lines += ["", "## Stopped by SIGTERM, then `kexp sweep --resume`", "", *kill_rows(results["kill"])]
    return "\n".join(lines) + "\n"


def compared(name: str, r: dict) -> str:
    if name == "kexp" and r.get("vs_keras", {}).get("ratio"):
        v = r["vs_keras"]
        return f"{v['ratio']:.2f}x the Keras script's speed (its wall {v['keras_wall_seconds']:.0f} s)"
    if name == "ray" and r.get("vs_kexp"):
        v = r["vs_kexp"]
        diff = v["max_abs_accuracy_difference"]
        return f"max accuracy difference from `kexp` (local, {v['kexp_wall_seconds']:.0f} s): " + ("-" if diff is None else f"{diff:.4f}")
    if name == "keras" and r.get("script_seconds") is not None:
        return f"{r['script_seconds']:.0f} s after `import keras` (data read {r['read_seconds']:.1f} s)"
    return "-"


def accuracy_cell(t: dict | None) -> str:
    if not t or t.get("train_accuracy") is None or t.get("test_accuracy") is None:
        return "-" if not t else t.get("state", "-")
    return f"{t['train_accuracy']:.4f} / {t['test_accuracy']:.4f}"


def kill_rows(r: dict) -> list[str]:
    s = r["resume"]
    at = r["signalled_after"]
    counts = {}
    for v in r["manifest_at_signal"].values():
        counts[v["state"]] = counts.get(v["state"], 0) + 1
    stopped = r["stopped_trial"]
    earlier = s["earlier_trials"]
    resumed = s["resumed_trial"]
    return [
        "| step | result |", "|---|---|",
        f"| command | `{r['command']}` |",
        f"| signalled | {at['seconds_since_start']:.0f} s in, {at['trial']} at {at['epochs']} epochs (trials: "
        + ", ".join(f"{n} {state}" for state, n in counts.items()) + ") |",
        f"| sweep exit | {r['exit_code']} after {r['seconds_to_exit']:.1f} s |",
        f"| {at['trial']} then | manifest {stopped['state']}, status.json {stopped['status']}, checkpoint epoch {stopped['checkpoint_epoch']}, "
        f"history {stopped['history_epochs']} epochs |",
        "| manifest then | " + ", ".join(f"{tid} {v['state']} ({v['attempts']})" for tid, v in r["manifest_after_stop"].items()) + " |",
        f"| resume | exit {s['exit_code']}, wall {s['wall_seconds']:.0f} s |",
        "| earlier trials | " + "; ".join(f"{tid} {v['state']}, attempts {v['attempts']}, metrics.json unchanged: {'yes' if v['metrics_json_unchanged'] else 'no'}"
                                          for tid, v in earlier.items()) + f" (all untouched: {'yes' if s['earlier_trials_untouched'] else 'NO'}) |",
        f"| {at['trial']} after | attempts {resumed['attempts']}, {resumed['state']}, history {resumed['history_epochs']} epochs "
        f"({resumed['loss_values']} loss values): {'yes' if s['resumed_trial_ok'] else 'NO'} |",
        f"| summary.json complete | {s['summary_complete']} |",
        "| manifest after | " + ", ".join(f"{tid} {v['state']} ({v['attempts']})" for tid, v in s["manifest"].items()) + " |",
        f"| ok | {'yes' if r['ok'] else 'NO'} |",
    ]


if __name__ == "__main__":
    main()
