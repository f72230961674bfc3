"""Preemption on the real configs: how fast SIGTERM stops a run, and what SIGKILL + resume gives back.

    KEXP_DATA_DIR=../shared/data NLTK_DATA=../shared/nltk_data python benchmarks/preemption.py [--only NAME ...]

Every case runs `kexp` as a real process on a runs directory in a temp folder (deleted at the end):

  pima, mnist_mlp, mnist_cnn, imdb   `kexp train CONFIG`, SIGTERM once history.json has enough
                                     finished epochs (pima 20 of its 150 short ones, the others 1);
                                     seconds from the signal to the exit (requirement: exit 143
                                     within 20 s), status.json, the checkpoint, whether the run can
                                     be resumed. pima is then resumed and compared with an
                                     uninterrupted run.
  mnist_cnn_early                    the same, 15 s into epoch 1: nothing to save yet.
  kill_resume                        configs/mnist_mlp.yaml with train.checkpoint_every=1, SIGKILL
                                     after 7 epochs, what status.json and `kexp runs` say, then
                                     `kexp resume`: 20 epochs, none twice, test accuracy within
                                     0.3 points of an uninterrupted run.

All of them take about 5 minutes on 2 CPU cores (mnist_cnn epochs ~45 s); `--only pima` ~1 min.
Writes benchmarks/results/preemption.json (each case its latest run) and benchmarks/preemption.md.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from common import RESULTS, ROOT, Proc, environment, run_metrics, write_result

EXIT_WITHIN = 20.0  # seconds from SIGTERM to exit the feature promises
ACCURACY_POINTS = 0.3  # a resumed run's test accuracy against an uninterrupted one, in points
# name -> (config, when to send SIGTERM: finished epochs or seconds into epoch 1, resume it too)
SIGTERM_CASES = {
    "pima": ("configs/pima.yaml", {"epochs": 20}, True),
    "mnist_mlp": ("configs/mnist_mlp.yaml", {"epochs": 1}, False),
    "mnist_cnn": ("configs/mnist_cnn.yaml", {"epochs": 1}, False),
    "mnist_cnn_early": ("configs/mnist_cnn.yaml", {"seconds": 15}, False),
    "imdb": ("configs/imdb.yaml", {"epochs": 1}, False),
}
KILL_CONFIG, KILL_AFTER = "configs/mnist_mlp.yaml", 7
CASES = [*SIGTERM_CASES, "kill_resume"]
START_TIMEOUT = 900.0  # data loading plus the epochs to wait for (mnist_cnn's first ~60 s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=CASES, default=CASES, metavar="NAME", help=f"cases to run: {', '.join(CASES)}")
    names = parser.parse_args().only
    previous = RESULTS / "preemption.json"
    results = json.loads(previous.read_text()) if previous.exists() else {}
    tmp = Path(tempfile.mkdtemp(prefix="kexp-bench-preemption-"))
    try:
        for name in names:
            runs = tmp / name
            result = measure_kill_resume(runs) if name == "kill_resume" else measure_sigterm(name, runs)
            results[name] = {"measured": datetime.now(UTC).isoformat(timespec="seconds"), "cpu_count": os.cpu_count(), **result}
            print(json.dumps({name: results[name]}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_result("preemption", results)
    table = markdown_table(results)
    (ROOT / "benchmarks" / "preemption.md").write_text(table)
    print(table)


def Kexp(args: list[str], logs: Path) -> Proc:
    """A `python -m kexp ...` process (common.Proc)."""
    return Proc([sys.executable, "-m", "kexp", *args], logs)


def run_kexp(args: list[str], logs: Path) -> tuple[Kexp, int, float]:
    """Run kexp to the end: the process, its exit code and wall seconds."""
    kexp = Kexp(args, logs)
    code = kexp.wait()
    return kexp, code, time.monotonic() - kexp.started


def read_json(path: Path) -> dict:
    """The file's JSON, or {} while it does not exist yet (kexp writes by rename: never half a file)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def find_run_dir(runs: Path) -> Path | None:
    found = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")] if runs.is_dir() else []
    return found[0] if len(found) == 1 else None


