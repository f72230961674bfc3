"""`kexp doctor` and `kexp data list`: what they find, what they say to do, and the exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kexp import doctor
from kexp.cli import app
from kexp.run.io import sha256_file
from tests.conftest import write_idx, write_pima_csv

SHARED_DATA, SHARED_NLTK = os.environ.get("KEXP_DATA_DIR"), os.environ.get("NLTK_DATA")


def run_kexp(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """kexp in its own process: NLTK reads NLTK_DATA once, at import, so a changed one needs a fresh process."""
    return subprocess.run([sys.executable, "-m", "kexp", *args], capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def rows_of(output: str) -> dict[str, str]:
    """{check name: its table row}; the table is printed at full width when piped, one line per check."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 3 and cells[1]:
            rows[cells[1]] = line
    return rows


def nltk_corpus_outside(home: Path, name: str) -> bool:
    """Whether NLTK finds `name` in a system folder (/usr/share/nltk_data …) that no test setting can hide."""
    import nltk

    ours = set(filter(None, (SHARED_NLTK or "").split(os.pathsep)))
    system = [p for p in nltk.data.path if p not in ours and not p.startswith(str(Path.home())) and not p.startswith(str(home))]
    return any((Path(p) / "corpora" / f"{name}{suffix}").exists() for p in system for suffix in ("", ".zip"))


