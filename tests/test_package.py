"""kexp as users get it: a wheel installed in a fresh venv, used from another directory."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_pima_csv

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv holding only the built wheel; TensorFlow and the other dependencies come from this
    Python's site-packages through a plain path entry (not its .pth files, which would put the
    checkout's editable kexp first)."""
    root = tmp_path_factory.mktemp("package")
    built = run(sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation", "-w", root / "dist", cwd=root)
    assert built.returncode == 0, built.stderr
    [wheel] = (root / "dist").glob("kexp-*.whl")
    made = run(sys.executable, "-m", "venv", root / "venv", cwd=root)
    assert made.returncode == 0, made.stderr
    python = root / "venv" / "bin" / "python"
    venv_site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root).stdout.strip()
    Path(venv_site, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    installed = run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=root)
    assert installed.returncode == 0, installed.stderr
    return root / "venv"


@pytest.mark.long
def test_the_wheel_runs_outside_the_checkout(venv, tmp_path):
    where = run(venv / "bin" / "python", "-c", "import kexp; print(kexp.__file__)", cwd=tmp_path).stdout
    assert str(venv) in where  # the installed copy, not the checkout
    assert run(venv / "bin" / "python", "-m", "kexp", "--version", cwd=tmp_path).stdout.startswith("kexp ")
    kexp = venv / "bin" / "kexp"
    made = run(kexp, "init", "--from", "pima", "pima.yaml", cwd=tmp_path)  # the tutorial configs ship in the wheel
    assert made.returncode == 0, made.stderr
    (tmp_path / "data").mkdir()
    write_pima_csv(tmp_path / "data" / "pima-indians-diabetes.data.csv", rows=60)
    trained = run(kexp, "train", "pima.yaml", "--set", "train.epochs=2", "--log-format", "plain", cwd=tmp_path, env={"KEXP_DATA_DIR": "data"})
    assert trained.returncode == 0, trained.stderr
    [run_dir] = (tmp_path / "runs").iterdir()
    assert (run_dir / "metrics.json").is_file() and (run_dir / "model.keras").is_file()


def test_the_readme_is_a_short_guide_with_the_spec_early():
    lines = (Path(__file__).resolve().parent.parent / "README.md").read_text().splitlines()
    assert len(lines) < 400
    assert next(i for i, line in enumerate(lines, 1) if line.startswith("```yaml")) < 150
