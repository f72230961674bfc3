"""Plugins: a spec's own model and dataset code, recorded with each run and checked again when the run is reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kexp.cli import app
from kexp.plugins import unload_all
from tests.conftest import write_spec

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "kexp-example-plugin"

TOWERS = '''
import kexp
from pydantic import Field


class TowerOptions(kexp.Options):
    units: int = Field(default=8, ge=1)


@kexp.model("towers", TowerOptions)
def build(options, input_shape, num_outputs, task):
    """Two Dense towers, concatenated."""
    import keras
    inputs = keras.Input(shape=input_shape)
    a = keras.layers.Dense(options.units, activation="relu")(inputs)
    b = keras.layers.Dense(options.units, activation="tanh")(inputs)
    outputs = keras.layers.Dense(num_outputs, activation="sigmoid" if num_outputs == 1 else "softmax")(keras.layers.Concatenate()([a, b]))
    return keras.Model(inputs, outputs)
'''


@pytest.fixture(autouse=True)
def fresh_plugins():
    """Each test imports its own plugins: none stays registered for the next."""
    unload_all()
    yield
    unload_all()


def plugin_spec(folder: Path, plugin: str = "towers.py", model: dict | None = None, **extra) -> Path:
    spec = {"name": "plug", "plugins": [plugin], "data": {"name": "synthetic", "samples": 120}, "model": model or {"name": "towers"},
            "train": {"epochs": 1, "batch_size": 16}, **extra}
    return write_spec(folder / "spec.yaml", spec)


def train(folder: Path, spec: Path):
    return CliRunner().invoke(app, ["train", str(spec), "--runs-dir", str(folder / "runs")])


def one_run(folder: Path) -> Path:
    (run,) = (folder / "runs").iterdir()
    return run


@pytest.fixture
def trained(tmp_path) -> Path:
    (tmp_path / "towers.py").write_text(TOWERS)
    result = train(tmp_path, plugin_spec(tmp_path))
    assert result.exit_code == 0, result.output
    return one_run(tmp_path)


def test_a_run_keeps_a_copy_and_the_hash_of_its_plugin(trained, tmp_path):
    env = json.loads((trained / "env.json").read_text())
    (record,) = env["plugins"]
    assert record["file"] == str(tmp_path / "towers.py") and record["module"] == "towers" and record["copy"] == "plugins/towers.py"
    import hashlib

    assert record["sha256"] == hashlib.sha256(TOWERS.encode()).hexdigest()
    assert (trained / "plugins" / "towers.py").read_text() == TOWERS
    assert f"- {tmp_path / 'towers.py'}" in (trained / "config.yaml").read_text()  # the resolved spec names the file absolutely


def test_evaluate_refuses_a_changed_plugin_until_allowed(trained, tmp_path):
    assert CliRunner().invoke(app, ["evaluate", str(trained)]).exit_code == 0
    (tmp_path / "towers.py").write_text(TOWERS + "\n# edited\n")
    for command in (["evaluate", str(trained)], ["predict", str(trained), "whatever.csv"], ["export", str(trained), "--format", "tflite"]):
        refused = CliRunner().invoke(app, command)
        assert refused.exit_code == 2, (command, refused.output)
        line = refused.output.strip().splitlines()[-1]
        assert f"{tmp_path / 'towers.py'}: plugin changed since {trained.name} ran it" in line and "--allow-changed-code" in line
        assert line.count("…") == 2  # both hashes, shortened
    allowed = CliRunner().invoke(app, ["evaluate", str(trained), "--allow-changed-code", "--json"])
    assert allowed.exit_code == 0, allowed.output
    document = json.loads(allowed.stdout[allowed.stdout.index("{"):])
    assert any("plugin changed since the run" in w and "--allow-changed-code" in w for w in document["warnings"])


def test_a_run_whose_plugin_file_is_gone_uses_its_own_copy(trained, tmp_path):
    (tmp_path / "towers.py").unlink()
    result = CliRunner().invoke(app, ["evaluate", str(trained), "--json"])
    assert result.exit_code == 0, result.output
    assert "using the run's copy" in result.output


def test_models_lists_a_plugin_with_where_it_comes_from(tmp_path):
    (tmp_path / "towers.py").write_text(TOWERS)
    result = CliRunner().invoke(app, ["models", "--json", "--plugin", str(tmp_path / "towers.py")])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["towers"]["origin"] == f"plugin {tmp_path / 'towers.py'}" and rows["mlp"]["origin"] == "built-in"
    assert rows["towers"]["options"][0]["name"] == "units"


def test_plugin_options_are_validated_like_built_ins(tmp_path):
    (tmp_path / "towers.py").write_text(TOWERS)
    spec = plugin_spec(tmp_path, model={"name": "towers", "unitz": 3})
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2
    assert f"{spec}:" in result.output and "model.unitz: unknown key 'unitz' (did you mean 'units'?)" in result.output
    typo = CliRunner().invoke(app, ["validate", str(plugin_spec(tmp_path, model={"name": "tower"}))])
    assert typo.exit_code == 2 and "Unknown model 'tower'. Did you mean 'towers'?" in typo.output


def test_a_plugin_that_reuses_a_built_in_name_is_refused(tmp_path):
    (tmp_path / "dup.py").write_text(TOWERS.replace('"towers"', '"mlp"'))
    result = CliRunner().invoke(app, ["validate", str(plugin_spec(tmp_path, plugin="dup.py"))])
    assert result.exit_code == 2, result.output
    assert "model 'mlp' is already registered by kexp.models.mlp" in result.output


@pytest.mark.parametrize(("body", "line", "words"), [
    ("import kexp\n\nx = 1 / 0\n", 3, "plugin broken.py failed to import: ZeroDivisionError: division by zero"),
    ("import kexp\ndef f(:\n", 2, "plugin broken.py failed to import: SyntaxError"),
])
def test_a_plugin_that_fails_to_import_is_one_line_at_its_file_and_line(tmp_path, body, line, words):
    (tmp_path / "broken.py").write_text(body)
    result = CliRunner().invoke(app, ["train", str(plugin_spec(tmp_path, plugin="broken.py")), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    (message,) = result.output.strip().splitlines()
    assert message.startswith(f"kexp: error: {tmp_path / 'broken.py'}:{line}: {words}") and message.endswith(f"(listed at {tmp_path / 'spec.yaml'}:3)")
    assert not (tmp_path / "runs").exists()


def test_a_missing_plugin_module_is_named_at_the_spec_line(tmp_path):
    result = CliRunner().invoke(app, ["validate", str(plugin_spec(tmp_path, plugin="no_such_plugin_module"))])
    assert result.exit_code == 2
    assert f"{tmp_path / 'spec.yaml'}:3: plugins.0: no module named 'no_such_plugin_module'" in result.output


BROKEN_BUILDER = '''
import kexp


class O(kexp.Options):
    mode: str = "raise"


@kexp.model("broken", O)
def build(options, input_shape, num_outputs, task):
    """Broken on purpose."""
    if options.mode == "raise":
        raise RuntimeError("the towers do not fit")
    return "not a model"
'''


@pytest.mark.parametrize(("mode", "words"), [
    ("raise", ":13: model 'broken' raised RuntimeError: the towers do not fit"),
    ("return", ":10: model 'broken' returned str, not a keras.Model"),  # the def's line
])
def test_a_builder_that_raises_or_returns_no_model_is_one_line_and_leaves_no_running_run(tmp_path, mode, words):
    (tmp_path / "builder.py").write_text(BROKEN_BUILDER)
    result = train(tmp_path, plugin_spec(tmp_path, plugin="builder.py", model={"name": "broken", "mode": mode}))
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"kexp: error: {tmp_path / 'builder.py'}{words}")
    for run in (tmp_path / "runs").glob("*") if (tmp_path / "runs").exists() else ():
        assert json.loads((run / "status.json").read_text())["state"] != "running"


SUBCLASSED = '''
import keras
import kexp


@keras.saving.register_keras_serializable(package="test_plugins")
class Doubler(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x


@kexp.model("doubled", kexp.Options)
def build(options, input_shape, num_outputs, task):
    """A custom layer, saved and loaded in safe mode by its registered class."""
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="sigmoid")(Doubler()(inputs)))
'''


def test_a_custom_layer_from_a_plugin_is_reloaded_in_safe_mode(tmp_path):
    (tmp_path / "doubled.py").write_text(SUBCLASSED)
    spec = plugin_spec(tmp_path, plugin="doubled.py", model={"name": "doubled"}, data={"name": "synthetic", "samples": 120, "classes": 2})
    assert train(tmp_path, spec).exit_code == 0
    unload_all()  # a new process: evaluate imports the plugin again before it loads the model
    result = CliRunner().invoke(app, ["evaluate", str(one_run(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output


def kexp_process(args: list[str], cwd: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "kexp", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def fake_installed_example(site: Path) -> Path:
    """The example package's metadata as pip would install it (a dist-info with its entry point), its code on the path."""
    info = site / "kexp_example_plugin-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kexp-example-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[kexp.plugins]\nexample = kexp_example\n")
    (info / "top_level.txt").write_text("kexp_example\n")
    return site


