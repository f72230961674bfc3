"""Learning-curve plots drawn from a run's history.json (the numbers stay in the JSON)."""

from __future__ import annotations

from pathlib import Path

from kexp.rundir import read_json


def as_floats(values: list) -> list[float]:
    """history.json stores NaN/inf as null (strict JSON); plot them as gaps."""
    return [float("nan") if v is None else v for v in values]


def plot_history(run_dir: Path) -> list[Path]:
    """One PNG per metric (train and validation curves) under <run>/plots/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = read_json(run_dir / "history.json")
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    written = []
    for metric in [k for k in history if k not in {"epochs", "epoch_seconds", "non_finite"} and not k.startswith("val_")]:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        epochs = range(1, len(history[metric]) + 1)
        ax.plot(epochs, as_floats(history[metric]), label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, as_floats(history[f"val_{metric}"]), label="validation")
        ax.set(xlabel="epoch", ylabel=metric, title=f"{run_dir.name}: {metric}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{metric}.png", dpi=100)
        plt.close(fig)
        written.append(out / f"{metric}.png")
    return written
