"""Reuse trained runs on the real data: evaluate reproduces metrics.json, predict labels raw inputs.

    KEXP_DATA_DIR=../shared/data NLTK_DATA=../shared/nltk_data python benchmarks/reuse.py

Trains configs/mnist_mlp.yaml and configs/sms_spam.yaml (about 1.5 min), then as whole
`kexp` processes: evaluate each run (test accuracy against metrics.json), predict five SMS
written here, predict ten MNIST test digits saved as PNG files (against the model's labels
for those test rows), and predict a 1,000-line text file (wall seconds). Writes
benchmarks/results/reuse.json.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, printed_run_dir, write_result

DATA = Path(os.environ.get("KEXP_DATA_DIR", "data")).resolve()
SMS = [
    "WINNER!! You have been selected for a 1000 cash prize. Call 09061701461 now to claim",
    "Free entry in our weekly draw: text WIN to 80082 to claim your guaranteed reward",
    "Hey, are we still on for lunch tomorrow at one?",
    "Sorry I'm running late, I'll call you when I get home",
    "URGENT! Your mobile has won a free holiday. Reply YES to 85233 now",
]
EXPECTED_SMS = ["spam", "spam", "ham", "ham", "spam"]  # as a reader would label them


def kexp(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kexp", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode != 0:
        sys.exit(f"kexp {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done, time.perf_counter() - start


def train(config: str, runs: Path) -> Path:
    done, _ = kexp("train", config, "--runs-dir", str(runs), "--data-dir", str(DATA))
    return printed_run_dir(done.stdout)


def evaluation(run: Path) -> dict:
    done, seconds = kexp("evaluate", str(run), "--data-dir", str(DATA), "--json")
    document = json.loads(done.stdout)
    test = document["results"]["test"]
    metrics_json = json.loads((run / "metrics.json").read_text())
    return {"seconds": round(seconds, 1), "evaluate_test": test["metrics"], "metrics_json_test": metrics_json["test"],
            "accuracy_identical": test["metrics"]["accuracy"] == metrics_json["test"]["accuracy"],
            "balanced_accuracy": test["balanced_accuracy"], "per_class": test["per_class"],
            "positive_class": document["positive_class"], "metrics_json_positive_class": metrics_json["positive_class"]}


def predictions(run: Path, *inputs: str) -> tuple[list[dict], float]:
    done, seconds = kexp("predict", str(run), *inputs, "--json")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()], seconds


def mnist_png_check(run: Path, folder: Path) -> dict:
    """Ten test digits as PNG files through `kexp predict`, against the model on the same test rows."""
    from PIL import Image

    from kexp.datasets.mnist import IMAGE_MAGIC, read_idx
    from kexp.models.saving import load_model
    from kexp.preprocessing import from_document

    images = read_idx(DATA / "mnist" / "t10k-images-idx3-ubyte.gz", IMAGE_MAGIC)[:10]
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"digit{i}.png")
        Image.fromarray(image).save(paths[-1])
    rows, seconds = predictions(run, *map(str, paths))
    fitted = from_document(json.loads((run / "preprocessing" / "preprocessing.json").read_text()), "preprocessing.json")
    model_labels = load_model(run / "model.keras").predict(fitted.transform(images), verbose=0).argmax(axis=1)
    return {"seconds": round(seconds, 1), "predict_labels": [r["label"] for r in rows], "model_labels": [str(d) for d in model_labels],
            "same": [r["label"] for r in rows] == [str(d) for d in model_labels]}


def main() -> None:
    runs = Path(tempfile.mkdtemp(prefix="kexp-reuse-"))
    mnist_run, sms_run = train("configs/mnist_mlp.yaml", runs), train("configs/sms_spam.yaml", runs)
    result = {"mnist_mlp": {"run": str(mnist_run), **evaluation(mnist_run), "png_digits": mnist_png_check(mnist_run, runs)},
              "sms_spam": {"run": str(sms_run), **evaluation(sms_run)}}
    rows, seconds = predictions(sms_run, *SMS)
    result["sms_spam"]["five_messages"] = {"seconds": round(seconds, 1), "labels": [r["label"] for r in rows],
                                           "probabilities": [round(r["probability"], 4) for r in rows],
                                           "as_a_reader_would": [r["label"] for r in rows] == EXPECTED_SMS}
    lines = [line.split("\t", 1)[1] for line in (DATA / "sms" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()[-1000:]]
    text_file = runs / "thousand.txt"
    text_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows, seconds = predictions(sms_run, str(text_file))
    result["sms_spam"]["thousand_lines"] = {"seconds": round(seconds, 1), "rows": len(rows), "spam": sum(r["label"] == "spam" for r in rows)}
    print(json.dumps(result, indent=2, default=str))
    write_result("reuse", result)


if __name__ == "__main__":
    main()
