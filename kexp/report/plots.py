"""Learning-curve plots drawn from a run's history.json (the numbers stay in the JSON)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
from pathlib import Path

from kexp.run.files import RunFiles
from kexp.run.records import read_history

# a drawing that takes longer is given up on and redone in the run's own process
PLOTTER_SECONDS = 60.0


def as_floats(values: list) -> list[float]:
    """history.json stores NaN/inf as null (strict JSON); plot them as gaps."""
    return [float("nan") if v is None else v for v in values]


def plot_history(run_dir: Path) -> list[Path]:
    """One PNG per metric (train and validation curves) under <run>/plots/."""
    # Figure without pyplot (as kexp.report.compare): no GUI backend to choose, and pyplot's import
    # (about 0.4 s) no longer lands at the end of every run
    from matplotlib.figure import Figure

    history = read_history(run_dir).series
    out = RunFiles(run_dir).plots
    out.mkdir(exist_ok=True)
    written = []
    for metric in [k for k in history if not k.startswith("val_")]:
        fig = Figure(figsize=(5, 3.5))
        ax = fig.subplots()
        epochs = range(1, len(history[metric]) + 1)
        ax.plot(epochs, as_floats(history[metric]), label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, as_floats(history[f"val_{metric}"]), label="validation")
        ax.set(xlabel="epoch", ylabel=metric, title=f"{run_dir.name}: {metric}")
        ax.legend()
        fig.tight_layout()
        written.append(save_png(fig, out / f"{metric}.png"))
    return written


def save_png(fig, path: Path) -> Path:
    """Write beside the target, then rename: a helper stopped mid-drawing never leaves half a PNG."""
    tmp = path.with_name(f".{path.stem}.tmp.png")
    try:
        fig.savefig(tmp, dpi=100, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves neither half a PNG nor its temporary file
        raise
    return path


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path, title: str) -> Path:
    """A confusion-matrix heat map (rows: true class, columns: predicted) with every count written in its cell."""
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.int64).reshape(len(class_names), len(class_names))
    # Shade by each true class's share, so a small class's errors show as clearly as a big one's.
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = 2.5 + 0.55 * len(class_names)  # 10 classes: about 8 inches, counts still legible
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = range(len(class_names))
    rotate = max(map(len, class_names), default=0) > 3  # long names would overlap side by side
    ax.set_xticks(ticks, class_names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(title, fontsize=10)
    font = 10 if len(class_names) <= 10 else 7
    for i in ticks:
        for j in ticks:
            ax.text(j, i, f"{counts[i, j]:,}", ha="center", va="center", fontsize=font, color="white" if shares[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


class BackgroundPlots:
    """Learning curves drawn by a helper process (`python -m kexp.report.plots`), started before
    TensorFlow loads so that matplotlib's import (about 0.3 s here) happens on another core
    while the model is built and trained, and the drawing while the model is scored.

    draw(run_dir) asks for the curves once history.json is final; wait(run_dir) returns when
    they are written. Whatever goes wrong with the helper (it cannot start, dies, answers with
    an error or not in time), wait() draws them in this process instead, so a failure to plot
    is reported as it always was. In a process that has matplotlib loaded already (a notebook,
    the tests) no helper starts: drawing here costs only the drawing.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.asked: list[Path] = []
        self.ever_asked: set[Path] = set()  # where a killed helper may have left a temporary PNG
        if "matplotlib.figure" in sys.modules:
            return
        try:
            self.process = subprocess.Popen([sys.executable, "-m", "kexp.report.plots"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, text=True,
                                            start_new_session=True)  # a Ctrl-C is the run's to handle; it ends at the run's exit (stdin closes)
        except OSError:
            self.process = None

    def draw(self, run_dir: Path) -> None:
        if self.process is None:
            return
        try:
            self.process.stdin.write(json.dumps(str(run_dir)) + "\n")
            self.process.stdin.flush()
            self.asked.append(run_dir)
            self.ever_asked.add(run_dir)
        except OSError:  # the helper has gone: wait() draws here
            self.close()

    def wait(self, run_dir: Path) -> list[Path]:
        """The curves of run_dir, drawn by the helper if it was asked and managed, else here."""
        if run_dir in self.asked and self.drawn_by_helper(run_dir):
            return sorted(RunFiles(run_dir).plots.glob("*.png"))
        return sorted(plot_history(run_dir))

    def drawn_by_helper(self, run_dir: Path) -> bool:
        while self.asked and self.process is not None:
            asked = self.asked.pop(0)
            ready, _, _ = select.select([self.process.stdout], [], [], PLOTTER_SECONDS)
            answer = self.process.stdout.readline() if ready else ""
            if not answer:  # silent or gone
                self.close()
                return False
            if asked == run_dir:
                return answer.strip() == "ok"
        return False

    def close(self) -> None:
        """Stop the helper (whatever it was asked is drawn by now: wait() returned)."""
        if self.process is None:
            return
        process, self.process, self.asked = self.process, None, []
        with contextlib.suppress(OSError):
            process.stdin.close()
        process.kill()
        process.wait()
        # Killed mid-drawing (the run failed before it waited, say on a full disk): no temporary file stays behind.
        for run_dir in self.ever_asked:
            for tmp in RunFiles(run_dir).plots.glob(".*.tmp.png"):
                tmp.unlink(missing_ok=True)

    def __enter__(self) -> BackgroundPlots:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve() -> None:
    """The helper's loop: one JSON-quoted run directory per line in, `ok` or the error out."""
    import matplotlib.figure  # noqa: F401  (now, while the run trains)

    for line in sys.stdin:
        try:
            plot_history(Path(json.loads(line)))
            answer = "ok"
        except Exception as exc:  # the run draws them itself and reports this as it would
            answer = f"error {type(exc).__name__}: {exc}"
        # The answer is a line of the pipe protocol to the run that started this helper, never output for a user.
        sys.stdout.write(" ".join(answer.split()) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
