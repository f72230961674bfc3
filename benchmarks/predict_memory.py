"""Peak memory of `kexp predict` on large inputs: it must stream, so memory stays bounded.

    KEXP_DATA_DIR=../shared/data NLTK_DATA=../shared/nltk_data python benchmarks/predict_memory.py \
        [--kinds text csv npy idx] [--mb 40]

For each kind, trains its tutorial run once (configs/sms_spam.yaml, configs/pima.yaml,
configs/mnist_mlp.yaml with 1 epoch), writes an input of about --mb MB (text: the SMS messages
repeated, each numbered; csv: Pima's rows repeated; npy: MNIST's training images repeated, as
floats in [0, 1]; idx: the same images as an IDX file, gzipped), and runs
`kexp predict RUN FILE -o out.jsonl` under /usr/bin/time -v. Checks that every example is
answered once, in order (each row's `line`), and records seconds and peak RSS per kind in
benchmarks/results/predict_memory.json. Target (issue 23): <= 1.5 GB peak RSS for each.
"""

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, environment, peak_rss_mb, printed_run_dir, write_result

TARGET_MB = 1536
RUN_OF = {"text": ["configs/sms_spam.yaml"], "csv": ["configs/pima.yaml"],
          "npy": ["configs/mnist_mlp.yaml", "--set", "train.epochs=1"], "idx": ["configs/mnist_mlp.yaml", "--set", "train.epochs=1"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", nargs="+", choices=list(RUN_OF), default=list(RUN_OF))
    parser.add_argument("--mb", type=float, default=40.0)
    args = parser.parse_args()
    env = environment()
    data = Path(env["KEXP_DATA_DIR"])
    tmp = Path(tempfile.mkdtemp(prefix="kexp-predict-memory-"))
    results = {}
    try:
        runs: dict[str, Path] = {}
        for kind in args.kinds:
            key = " ".join(RUN_OF[kind])
            if key not in runs:
                runs[key] = trained_run(RUN_OF[kind], tmp / "runs", env)
            source, examples = write_input(kind, data, tmp, args.mb * 1e6)
            results[kind] = measure(runs[key], source, examples, tmp / f"{kind}.jsonl", env)
            print(json.dumps({kind: results[kind]}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    previous = ROOT / "benchmarks" / "results" / "predict_memory.json"
    merged = json.loads(previous.read_text()) if previous.exists() else {}
    merged = {k: v for k, v in merged.items() if k in RUN_OF}  # drop the one-kind layout of the first version
    write_result("predict_memory", {**merged, **results})
    if any(r["peak_rss_mb"] > TARGET_MB or not r["in_order"] for r in results.values()):
        sys.exit("a kind missed the target (peak RSS over 1.5 GB, or rows missing or out of order)")


def trained_run(config: list[str], runs: Path, env: dict) -> Path:
    train = subprocess.run([sys.executable, "-m", "kexp", "train", *config, "--runs-dir", str(runs), "--log-format", "plain"],
                           capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    return printed_run_dir(train.stdout)


def write_input(kind: str, data: Path, tmp: Path, size: float) -> tuple[Path, int]:
    """(the input file, how many examples it holds), about `size` bytes."""
    if kind == "text":
        messages = [line.split("\t", 1)[1] for line in (data / "sms" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()]
        return repeated_lines(tmp / "inputs.txt", [f"{m} #" for m in messages], size, numbered=True)
    if kind == "csv":
        rows = (data / "pima-indians-diabetes.data.csv").read_text().splitlines()
        return repeated_lines(tmp / "inputs.csv", rows, size, numbered=False)
    with gzip.open(data / "mnist" / "train-images-idx3-ubyte.gz", "rb") as f:
        images = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 28, 28)
    count = int(size // (28 * 28 * (4 if kind == "npy" else 1)))
    if kind == "npy":
        path = tmp / "inputs.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, 28, 28))
        for start in range(0, count, len(images)):
            n = min(len(images), count - start)
            out[start : start + n] = images[:n] / np.float32(255)
        out.flush()
        return path, count
    path = tmp / "inputs-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write((2051).to_bytes(4, "big") + count.to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big"))
        for start in range(0, count, len(images)):
            f.write(images[: min(len(images), count - start)].tobytes())
    return path, count


def repeated_lines(path: Path, lines: list[str], size: float, numbered: bool) -> tuple[Path, int]:
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        while f.tell() < size:
            line = lines[count % len(lines)]
            f.write(f"{line}{count}\n" if numbered else f"{line}\n")
            count += 1
    return path, count


def measure(run: Path, source: Path, examples: int, out: Path, env: dict) -> dict:
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "kexp", "predict", str(run), str(source), "-o", str(out)],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"kexp predict {source.name} failed: {result.stderr[-2000:]}")
    with open(out, encoding="utf-8") as f:
        lines = [json.loads(row)["line"] for row in f]
    return {"input_mb": round(source.stat().st_size / 1e6, 1), "examples": examples, "answered": len(lines),
            "in_order": lines == list(range(1, examples + 1)), "seconds": round(seconds, 1),
            "peak_rss_mb": peak_rss_mb(result.stderr), "target_peak_rss_mb": TARGET_MB}


if __name__ == "__main__":
    main()
