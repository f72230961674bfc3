"""`kexp data fetch`, `kexp data list` and `kexp doctor`: is this machine ready to train?"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from kexp.cli.common import DataDirOption, JsonOption, RunsDirOption, console, exit_on_error


def data_fetch(
    name: Annotated[str, typer.Argument(help="Data set to download, e.g. imdb")],
    data_dir: DataDirOption = None,
) -> None:
    """Download a data set from its canonical source into the data directory, checking SHA-256."""
    from kexp.cli.display import DownloadBars
    from kexp.datasets.base import resolve_data_dir
    from kexp.fetch import fetch

    with exit_on_error():
        for path in fetch(name=name, data_dir=resolve_data_dir(data_dir), emit=DownloadBars(console)):
            console.print(f"ok: {path}", highlight=False)


def data_list(data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Every data set `kexp data fetch` can get: its files in the data directory, present and SHA-256-checked, and their source."""
    from kexp.cli.results import file_json, print_data_sets
    from kexp.datasets.base import resolve_data_dir
    from kexp.fetch import check_datasets, dataset_state

    folder = resolve_data_dir(data_dir)
    found = check_datasets(data_dir=folder)
    if as_json:
        rows = [{"name": name, "state": dataset_state(files), "files": [file_json(f) for f in files]} for name, files in found.items()]
        print(json.dumps({"data_dir": os.path.abspath(folder), "datasets": rows}, indent=2))
        return
    print_data_sets(os.path.abspath(folder), found)


def doctor(data_dir: DataDirOption = None, runs_dir: RunsDirOption = Path("runs"), as_json: JsonOption = False) -> None:
    """Check this machine for kexp: Python, TensorFlow, Keras, GPUs, CUDA, NLTK corpora, data files, runs directory.

    Exit 1 if any check fails (each failure is printed with its fix), 0 otherwise; warnings
    are things some experiments need (a data set not downloaded, a GPU TensorFlow cannot use).
    """
    from kexp.cli.results import print_doctor
    from kexp.doctor import failed, run_checks

    checks = run_checks(data_dir=data_dir, runs_dir=runs_dir)
    if as_json:
        print(json.dumps({"ok": not failed(checks), "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        print_doctor(checks)
    raise typer.Exit(1 if failed(checks) else 0)
