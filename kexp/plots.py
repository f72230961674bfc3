"""Learning-curve plots drawn from a run's history.json (the numbers stay in the JSON)."""

from __future__ import annotations

from pathlib import Path

from kexp.rundir import read_json


def as_floats(values: list) -> list[float]:
    """history.json stores NaN/inf as null (strict JSON); plot them as gaps."""
    return [float("nan") if v is None else v for v in values]


def plot_history(run_dir: Path) -> list[Path]:
    """One PNG per metric (train and validation curves) under <run>/plots/."""
    # Figure without pyplot (as kexp.compare): no GUI backend to choose, and pyplot's import
    # (about 0.4 s) no longer lands at the end of every run
    from matplotlib.figure import Figure

    history = read_json(run_dir / "history.json")
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    written = []
    for metric in [k for k in history if k not in {"epochs", "epoch_seconds", "non_finite"} and not k.startswith("val_")]:
        fig = Figure(figsize=(5, 3.5))
        ax = fig.subplots()
        epochs = range(1, len(history[metric]) + 1)
        ax.plot(epochs, as_floats(history[metric]), label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, as_floats(history[f"val_{metric}"]), label="validation")
        ax.set(xlabel="epoch", ylabel=metric, title=f"{run_dir.name}: {metric}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{metric}.png", dpi=100)
        written.append(out / f"{metric}.png")
    return written


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
