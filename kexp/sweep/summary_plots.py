"""The search panels of summary.png, beside the points' panel: the optimization history and the parameter importance.

Drawn for a tpe sweep, and for a random one long enough to have a history worth reading; a grid
sweep's figure stays the points' panel alone. The numbers come from summary.json (kexp.sweep.insight).
"""

from __future__ import annotations

from typing import Any

from kexp.report.compare import short_names

SEARCH_PANEL_WIDTH = 5.5  # inches each added panel widens the figure


def search_panels(summary: dict[str, Any], min_random_trials: int) -> list[str]:
    """"history" and, when Optuna ranked the parameters, "importance"; none for a grid sweep or a short random one."""
    method, trials = summary.get("method"), len(summary.get("history") or [])
    if not (method == "tpe" or (method == "random" and trials >= min_random_trials)):
        return []
    ranked = (summary.get("importance") or {}).get("params") or {}
    curves = ["curves"] if summary.get("curves") else []
    return ["history", *curves] + (["importance"] if len(ranked) > 1 else [])  # one parameter has all of it: no panel to look at


def draw_search_panels(summary: dict[str, Any], axes: dict[str, Any]) -> None:
    if "history" in axes:
        draw_history(axes["history"], summary)
    if "curves" in axes:
        draw_trial_curves(axes["curves"], summary["curves"])
    if "importance" in axes:
        draw_importance(axes["importance"], summary)


def draw_history(ax, summary: dict[str, Any]) -> None:
    """Each trial's value in search order, the best so far as a step line, pruned trials as crosses along the bottom."""
    from matplotlib.transforms import blended_transform_factory

    history, metric = summary["history"], summary["metric"]
    part = (summary.get("best") or {}).get("part", "")
    x = [e["number"] if e["number"] is not None else i for i, e in enumerate(history)]
    valued = [(xi, e) for xi, e in zip(x, history) if e["value"] is not None]
    ax.plot([xi for xi, _ in valued], [e["value"] for _, e in valued], "o", label="trial", alpha=0.8)
    ax.step([xi for xi, _ in valued], [e["best_so_far"] for _, e in valued], where="post", color="tab:red", label="best so far")
    pruned = [xi for xi, e in zip(x, history) if e["state"] == "pruned"]
    if pruned:
        # a pruned trial has no final value: marked at the foot of the panel, at its place in the search
        bottom = blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot(pruned, [0.03] * len(pruned), "x", color="tab:gray", transform=bottom, label=f"pruned ({len(pruned)})")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are whole numbers
    ax.set(xlabel="trial", ylabel=f"{part} {metric}".strip(), title="optimization history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def draw_trial_curves(ax, curves: list[dict[str, Any]]) -> None:
    """The value the pruner watched, per epoch and trial: completed trials in colour, pruned ones grey, ending in a cross."""
    for curve in curves:
        epochs = [e for e, v in enumerate(curve["values"], 1) if v is not None]
        values = [v for v in curve["values"] if v is not None]
        if curve["state"] == "pruned":
            ax.plot(epochs, values, color="tab:gray", alpha=0.6, linewidth=1)
            ax.plot(epochs[-1:], values[-1:], "x", color="tab:gray")
        else:
            ax.plot(epochs, values, marker="o", markersize=3, linewidth=1.2, alpha=0.9)
    ax.set(xlabel="epoch", ylabel=curves[0]["monitor"], title="per epoch: pruned trials (grey) end where they were stopped")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)


def draw_importance(ax, summary: dict[str, Any]) -> None:
    """Horizontal bars, the most important parameter on top, named as the points' panel names them."""

    importance = summary["importance"]
    ranked = sorted(importance["params"].items(), key=lambda kv: kv[1])  # barh draws bottom-up
    names = param_names([k for k, _ in ranked])
    ax.barh([names[k] for k, _ in ranked], [v for _, v in ranked], color="tab:blue")
    ax.set_xlim(0, 1)
    evaluator = {"fanova": "fANOVA", "ped-anova": "PED-ANOVA"}.get(importance.get("evaluator"), importance.get("evaluator"))
    ax.set(xlabel="share of importance", title=f"parameter importance ({evaluator}, {importance['trials']} trials)")
    ax.grid(alpha=0.3, axis="x")


def param_names(params: list[str]) -> dict[str, str]:
    """compare's short names, but a list index keeps its list: model.hidden_units.0 -> hidden_units.0, not 0."""
    names = short_names(params)
    return {k: ".".join(k.split(".")[-2:]) if name.isdigit() else name for k, name in names.items()}
