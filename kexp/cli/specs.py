"""`kexp validate`, `kexp init`, `kexp datasets` and `kexp models`: writing and checking specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kexp.cli.common import JsonOption, RunsDirOption, SetOption, console, exit_on_error, usage_error
from kexp.cli.completion import complete_datasets, complete_examples, complete_models


def validate(
    config: Annotated[Path, typer.Argument(help="Experiment spec (YAML)")],
    set_: SetOption = [],
    show: Annotated[bool, typer.Option("--show", help="Print the resolved spec with every default filled in")] = False,
    runs_dir: RunsDirOption = Path("runs"),
) -> None:
    """Check a spec (and overrides) as `kexp train` would before reading data; exit 2 if it is invalid."""
    from kexp.run.dirs import check_runs_dir
    from kexp.spec import load_spec, read_yaml

    with exit_on_error():
        source = read_yaml(config)  # once: a spec from a pipe cannot be read twice
        if "sweep" in source.raw:  # every trial's spec, as `kexp sweep` checks them
            from kexp.sweep.space import plan_sweep

            plan = plan_sweep(config, set_, [], source=source)
            check_runs_dir(runs_dir)
            trials = f"{plan.space.samples} tpe trials" if plan.space.method == "tpe" else f"{len(plan.trials)} trials"
            console.print(f"{config}: valid sweep of {trials} over {', '.join(plan.space.params)}", highlight=False)
            return
        spec = load_spec(config, set_, source=source)
        check_runs_dir(runs_dir)
    if show:
        console.print(spec.to_yaml(), highlight=False, markup=False)
    console.print(f"{config}: valid ({spec.data.name} data, {spec.model.name} model, {spec.train.epochs} epoch{'s' * (spec.train.epochs != 1)})", highlight=False)


def init(
    path: Annotated[Path | None, typer.Argument(help="Where to write the spec (default: print it)")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Registered dataset, see kexp datasets (default: pima)", autocompletion=complete_datasets)] = None,
    model: Annotated[str | None, typer.Option("--model", help="Registered model, see kexp models (default: mlp)", autocompletion=complete_models)] = None,
    example: Annotated[str | None, typer.Option("--from", help="Copy a tutorial config instead, e.g. pima, mnist_cnn, sms_spam (configs/NAME.yaml)", autocompletion=complete_examples)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace PATH if it exists")] = False,
) -> None:
    """Write a starter spec: every option at its default, each commented; or a copy of a tutorial config (--from)."""
    from kexp.starter import DEFAULT_DATASET, DEFAULT_MODEL, read_example, render_starter, write_text

    if example is not None and (dataset is not None or model is not None):
        usage_error("--from copies a tutorial config as it is: give it without --dataset or --model")
    with exit_on_error():
        if example is not None:
            text = read_example(example, path)
        else:
            text = render_starter(dataset or DEFAULT_DATASET, model or DEFAULT_MODEL, path)
        if path is None:
            print(text, end="")
            return
        write_text(text, path, force)
    console.print(f"wrote {path}; check it with `kexp validate {path}`, train with `kexp train {path}`", highlight=False, markup=False)


PluginOption = Annotated[list[str], typer.Option("--plugin", help="Also import this plugin (a .py file or a module), as a spec's plugins: would. Repeatable.")]


def datasets(as_json: JsonOption = False, plugin: PluginOption = []) -> None:
    """List the registered datasets (built-in, and from plugins: installed ones and --plugin) with their options and defaults."""
    print_entries("datasets", as_json, plugin)


def models(as_json: JsonOption = False, plugin: PluginOption = []) -> None:
    """List the registered models (built-in, and from plugins: installed ones and --plugin) with their options and defaults."""
    print_entries("models", as_json, plugin)


def print_entries(kind: str, as_json: bool, plugins: list[str] = ()) -> None:
    from kexp.cli.results import print_entry_table
    from kexp.plugins import import_plugins, resolve_names
    from kexp.registry import load_components

    with exit_on_error():
        load_components()  # the built-ins first, so a plugin reusing a built-in's name is the one refused
        import_plugins(resolve_names(list(plugins), Path.cwd()))
        rows = describe_entries(kind)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print_entry_table(kind, rows)


def describe_entries(kind: str) -> list[dict]:
    from kexp.plugins import origin_of
    from kexp.registry import DATASETS, MODELS, load_components

    load_components()
    registry = DATASETS if kind == "datasets" else MODELS
    return [{"name": e.name, "summary": e.summary, "origin": origin_of(registry, e.name), "options": describe_options(e.options)}
            for e in registry.entries()]


def describe_options(options: type, defaults: object = None, prefix: str = "") -> list[dict]:
    """Every option as {name, required, default, description}; nested option groups as dotted names (text.num_words)."""
    from pydantic import BaseModel

    rows = []
    for field_name, info in options.model_fields.items():
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if defaults is not None:
            default = getattr(defaults, field_name)
        if isinstance(default, BaseModel) and not isinstance(default, list):
            rows += describe_options(type(default), default, f"{prefix}{field_name}.")
            continue
        if isinstance(default, list):
            default = [d.model_dump() if isinstance(d, BaseModel) else d for d in default]
        rows.append({"name": prefix + field_name, "required": info.is_required(), "default": default, "description": info.description or ""})
    return rows
