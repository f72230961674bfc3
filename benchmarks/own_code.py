"""Issue 26's done-when, end to end with the real MNIST files: the user's code and data get in.

    KEXP_DATA_DIR=../shared/data python benchmarks/own_code.py [--work /tmp/kexp-own-code]

Each step is a `kexp` command in a fresh --work folder, as a user would type it:
  1. MNIST as one .npz (written from the IDX files) and a local plugin file (a copy of the example
     package's two_tower functional model): train 3 epochs, evaluate, predict 100 .npy rows, export
     to TFLite; then edit the plugin: evaluate must refuse (exit 2) until --allow-changed-code.
  2. An image folder of 600 digit PNGs (MNIST's training 0, 1 and 2, 200 each, 28x28): train the
     cnn, predict one PNG of each class.
  3. A base spec with a typo: `kexp validate` must name base.yaml and the typo's line.
  4. The example package installed with pip (into --work/site, not the environment): `kexp models`
     lists two_tower from its entry point.
Numbers (accuracies, exit codes, the messages) go to benchmarks/results/own_code.json.
Targets: test accuracy >= 0.95 (1) and >= 0.9 (2).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import ROOT, environment, printed_run_dir, write_result

EXAMPLE = ROOT / "examples" / "kexp-example-plugin"


def kexp(work: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kexp", *args], cwd=work, env=env or environment(), capture_output=True, text=True, timeout=1800)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def write_yaml(path: Path, document: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def mnist(data_dir: Path) -> dict[str, np.ndarray]:
    from kexp.datasets.mnist import read_mnist_arrays

    return read_mnist_arrays(data_dir)[0]


def plugin_on_npz(work: Path, arrays: dict[str, np.ndarray]) -> dict:
    np.savez(work / "mnist.npz", **arrays)
    shutil.copy(EXAMPLE / "kexp_example" / "models.py", work / "my_models.py")
    write_yaml(work / "two_tower.yaml", {
        "name": "two-tower-mnist", "plugins": ["my_models.py"],
        "data": {"name": "numpy", "path": str(work / "mnist.npz")},
        "model": {"name": "two_tower", "filters": 16, "units": 128},
        "train": {"epochs": 3, "batch_size": 128},
    })  # fmt: skip
    trained = kexp(work, "train", "two_tower.yaml", "--log-format", "plain")
    assert trained.returncode == 0, trained.stderr
    run = work / printed_run_dir(trained.stdout)
    metrics = json.loads((run / "metrics.json").read_text())
    evaluated = kexp(work, "evaluate", str(run), "--json")
    np.save(work / "rows.npy", arrays["x_test"][:100])
    predicted = kexp(work, "predict", str(run), "rows.npy", "--json")
    labels = [json.loads(line)["label"] for line in predicted.stdout.splitlines() if line.startswith("{")]
    exported = kexp(work, "export", str(run), "--format", "tflite")
    with (work / "my_models.py").open("a") as f:
        f.write("\n# edited after the run\n")
    refused = kexp(work, "evaluate", str(run))
    allowed = kexp(work, "evaluate", str(run), "--allow-changed-code", "--json")
    return {
        "run": str(run), "test_accuracy": metrics["test"]["accuracy"], "fit_seconds": metrics["fit_seconds"],
        "plugins_recorded": json.loads((run / "env.json").read_text())["plugins"],
        "evaluate": {"exit": evaluated.returncode, "test_accuracy": json.loads(evaluated.stdout)["results"]["test"]["metrics"]["accuracy"] if evaluated.returncode == 0 else None},
        "predict": {"exit": predicted.returncode, "rows": len(labels), "correct": sum(a == str(b) for a, b in zip(labels, arrays["y_test"][:100]))},
        "export": {"exit": exported.returncode, "check": next((line for line in exported.stdout.splitlines() if line.startswith("check:")), None)},
        "changed_plugin": {"exit": refused.returncode, "message": last_line(refused.stderr)},
        "allow_changed_code": {"exit": allowed.returncode, "warnings": json.loads(allowed.stdout)["warnings"] if allowed.returncode == 0 else None},
    }  # fmt: skip


def image_folder(work: Path, arrays: dict[str, np.ndarray]) -> dict:
    from PIL import Image

    folder = work / "digits"
    names = ["zero", "one", "two"]
    for digit, name in enumerate(names):
        (folder / name).mkdir(parents=True)
        for i, pixels in enumerate(arrays["x_train"][arrays["y_train"] == digit][:200]):
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    probes = []
    for digit, name in enumerate(names):  # test digits the folder does not hold
        path = work / f"probe_{name}.png"
        Image.fromarray(arrays["x_test"][arrays["y_test"] == digit][0]).save(path)
        probes.append(path)
    write_yaml(work / "digits.yaml", {
        "name": "digit-folder",
        "data": {"name": "image_folder", "path": str(folder), "image_size": [28, 28], "color_mode": "grayscale", "test_fraction": 0.2},
        "model": {"name": "cnn"}, "train": {"epochs": 8, "batch_size": 32},
    })  # fmt: skip
    trained = kexp(work, "train", "digits.yaml", "--log-format", "plain")
    assert trained.returncode == 0, trained.stderr
    run = work / printed_run_dir(trained.stdout)
    predicted = kexp(work, "predict", str(run), *map(str, probes), "--json")
    labels = [json.loads(line)["label"] for line in predicted.stdout.splitlines() if line.startswith("{")]
    metrics = json.loads((run / "metrics.json").read_text())
    return {"run": str(run), "images": 600, "test_size": metrics["data"]["test_size"], "test_accuracy": metrics["test"]["accuracy"],
            "predict": {"exit": predicted.returncode, "labels": labels, "expected": names}}


def base_typo(work: Path) -> dict:
    (work / "base.yaml").write_text("# shared settings\ntrain:\n  batch_size: 64\n  epochz: 3\n")
    (work / "spec.yaml").write_text("base: base.yaml\nname: with-base\ndata: synthetic\nmodel: mlp\n")
    validated = kexp(work, "validate", "spec.yaml")
    return {"exit": validated.returncode, "message": last_line(validated.stderr)}


def entry_point(work: Path) -> dict:
    site, source = work / "site", work / "kexp-example-plugin"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))  # pip builds in the source tree: not in ours
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site), str(source)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    env = {**environment(), "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listed = kexp(work, "models", "--json", env=env)
    rows = {row["name"]: row["origin"] for row in json.loads(listed.stdout)}
    return {"exit": listed.returncode, "two_tower": rows.get("two_tower")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/kexp-own-code"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    arrays = mnist(Path(environment()["KEXP_DATA_DIR"]))
    result = {"plugin_on_npz": plugin_on_npz(args.work, arrays), "image_folder": image_folder(args.work, arrays),
              "base_typo": base_typo(args.work), "entry_point": entry_point(args.work)}
    result["targets_met"] = {"npz_accuracy_0.95": result["plugin_on_npz"]["test_accuracy"] >= 0.95,
                             "image_folder_accuracy_0.9": result["image_folder"]["test_accuracy"] >= 0.9}
    print(json.dumps(result, indent=2))
    print(f"wrote {write_result('own_code', result)}")


if __name__ == "__main__":
    main()