def wait_for(kexp: Kexp, runs: Path, ready) -> Path:
    """Poll the run directory every 50 ms until ready(run_dir) is true; the run directory."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if kexp.process.poll() is not None:
            kexp.fail(f"kexp exited ({kexp.process.returncode}) before it could be stopped")
        run_dir = find_run_dir(runs)
        if run_dir is not None and ready(run_dir):
            return run_dir
        time.sleep(0.05)
    kexp.fail(f"the run was not ready within {START_TIMEOUT:.0f} s")


def finished_epochs(run_dir: Path) -> int:
    return int(read_json(run_dir / "history.json").get("epochs") or 0)


def wait_for_epochs(kexp: Kexp, runs: Path, epochs: int) -> Path:
    return wait_for(kexp, runs, lambda run_dir: finished_epochs(run_dir) >= epochs)


def wait_into_first_epoch(kexp: Kexp, runs: Path, seconds: float) -> Path:
    """status.json says running (training is about to start); then `seconds` more."""
    run_dir = wait_for(kexp, runs, lambda run_dir: read_json(run_dir / "status.json").get("state") == "running")
    time.sleep(seconds)
    if finished_epochs(run_dir):
        kexp.fail(f"an epoch finished within {seconds} s of the start: this case is meant to stop inside epoch 1")
    return run_dir


def measure_sigterm(name: str, runs: Path) -> dict:
    """Train, SIGTERM at the case's moment, time the exit; what the run directory says afterwards."""
    config, when, resume = SIGTERM_CASES[name]
    kexp = Kexp(["train", config, "--runs-dir", str(runs)], runs.parent / f"{name}-logs")
    try:
        if "epochs" in when:
            run_dir = wait_for_epochs(kexp, runs, when["epochs"])
        else:
            run_dir = wait_into_first_epoch(kexp, runs, when["seconds"])
        epochs_at_signal = finished_epochs(run_dir)
        since_start = time.monotonic() - kexp.started
        signalled = time.monotonic()
        kexp.process.send_signal(signal.SIGTERM)
        code = kexp.wait(120)
        seconds = time.monotonic() - signalled
        if code is None:
            kexp.kill_group()  # it hung: recorded as such, not waited on forever
    finally:
        kexp.kill_group()
    result = {
        "command": f"kexp train {config}",
        "signal": "SIGTERM",
        "signalled_after": {"epochs": epochs_at_signal, "seconds_since_start": round(since_start, 1),
                            "case": "after an epoch finished" if epochs_at_signal else "inside epoch 1, before any epoch finished"},
        "exit_code": code,
        "seconds_to_exit": round(seconds, 2),
        "exit_within_20s": code == 143 and seconds <= EXIT_WITHIN,
        **describe_stopped_run(run_dir, runs),
        "stderr_tail": kexp.stderr.strip().splitlines()[-3:],
    }
    if resume:
        result["resume"] = measure_resume(run_dir, config, runs.parent / f"{name}-resume")
    return result


def describe_stopped_run(run_dir: Path, runs: Path) -> dict:
    """What status.json, history.json, the checkpoints folder and `kexp runs` say about a stopped run."""
    status = read_json(run_dir / "status.json")
    history = read_json(run_dir / "history.json")
    checkpoint = status.get("checkpoint") or {}
    on_disk = sorted(p.name for p in (run_dir / "checkpoints").iterdir()) if (run_dir / "checkpoints").is_dir() else []
    row = runs_row(runs, run_dir)
    return {
        "status": {key: status.get(key) for key in ("state", "exit_code", "signal", "epoch", "pid", "host", "error")},
        "checkpoint_epoch": checkpoint.get("epoch"),
        "checkpoints_on_disk": on_disk,
        "model_keras": (run_dir / "model.keras").is_file(),
        "history_epochs": history.get("epochs", 0),
        "mean_epoch_seconds": round(sum(history["epoch_seconds"]) / len(history["epoch_seconds"]), 2) if history.get("epoch_seconds") else None,
        "kexp_runs": {key: row.get(key) for key in ("status", "recorded_status", "epochs", "note")},
        # what `kexp resume` needs: a stopped (not diverged or completed) run with its spec and fingerprint
        "resumable": row.get("status") in ("interrupted", "failed", "crashed") and (run_dir / "config.yaml").is_file() and (run_dir / "env.json").is_file(),
        "resume_from_epoch": checkpoint.get("epoch") or 0,
    }


def runs_row(runs: Path, run_dir: Path) -> dict:
    """The run's row in `kexp runs RUNS --format json`."""
    done = subprocess.run([sys.executable, "-m", "kexp", "runs", str(runs), "--format", "json"], cwd=ROOT, env=environment(),
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"status": f"kexp runs failed ({done.returncode}): {done.stderr.strip()[-300:]}"}
    rows = [row for row in json.loads(done.stdout) if Path(row["path"]).resolve() == run_dir.resolve()]
    return rows[0] if rows else {"status": "not listed"}