def test_an_installed_plugin_is_listed_by_kexp_models_through_its_entry_point(tmp_path):
    site = fake_installed_example(tmp_path / "site")
    result = kexp_process(["models", "--json"], tmp_path, [site, EXAMPLE])
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["two_tower"]["origin"] == "entry point example (kexp_example 0.1.0)"
    listed = kexp_process(["datasets"], tmp_path, [site, EXAMPLE])
    assert "spirals" in listed.stdout and "entry point example" in listed.stdout


def test_a_module_plugin_is_imported_by_name(tmp_path):
    result = kexp_process(["validate", str(plugin_spec(tmp_path, plugin="kexp_example.models", model={"name": "two_tower"}))], tmp_path, [EXAMPLE])
    assert result.returncode == 0, result.stderr
    assert "two_tower model" in result.stdout


def test_nothing_else_in_a_spec_runs_code(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\ndata: !!python/object/apply:os.system ['touch pwned']\nmodel: mlp\n")
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and not (tmp_path / "pwned").exists() and "Traceback" not in result.output


@pytest.mark.long
def test_the_example_package_installs_with_pip_and_is_listed(tmp_path):
    import shutil

    target, source = tmp_path / "site", tmp_path / "kexp-example-plugin"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))  # pip builds in the source tree: not in ours
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    result = kexp_process(["models"], tmp_path, [target])
    assert result.returncode == 0, result.stderr
    assert "two_tower" in result.stdout and "entry point example" in result.stdout