@pytest.mark.long
def test_doctor_reports_missing_nltk_corpora_and_an_incomplete_data_set_and_exits_1(tmp_path):
    if nltk_corpus_outside(tmp_path, "stopwords"):
        pytest.skip("NLTK's stopwords are installed in a system folder")
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)  # two of mnist's four files: kexp could not read it
    write_idx(data / "mnist" / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28)), 2051)
    write_idx(data / "mnist" / "train-labels-idx1-ubyte.gz", np.zeros(2), 2049)
    (tmp_path / "nltk").mkdir()
    done = run_kexp(["doctor", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs")],
                    NLTK_DATA=str(tmp_path / "nltk"), HOME=str(tmp_path), KEXP_OFFLINE="")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = rows_of(done.stdout)
    for name in ("nltk stopwords", "nltk wordnet"):
        assert " warn " in rows[name] and "not found" in rows[name] and f"nltk.downloader {name.split()[1]}" in rows[name]
    assert " fail " in rows["data mnist"] and "t10k-images-idx3-ubyte.gz missing" in rows["data mnist"]
    assert " warn " in rows["data pima"] and "kexp data fetch pima" in rows["data pima"]  # absent, not broken
    assert "kexp: error: data mnist: incomplete: t10k-images-idx3-ubyte.gz missing" in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("fix: kexp data fetch mnist")
    assert not (tmp_path / "runs").exists()  # probed, never created


@pytest.mark.skipif(not (SHARED_DATA and SHARED_NLTK and Path(SHARED_DATA, "pima-indians-diabetes.data.csv").is_file()),
                    reason="needs KEXP_DATA_DIR and NLTK_DATA pointing at the real data (../shared)")
@pytest.mark.long
def test_doctor_on_the_shared_setup_reports_ok_and_exits_0(tmp_path):
    done = run_kexp(["doctor", "--json", "--runs-dir", str(tmp_path / "runs")])
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True
    for name in ("python", "tensorflow", "keras", "nltk stopwords", "nltk wordnet", "data directory", "data pima", "data sms_spam", "runs directory"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "SHA-256 matches the published download" in checks["data pima"]["found"]
    assert checks["nltk stopwords"]["found"].endswith("stopwords.zip")
    assert "kexp train creates it" in checks["runs directory"]["found"] and not (tmp_path / "runs").exists()


# --- the checks one by one, without TensorFlow ---------------------------------------------


def fake_tf(gpus: list, cuda_build: bool = True) -> SimpleNamespace:
    config = SimpleNamespace(list_physical_devices=lambda kind: gpus,
                             experimental=SimpleNamespace(get_device_details=lambda gpu: {"device_name": "NVIDIA H100", "compute_capability": (9, 0)}))
    return SimpleNamespace(
        config=config,
        test=SimpleNamespace(is_built_with_cuda=lambda: cuda_build),
        sysconfig=SimpleNamespace(get_build_info=lambda: {"is_cuda_build": cuda_build, "cuda_version": "12.5.1", "cudnn_version": "9"}),
    )


def test_gpu_check_says_why_tensorflow_sees_no_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    driver = "NVIDIA H100 (driver 550.54)"
    assert doctor.check_gpus(fake_tf([]), None).status == "ok"  # a CPU machine is fine
    cpu_build = doctor.check_gpus(fake_tf([], cuda_build=False), driver)
    assert cpu_build.status == "warn" and "CPU-only build" in cpu_build.found and "tensorflow[and-cuda]" in cpu_build.fix
    no_libraries = doctor.check_gpus(fake_tf([]), driver)
    assert no_libraries.status == "warn" and "CUDA 12.5.1" in no_libraries.found and "tensorflow[and-cuda]" in no_libraries.fix
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert "CUDA_VISIBLE_DEVICES" in doctor.check_gpus(fake_tf([]), driver).found
    seen = doctor.check_gpus(fake_tf([SimpleNamespace(name="/physical_device:GPU:0")]), driver)
    assert seen.status == "ok" and seen.found == "GPU:0 NVIDIA H100 (compute 9.0)"
    assert doctor.check_cuda_build(fake_tf([])).found == "CUDA 12.5.1, cuDNN 9"
    assert doctor.check_cuda_build(fake_tf([], cuda_build=False)).found == "none: a CPU-only TensorFlow"


def test_versions_are_checked_against_the_declared_minimums(monkeypatch):
    python, minimums = doctor.declared_requirements()
    assert python == ">=3.11" and minimums["tensorflow"] == "2.16" and minimums["keras"] == "3.15"
    assert doctor.at_least("2.16.1", "2.16") and doctor.at_least("3.15.0rc1", "3.15") and not doctor.at_least("2.15.1", "2.16")
    monkeypatch.setitem(sys.modules, "tensorflow", SimpleNamespace(__version__="2.15.0"))
    monkeypatch.setitem(sys.modules, "keras", SimpleNamespace(__version__="3.15.1"))
    (tf_check, keras_check), _ = doctor.check_tensorflow()
    assert tf_check.status == "fail" and tf_check.fix == "pip install -U 'tensorflow>=2.16'"
    assert keras_check.status == "ok"


def test_nltk_check_follows_nltk_search_path(tmp_path, monkeypatch):
    import nltk

    (tmp_path / "corpora").mkdir()
    with zipfile.ZipFile(tmp_path / "corpora" / "stopwords.zip", "w") as zf:
        zf.writestr("stopwords/english", "a\nthe\n")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.delenv("KEXP_OFFLINE", raising=False)
    assert doctor.check_nltk_corpus("stopwords").found == str(tmp_path / "corpora" / "stopwords.zip")
    missing = doctor.check_nltk_corpus("wordnet")
    assert missing.status == "warn" and "lemmatize: true" in missing.found
    monkeypatch.setenv("KEXP_OFFLINE", "1")  # then kexp cannot fetch it when needed
    assert doctor.check_nltk_corpus("wordnet").status == "fail"
    (tmp_path / "corpora" / "wordnet.zip").write_bytes(b"PK\x03\x04 truncated")
    damaged = doctor.check_nltk_corpus("wordnet")
    assert damaged.status == "fail" and "damaged" in damaged.found and damaged.fix.startswith("delete it")


def test_runs_dir_check_probes_without_creating(tmp_path):
    assert doctor.check_runs_dir(tmp_path).found.endswith("writable")
    absent = doctor.check_runs_dir(tmp_path / "runs")
    assert absent.status == "ok" and f"creates it in {tmp_path}" in absent.found and not (tmp_path / "runs").exists()
    (tmp_path / "file").write_text("")
    blocked = doctor.check_runs_dir(tmp_path / "file" / "runs")
    assert blocked.status == "fail" and "not a directory" in blocked.found and "--runs-dir" in blocked.fix


def test_missing_data_directory_fails(tmp_path):
    (check,) = doctor.check_data(tmp_path / "nowhere")
    assert check.status == "fail" and "does not exist" in check.found and "KEXP_DATA_DIR" in check.fix


# --- kexp data list ----------------------------------------------------------------------


def test_data_list_shows_present_missing_and_invalid_files(runner, tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "sms").mkdir(parents=True)
    write_pima_csv(data / "pima-indians-diabetes.data.csv")  # not the published bytes: invalid
    (data / "sms" / "SMSSpamCollection").write_text("ham\thello\n")  # extracted; the zip is no longer needed
    result = runner.invoke(app, ["data", "list", "--data-dir", str(data), "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    found = {d["name"]: d for d in listing["datasets"]}
    assert listing["data_dir"] == str(data)
    assert {name: d["state"] for name, d in found.items()} == {"imdb": "missing", "mnist": "missing", "pima": "differs", "sms_spam": "ready"}
    (pima,) = found["pima"]["files"]
    assert pima["state"] == "differs" and pima["path"] == str(data / "pima-indians-diabetes.data.csv")
    assert pima["sha256"] != pima["expected_sha256"] and pima["url"].startswith("https://")
    archive, extracted = found["sms_spam"]["files"]
    assert (archive["state"], archive["needed"], extracted["state"]) == ("missing", False, "present")
    assert [f["state"] for f in found["mnist"]["files"]] == ["missing"] * 4

    table = runner.invoke(app, ["data", "list", "--data-dir", str(data)])
    assert table.exit_code == 0 and "pima: differs" in table.output and f"not the published file (sha256 {pima['sha256'][:12]}…); it reads whole" in table.output
    assert "INVALID" not in table.output
    assert "mnist: missing" in table.output and str(data / "mnist" / "t10k-labels-idx1-ubyte.gz") in table.output

    # the same file is valid once its hash is the published one
    from kexp import fetch

    source = fetch.SOURCES["pima"][0]
    monkeypatch.setitem(fetch.SOURCES, "pima", [fetch.Source(source.url, sha256_file(data / source.target), source.target)])
    result = runner.invoke(app, ["data", "list", "--data-dir", str(data), "--json"])
    pima = next(d for d in json.loads(result.output)["datasets"] if d["name"] == "pima")
    assert pima["state"] == "ready" and pima["files"][0]["state"] == "valid"
    assert doctor.check_dataset("pima", data).status == "ok"


def test_a_copy_that_reads_whole_but_is_not_the_published_file_is_a_warning_with_no_fetch_suggested(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_pima_csv(data / "pima-indians-diabetes.data.csv")
    check = doctor.check_dataset("pima", data)
    assert check.status == "warn" and "pima-indians-diabetes.data.csv is not the published file (sha256 " in check.found
    assert "every file reads whole, so kexp uses them" in check.found and "fetch" not in check.fix