def measure_resume(run_dir: Path, config: str, logs: Path) -> dict:
    """`kexp resume RUN_DIR` to the end, then an uninterrupted `kexp train CONFIG` to compare with."""
    expected = int(read_json(run_dir / "env.json").get("spec", {}).get("train", {}).get("epochs") or 0)
    resumed, code, seconds = run_kexp(["resume", str(run_dir)], logs / "resume")
    if code != 0:
        resumed.fail(f"kexp resume {run_dir} exited {code}")
    metrics = read_json(run_dir / "metrics.json")
    history = read_json(run_dir / "history.json")
    status = read_json(run_dir / "status.json")
    part = "test" if metrics.get("test") else "train"
    baseline, base_code, base_seconds = run_kexp(["train", config, "--runs-dir", str(logs / "runs")], logs / "baseline")
    if base_code != 0:
        baseline.fail(f"kexp train {config} exited {base_code}")
    reference = run_metrics(baseline.stdout)
    points = 100 * (metrics[part]["accuracy"] - reference[part]["accuracy"])
    return {
        "command": f"kexp resume {run_dir.name}",
        "exit_code": code,
        "wall_seconds": round(seconds, 1),
        "state": status.get("state"),
        "attempt": status.get("attempt"),
        "history_epochs": history.get("epochs"),
        "loss_values": len(history.get("loss") or []),
        "epochs_as_configured": history.get("epochs") == expected and len(history.get("loss") or []) == expected and len(history.get("epoch_seconds") or []) == expected,
        "checkpoints_left": (run_dir / "checkpoints").exists(),
        "accuracy_part": part,
        "accuracy": round(metrics[part]["accuracy"], 4),
        "uninterrupted_accuracy": round(reference[part]["accuracy"], 4),
        "uninterrupted_wall_seconds": round(base_seconds, 1),
        "difference_points": round(points, 2),
        "within_0_3_points": abs(points) <= ACCURACY_POINTS,
    }


def measure_kill_resume(runs: Path) -> dict:
    """SIGKILL a run that checkpoints every epoch after KILL_AFTER epochs; then resume it."""
    kexp = Kexp(["train", KILL_CONFIG, "--set", "train.checkpoint_every=1", "--runs-dir", str(runs)], runs.parent / "kill_resume-logs")
    try:
        run_dir = wait_for_epochs(kexp, runs, KILL_AFTER)
        epochs_at_kill = finished_epochs(run_dir)
        kexp.process.kill()
        code = kexp.wait(60)
    finally:
        kexp.kill_group()
    return {
        "command": f"kexp train {KILL_CONFIG} --set train.checkpoint_every=1",
        "signal": "SIGKILL",
        "killed_after_epochs": epochs_at_kill,
        "exit_code": code,
        **describe_stopped_run(run_dir, runs),
        "resume": measure_resume(run_dir, KILL_CONFIG, runs.parent / "kill_resume-resume"),
    }


def markdown_table(results: dict) -> str:
    """Both tables of preemption.md, from preemption.json alone."""
    lines = ["# Preemption: SIGTERM and SIGKILL on the real configs", "",
             "Generated by `benchmarks/preemption.py` from `results/preemption.json` (2-core CPU; each row is the",
             f"latest run of that case). Requirements: exit 143 within {EXIT_WITHIN:.0f} s of SIGTERM; a resumed run trains",
             f"every epoch once and lands within {ACCURACY_POINTS} points of an uninterrupted run's accuracy."]
    stopped, resumed = sigterm_rows(results), resume_rows(results)
    if stopped:
        lines += ["", "## SIGTERM", "", "| case | signalled | epoch time | exit | to exit | status | checkpoint | history epochs | resumable | ok |",
                  "|---|---|---|---|---|---|---|---|---|---|", *stopped]
    if resumed:
        lines += ["", "## Resumed runs", "",
                  "| case | stopped by | after | status then | `kexp runs` | resumed from | resume exit | resume wall | epochs (loss values) "
                  "| accuracy | uninterrupted | difference | ok |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|", *resumed]
    return "\n".join(lines) + "\n"


def sigterm_rows(results: dict) -> list[str]:
    lines = []
    for name, r in results.items():
        if r.get("signal") != "SIGTERM":
            continue
        at = r["signalled_after"]
        moment = f"after {at['epochs']} epochs" if at["epochs"] else f"{at['seconds_since_start']:.0f} s in, inside epoch 1"
        epoch_time = f"{r['mean_epoch_seconds']} s" if r["mean_epoch_seconds"] is not None else "-"
        checkpoint = f"epoch {r['checkpoint_epoch']}" if r["checkpoint_epoch"] else "none"
        lines.append(f"| `{name}` | {moment} | {epoch_time} | {r['exit_code']} | {r['seconds_to_exit']:.1f} s | {r['status']['state']} "
                     f"| {checkpoint} | {r['history_epochs']} | {'yes' if r['resumable'] else 'no'} | {'yes' if r['exit_within_20s'] else 'NO'} |")
    return lines


def resume_rows(results: dict) -> list[str]:
    lines = []
    for name, r in results.items():
        if "resume" not in r:
            continue
        s = r["resume"]
        after = r.get("killed_after_epochs", (r.get("signalled_after") or {}).get("epochs"))
        ok = s["exit_code"] == 0 and s["epochs_as_configured"] and s["within_0_3_points"]
        lines.append(f"| `{name}` | {r['signal']} | {after} epochs | {r['status']['state']} | {r['kexp_runs']['status']} "
                     f"| epoch {r['resume_from_epoch']} | {s['exit_code']} | {s['wall_seconds']:.0f} s | {s['history_epochs']} ({s['loss_values']}) "
                     f"| {s['accuracy_part']} {s['accuracy']:.4f} | {s['uninterrupted_accuracy']:.4f} | {s['difference_points']:+.2f} pt "
                     f"| {'yes' if ok else 'NO'} |")
    return lines


if __name__ == "__main__":
    main()