def test_kexp_is_the_plugin_api():
    import kexp

    assert {"dataset", "model", "Options", "Examples"} <= set(kexp.__all__)
    assert kexp.model is __import__("kexp.registry", fromlist=["model"]).model
    with pytest.raises(AttributeError):
        kexp.no_such_name  # noqa: B018


def test_plugin_examples_are_documented():
    text = textwrap.dedent((EXAMPLE / "README.md").read_text())
    assert "pip install -e examples/kexp-example-plugin" in text


def test_a_continued_sweep_refuses_a_changed_plugin_until_allowed(tmp_path):
    (tmp_path / "towers.py").write_text(TOWERS)
    spec = plugin_spec(tmp_path)
    command = ["sweep", str(spec), "--param", "model.units=4", "--runs-dir", str(tmp_path / "runs")]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    (sweep_dir,) = (tmp_path / "runs" / "sweeps").iterdir()
    assert "towers.py" in (sweep_dir / "sweep.yaml").read_text()
    (tmp_path / "towers.py").write_text(TOWERS + "\n# edited\n")
    unload_all()
    refused = CliRunner().invoke(app, command)
    assert refused.exit_code == 2 and "plugin changed since" in refused.output and "--allow-changed-code" in refused.output
    unload_all()
    allowed = CliRunner().invoke(app, [*command, "--allow-changed-code"])
    assert allowed.exit_code == 0, allowed.output
    assert "kexp: warning: " in allowed.output and "plugin changed since the run" in allowed.output
    (kept,) = json.loads((sweep_dir / "manifest.json").read_text())["warnings"]
    assert "plugin changed since the run" in kept and "--allow-changed-code" in kept


