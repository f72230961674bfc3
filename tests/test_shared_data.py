"""kexp.datasets.shared: a sweep's data prepared once, loaded by its trials; damaged or stale entries fall back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_spec

from kexp.datasets import shared
from kexp.datasets.pipeline import load_dataset
from kexp.datasets.shared import SHARED_DATA_ENV, data_fingerprint, load_shared_data, shared_data_env
from kexp.spec import load_spec

WORDS = {"spam": ["win", "prize", "cash", "free", "claim"], "ham": ["lunch", "see", "you", "later", "home"]}


def write_messages(path: Path, rows: int = 80) -> Path:
    """An SMS-spam-like CSV: spam and ham messages from two vocabularies, with some shared noise words."""
    rng = np.random.default_rng(0)
    lines = ["text,label"]
    for i in range(rows):
        label = "spam" if i % 2 else "ham"
        words = list(rng.choice(WORDS[label], 4)) + list(rng.choice(["the", "a", "ok", "now"], 2))
        lines.append(f"{' '.join(words)} {i},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def text_spec(tmp_path: Path, num_words: int = 50, **model) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    write_messages(data_dir / "messages.csv")
    spec = {"name": "texts", "seed": 0, "data": {"name": "text_csv", "path": "messages.csv", "test_fraction": 0.25, "text": {"num_words": num_words}},
            "model": {"name": "mlp", "hidden_units": [8], **model}, "train": {"epochs": 2, "batch_size": 16}}
    return write_spec(tmp_path / f"spec-{num_words}.yaml", spec)


class Events(list):
    def __call__(self, kind: str, /, **fields) -> None:
        self.append((kind, fields))

    def kinds(self, kind: str) -> list[dict]:
        return [fields for k, fields in self if k == kind]


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEXP_CACHE_DIR", str(tmp_path / "token-cache"))
    monkeypatch.delenv(SHARED_DATA_ENV, raising=False)


def test_trials_that_share_the_data_spec_prepare_it_once_and_load_the_same_arrays(tmp_path, monkeypatch):
    spec, data_dir, sweep = load_spec(text_spec(tmp_path)), tmp_path / "data", tmp_path / "sweep"
    events = Events()
    envs = [shared_data_env(sweep, spec, data_dir, events) for _ in range(3)]  # the driver, before each of 3 trials
    assert [e["reused"] for e in events.kinds("shared_data")] == [False, True, True]
    assert envs[0] == {SHARED_DATA_ENV: str((sweep / "data-cache").resolve())} and envs[0] == envs[2]
    assert [p.name for p in (sweep / "data-cache").iterdir()] == [data_fingerprint(spec, data_dir)]

    monkeypatch.setenv(SHARED_DATA_ENV, envs[0][SHARED_DATA_ENV])
    loaded, expected = load_shared_data(spec, data_dir, events), load_dataset(spec, data_dir)
    for part in ("train", "test"):
        assert np.array_equal(getattr(loaded.data, part).x, getattr(expected, part).x)
        assert np.array_equal(getattr(loaded.data, part).y, getattr(expected, part).y)
    assert loaded.data.preprocessing.vocabulary == expected.preprocessing.vocabulary
    assert loaded.data.summary["files"] == expected.summary["files"]  # resume's SHA-256 check reads these
    assert loaded.data.summary["shared_data"] == data_fingerprint(spec, data_dir)
    assert events.kinds("shared_data_loaded") and not events.kinds("warning")


def test_a_differing_data_spec_gets_its_own_entry_and_a_differing_model_shares(tmp_path):
    data_dir = tmp_path / "data"
    small, large, wider = (load_spec(text_spec(tmp_path, 20)), load_spec(text_spec(tmp_path, 40)),
                           load_spec(text_spec(tmp_path, 20, hidden_units=[32])))
    assert data_fingerprint(small, data_dir) != data_fingerprint(large, data_dir)
    assert data_fingerprint(small, data_dir) == data_fingerprint(wider, data_dir)
    for spec in (small, large, wider):
        shared_data_env(tmp_path / "sweep", spec, data_dir)
    assert len(list((tmp_path / "sweep" / "data-cache").iterdir())) == 2


def prepared_entry(tmp_path: Path, monkeypatch) -> tuple:
    spec, data_dir = load_spec(text_spec(tmp_path)), tmp_path / "data"
    env = shared_data_env(tmp_path / "sweep", spec, data_dir)
    monkeypatch.setenv(SHARED_DATA_ENV, env[SHARED_DATA_ENV])
    return spec, data_dir, Path(env[SHARED_DATA_ENV]) / data_fingerprint(spec, data_dir)


@pytest.mark.parametrize("damage, reason", [
    (lambda entry: (entry / "arrays.bin").write_bytes(b"short"), "arrays.bin has 5 bytes"),
    (lambda entry: (entry / "objects.pkl").write_bytes(b"x" * (entry / "objects.pkl").stat().st_size), "objects.pkl differs"),
    (lambda entry: (entry / "entry.json").write_text("{not json"), "entry.json unreadable"),
])
def test_a_damaged_entry_is_not_used_the_trial_warns_and_prepares_its_own(tmp_path, monkeypatch, damage, reason):
    from kexp.train.experiment import read_or_load_data

    spec, data_dir, entry = prepared_entry(tmp_path, monkeypatch)
    damage(entry)
    events = Events()
    assert load_shared_data(spec, data_dir, events) is None
    [warning] = events.kinds("warning")
    assert reason in warning["message"] and "this trial prepares the data itself" in warning["message"]
    _, _, data = read_or_load_data(spec, data_dir, Events())
    assert np.array_equal(data.test.y, load_dataset(spec, data_dir).test.y) and "shared_data" not in data.summary

    shared_data_env(tmp_path / "sweep", spec, data_dir)  # the driver replaces a damaged entry
    assert load_shared_data(spec, data_dir) is not None


def test_an_entry_of_data_files_changed_since_is_not_used(tmp_path, monkeypatch):
    spec, data_dir, entry = prepared_entry(tmp_path, monkeypatch)
    write_messages(data_dir / "messages.csv", rows=60)
    events = Events()
    assert load_shared_data(spec, data_dir, events) is None
    assert "messages.csv changed since the entry was prepared" in events.kinds("warning")[0]["message"]


def test_no_sharing_for_a_plugin_dataset_or_data_that_cannot_be_read(tmp_path, monkeypatch):
    spec, data_dir = load_spec(text_spec(tmp_path)), tmp_path / "data"
    monkeypatch.setattr(shared, "is_plugin_entry", lambda fn: True)
    assert data_fingerprint(spec, data_dir) is None and shared_data_env(tmp_path / "sweep", spec, data_dir) == {}
    monkeypatch.undo()
    events = Events()
    assert shared_data_env(tmp_path / "sweep", spec, tmp_path / "elsewhere", events) == {}  # the trials report the missing file
    assert "the sweep's shared data was not prepared (DataError" in events.kinds("warning")[0]["message"]


def test_without_the_variable_nothing_is_loaded_and_off_turns_sharing_off(tmp_path, monkeypatch):
    spec, data_dir = load_spec(text_spec(tmp_path)), tmp_path / "data"
    shared_data_env(tmp_path / "sweep", spec, data_dir)
    assert load_shared_data(spec, data_dir) is None
    monkeypatch.setenv(SHARED_DATA_ENV, "off")
    assert shared_data_env(tmp_path / "sweep2", spec, data_dir) == {} and not (tmp_path / "sweep2").exists()
    assert load_shared_data(spec, data_dir) is None


@pytest.mark.long
@pytest.mark.slow
def test_a_three_trial_sweep_prepares_once_and_scores_as_runs_without_the_cache(tmp_path):
    config = text_spec(tmp_path)
    spec = yaml.safe_load(config.read_text())
    spec["sweep"] = {"params": {"model.hidden_units.0": [4, 8, 16]}}
    write_spec(config, spec)
    data = ["--data-dir", str(tmp_path / "data")]
    done = subprocess.run([sys.executable, "-m", "kexp", "sweep", str(config), "--parallel", "2", "--runs-dir", str(tmp_path / "runs"), *data],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("data: prepared once for the trials that share it") == 1
    [sweep_dir] = (tmp_path / "runs" / "sweeps").iterdir()
    [entry] = (sweep_dir / "data-cache").iterdir()
    trial_specs = sorted((sweep_dir / "specs").glob("trial-*.yaml"))
    assert len(trial_specs) == 3
    for trial_spec in trial_specs:
        metrics = json.loads((sweep_dir / trial_spec.stem / "metrics.json").read_text())
        assert metrics["data"]["shared_data"] == entry.name
        alone = subprocess.run([sys.executable, "-m", "kexp", "train", str(trial_spec), "--runs-dir", str(tmp_path / "alone"), *data],
                               capture_output=True, text=True, timeout=300)
        assert alone.returncode == 0, alone.stderr
        [run] = [p for p in (tmp_path / "alone").iterdir() if p.is_dir()]
        plain = json.loads((run / "metrics.json").read_text())
        assert "shared_data" not in plain["data"] and plain["test"]["accuracy"] == metrics["test"]["accuracy"]
        assert plain["test"]["loss"] == metrics["test"]["loss"]
        shutil.rmtree(run)
