"""Shell completion for `kexp --install-completion`: dataset, model, tutorial and run names."""

from __future__ import annotations

from pathlib import Path

from kexp.run.files import RunFiles


def complete_datasets(incomplete: str) -> list[str]:
    """Shell completion: registered dataset names."""
    return [name for name in entry_names("datasets") if name.startswith(incomplete)]


def complete_models(incomplete: str) -> list[str]:
    """Shell completion: registered model names."""
    return [name for name in entry_names("models") if name.startswith(incomplete)]


def complete_examples(incomplete: str) -> list[str]:
    """Shell completion: the tutorial configs `kexp init --from` copies."""
    from kexp.starter import example_names

    return [name for name in example_names() if name.startswith(incomplete)]


def complete_runs(incomplete: str) -> list[str]:
    """Shell completion: run directories (folders holding status.json or config.yaml) under the typed folder, else runs/."""
    typed = Path(incomplete or "runs/")
    folder = typed if incomplete.endswith("/") or not incomplete else typed.parent
    if not folder.is_dir():
        folder = Path("runs")
    try:
        candidates = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []
    dot = "./" if incomplete.startswith("./") else ""  # Path drops it, and the shell only keeps words that start as typed
    matching = [p for p in candidates if f"{dot}{p}".startswith(incomplete)]
    runs = [f"{dot}{p}" for p in matching if RunFiles(p).status.is_file() or RunFiles(p).config.is_file()]
    return runs or [f"{dot}{p}/" for p in matching]  # no run here: offer the folders, to go down into runs/ or runs/sweeps/


def entry_names(kind: str) -> list[str]:
    from kexp.registry import DATASETS, MODELS, load_components

    load_components()
    return (DATASETS if kind == "datasets" else MODELS).names()