def test_resume_refuses_a_changed_plugin_until_allowed_and_logs_the_warning(trained, tmp_path):
    status = json.loads((trained / "status.json").read_text())
    (trained / "status.json").write_text(json.dumps({**status, "state": "failed", "error": "made up for the test"}))
    (tmp_path / "towers.py").write_text(TOWERS + "\n# edited\n")
    refused = CliRunner().invoke(app, ["resume", str(trained)])
    assert refused.exit_code == 2 and "plugin changed since" in refused.output
    assert json.loads((trained / "status.json").read_text())["state"] == "failed"  # the run is left as it was
    allowed = CliRunner().invoke(app, ["resume", str(trained), "--allow-changed-code"])
    assert allowed.exit_code == 0, allowed.output
    assert "warning: " in (trained / "log.txt").read_text() and "plugin changed since the run" in (trained / "log.txt").read_text()


@pytest.mark.long
def test_a_two_tower_plugin_learns_mnist_from_an_npz_and_its_run_is_reused(tmp_path):
    """The issue's end-to-end check: a local plugin file, MNIST as one .npz, >= 0.95 in 3 epochs, then every reuse command."""
    import shutil

    import numpy as np

    from kexp.datasets.mnist import read_mnist_arrays

    data_dir = Path(os.environ.get("KEXP_DATA_DIR", "data"))
    if not (data_dir / "mnist").is_dir():
        pytest.skip(f"no MNIST files in {data_dir}")
    arrays, _ = read_mnist_arrays(data_dir)
    np.savez(tmp_path / "mnist.npz", **arrays)
    shutil.copy(EXAMPLE / "kexp_example" / "models.py", tmp_path / "my_models.py")
    spec = write_spec(tmp_path / "spec.yaml", {
        "name": "two-tower-mnist", "plugins": ["my_models.py"],
        "data": {"name": "numpy", "path": str(tmp_path / "mnist.npz")},
        "model": {"name": "two_tower", "filters": 16, "units": 128},
        "train": {"epochs": 3, "batch_size": 128},
    })  # fmt: skip
    result = train(tmp_path, spec)
    assert result.exit_code == 0, result.output
    run = one_run(tmp_path)
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.95
    assert CliRunner().invoke(app, ["evaluate", str(run)]).exit_code == 0
    np.save(tmp_path / "rows.npy", arrays["x_test"][:20])
    predicted = CliRunner().invoke(app, ["predict", str(run), str(tmp_path / "rows.npy"), "--json"])
    assert predicted.exit_code == 0, predicted.output
    labels = [json.loads(line)["label"] for line in predicted.stdout.splitlines() if line.startswith("{")]
    assert len(labels) == 20 and sum(label == str(y) for label, y in zip(labels, arrays["y_test"][:20])) >= 18
    exported = CliRunner().invoke(app, ["export", str(run), "--format", "tflite"])
    assert exported.exit_code == 0, exported.output
    with (tmp_path / "my_models.py").open("a") as f:
        f.write("\n# tuned after the run\n")
    assert CliRunner().invoke(app, ["evaluate", str(run)]).exit_code == 2
    assert CliRunner().invoke(app, ["evaluate", str(run), "--allow-changed-code"]).exit_code == 0


DATASET = '''
import numpy as np
import kexp


class BlobOptions(kexp.Options):
    rows: int = 120
    broken: bool = False


@kexp.dataset("pixel_blobs", BlobOptions)
def read(options, data_dir, seed):
    """Bright or dark 4x4 images, labelled by name."""
    rng = np.random.default_rng(seed)
    bright = rng.integers(0, 2, options.rows).astype(bool)
    x = np.where(bright[:, None, None], 200, 30).astype(np.uint8) + rng.integers(0, 20, (options.rows, 4, 4)).astype(np.uint8)
    y = np.where(bright, "bright", "dark")
    return kexp.Examples(x=x, y=y[:-1] if options.broken else y, test_fraction=0.25)
'''


def test_a_plugin_dataset_returns_examples_that_kexp_splits_scales_and_predicts(tmp_path):
    import numpy as np

    (tmp_path / "blobs.py").write_text(DATASET)
    spec = write_spec(tmp_path / "spec.yaml", {"name": "blobs", "plugins": ["blobs.py"], "data": {"name": "pixel_blobs"},
                                               "model": {"name": "mlp", "hidden_units": [8]}, "train": {"epochs": 30, "batch_size": 16}})
    result = train(tmp_path, spec)
    assert result.exit_code == 0, result.output
    run = one_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["test_size"] == 30 and metrics["data"]["class_names"] == ["bright", "dark"]
    assert "divided by 255" in metrics["data"]["scale"] and metrics["test"]["accuracy"] >= 0.9
    assert json.loads((run / "preprocessing" / "preprocessing.json").read_text())["kind"] == "arrays"
    np.save(tmp_path / "rows.npy", np.full((2, 4, 4), [[220]], np.uint8) * np.array([1, 0], np.uint8)[:, None, None])
    predicted = CliRunner().invoke(app, ["predict", str(run), str(tmp_path / "rows.npy"), "--json"])
    assert predicted.exit_code == 0, predicted.output
    assert [json.loads(line)["label"] for line in predicted.stdout.splitlines() if line.startswith("{")] == ["bright", "dark"]


def test_examples_that_do_not_fit_are_one_line_naming_the_plugin_file(tmp_path):
    (tmp_path / "blobs.py").write_text(DATASET)
    spec = write_spec(tmp_path / "spec.yaml", {"name": "blobs", "plugins": ["blobs.py"], "data": {"name": "pixel_blobs", "broken": True},
                                               "model": {"name": "mlp"}})
    result = train(tmp_path, spec)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"kexp: error: {tmp_path / 'blobs.py'}: Examples.y has 119 rows but Examples.x has 120"


MISFIT = '''
import kexp


class O(kexp.Options):
    inputs: int = 0
    outputs: int = 0


@kexp.model("misfit", O)
def build(options, input_shape, num_outputs, task):
    """A model built for other data, on purpose."""
    import keras
    inputs = keras.Input(shape=(options.inputs,) if options.inputs else input_shape)
    return keras.Model(inputs, keras.layers.Dense(options.outputs or num_outputs, activation="softmax")(inputs))
'''


@pytest.mark.parametrize(("options", "words"), [
    ({"outputs": 5}, ":11: model 'misfit' gives outputs of shape [5] per example; this data needs [3] (num_outputs: 3"),
    ({"inputs": 100}, ":11: model 'misfit' on one example of shape [8] raised ValueError: Input 0 "),
])
def test_a_model_built_for_other_data_is_one_line_before_training(tmp_path, options, words):
    (tmp_path / "misfit.py").write_text(MISFIT)
    spec = plugin_spec(tmp_path, plugin="misfit.py", model={"name": "misfit", **options}, data={"name": "synthetic", "samples": 90, "classes": 3})
    result = train(tmp_path, spec)
    assert result.exit_code == 1
    (line,) = [line for line in result.output.strip().splitlines() if line.startswith("kexp: error:")]
    assert line.startswith(f"kexp: error: {tmp_path / 'misfit.py'}{words}") and "Traceback" not in result.output


def test_models_with_a_plugin_that_reuses_a_built_in_name_is_one_line(tmp_path):
    (tmp_path / "dup.py").write_text(TOWERS.replace('"towers"', '"mlp"'))
    result = CliRunner().invoke(app, ["models", "--plugin", str(tmp_path / "dup.py")])
    assert result.exit_code == 2
    assert result.output.strip() == f"kexp: error: {tmp_path / 'dup.py'}:10: plugin dup.py failed to import: ValueError: model 'mlp' is already registered by kexp.models.mlp"


def test_an_unknown_model_name_says_where_ones_own_come_from(tmp_path):
    result = CliRunner().invoke(app, ["validate", str(plugin_spec(tmp_path, plugin="kexp_example.models", model={"name": "towers"}))])
    assert "list its file or module under plugins:, or install its package" in result.output or "no module named" in result.output


def test_a_plugin_importing_keras_keeps_tensorflows_start_up_lines_off_the_screen(tmp_path):
    (tmp_path / "towers.py").write_text("import keras\n" + TOWERS)
    result = kexp_process(["validate", str(plugin_spec(tmp_path))], tmp_path, [])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.long  # 10 s: a pip install
def test_a_run_of_an_installed_plugin_that_is_gone_says_to_install_it(tmp_path):
    site = fake_installed_example(tmp_path / "site")
    spec = write_spec(tmp_path / "spirals.yaml", {"name": "spirals", "data": {"name": "spirals", "samples": 100}, "model": {"name": "mlp"},
                                                  "train": {"epochs": 1}})
    trained = kexp_process(["train", str(spec), "--runs-dir", str(tmp_path / "runs")], tmp_path, [site, EXAMPLE])
    assert trained.returncode == 0, trained.stderr
    recorded = json.loads((one_run(tmp_path) / "env.json").read_text())["plugins"]
    assert [(p["origin"], p["module"], p["version"]) for p in recorded] == [("entry point", "kexp_example", "0.1.0")]
    gone = kexp_process(["evaluate", str(one_run(tmp_path))], tmp_path, [])
    assert gone.returncode == 2
    assert "used entry point example (kexp_example 0.1.0), which is not installed here; install its package" in gone.stderr


SUBCLASSED_MODEL = '''
import keras
import kexp


@keras.saving.register_keras_serializable(package="test_plugins")
class TinyNet(keras.Model):
    def __init__(self, outputs=2, **kwargs):
        super().__init__(**kwargs)
        self.outputs_count = outputs
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.head = keras.layers.Dense(outputs, activation="softmax")

    def call(self, x):
        return self.head(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "outputs": self.outputs_count}


@kexp.model("tiny_subclass", kexp.Options)
def build(options, input_shape, num_outputs, task):
    """A subclassed keras.Model."""
    return TinyNet(num_outputs)
'''


@pytest.mark.parametrize("fmt", ["tflite", "saved_model"])
def test_a_subclassed_plugin_model_trains_evaluates_and_exports(tmp_path, fmt):
    (tmp_path / "tiny.py").write_text(SUBCLASSED_MODEL)
    spec = plugin_spec(tmp_path, plugin="tiny.py", model={"name": "tiny_subclass"}, data={"name": "synthetic", "samples": 120, "classes": 3})
    assert train(tmp_path, spec).exit_code == 0
    run = one_run(tmp_path)
    unload_all()
    assert CliRunner().invoke(app, ["evaluate", str(run)]).exit_code == 0
    exported = CliRunner().invoke(app, ["export", str(run), "--format", fmt])
    assert exported.exit_code == 0, exported.output
    assert "check: matches model.keras on" in exported.output
