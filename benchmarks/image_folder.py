"""image_folder streams from disk: peak memory must not grow with the number of images.

    KEXP_DATA_DIR=../shared/data python benchmarks/image_folder.py [--images 100000] [--baseline 10000] \
        [--size 32] [--work /tmp/kexp-image-folder]

Writes --images PNGs (MNIST's training digits, cycled, resized to --size and tinted to RGB, ten
class folders) once into --work (reused by later runs), then trains `kexp train` for 1 epoch
(an MLP of 32 units, batch 128, 10% held out for testing) on the first --baseline images and on
all of them, each a whole process under /usr/bin/time -v. Records peak RSS, seconds and
training images/s (training rows / fit seconds) per size, the ratios large / baseline, and what
the peak RSS and seconds of decoding all the large folder's images into one float32 NumPy array
instead (no training), in benchmarks/results/image_folder.json.
Target (issue 26): peak RSS of the large run <= 1.25 x the baseline's (bounded memory).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from common import ROOT, environment, peak_rss_mb, printed_run_dir, write_result

RSS_RATIO_TARGET = 1.25
WRITE_CHUNK = 2000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kexp-image-folder"))
    args = parser.parse_args()
    env = environment()
    folders = {n: write_folder(args.work / f"digits-{args.size}px-{n}", n, args.size, Path(env["KEXP_DATA_DIR"])) for n in (args.baseline, args.images)}
    results = {str(n): train_once(folder, n, args.size, args.work / "runs", env) for n, folder in folders.items()}
    base, large = results[str(args.baseline)], results[str(args.images)]
    summary = {"image_size": [args.size, args.size, 3], "runs": results, "in_memory": load_in_memory(folders[args.images], env),
               "peak_rss_ratio": round(large["peak_rss_mb"] / base["peak_rss_mb"], 3),
               "images_per_second_ratio": round(large["train_images_per_second"] / base["train_images_per_second"], 3),
               "target_peak_rss_ratio": RSS_RATIO_TARGET}
    print(json.dumps(summary, indent=2))
    write_result("image_folder", summary)
    if summary["peak_rss_ratio"] > RSS_RATIO_TARGET:
        sys.exit(f"peak RSS grew {summary['peak_rss_ratio']}x from {args.baseline} to {args.images} images (target <= {RSS_RATIO_TARGET}x)")


def write_folder(folder: Path, count: int, size: int, data_dir: Path) -> Path:
    """<folder>/<digit>/<n>.png, count images; kept for later runs (a finished folder has a DONE file)."""
    if (folder / "DONE").exists():
        return folder
    sys.path.insert(0, str(ROOT))
    from kexp.datasets.mnist import read_mnist_arrays

    arrays, _ = read_mnist_arrays(data_dir)
    images, labels = arrays["x_train"], arrays["y_train"]
    for digit in range(10):
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        chunks = [(folder, start, min(count, start + WRITE_CHUNK), size, images, labels) for start in range(0, count, WRITE_CHUNK)]
        list(pool.map(write_chunk, *zip(*chunks)))
    (folder / "DONE").write_text(f"{count} images\n")
    print(f"wrote {count:,} PNGs to {folder} in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def write_chunk(folder: Path, start: int, stop: int, size: int, images: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    for i in range(start, stop):
        row = i % len(images)
        grey = Image.fromarray(images[row]).resize((size, size), Image.Resampling.BILINEAR)
        tint = np.asarray(grey, dtype=np.float32)[..., None] * np.array([1.0, 0.8 + 0.2 * (i % 3) / 2, 0.6], np.float32)
        Image.fromarray(tint.astype(np.uint8)).save(folder / str(int(labels[row])) / f"{i:06d}.png", compress_level=1)


def train_once(folder: Path, count: int, size: int, runs: Path, env: dict) -> dict:
    """One `kexp train` process on the folder, 1 epoch: its peak RSS, seconds and training throughput."""
    spec = {"name": f"images-{count}", "seed": 0,
            "data": {"name": "image_folder", "path": str(folder), "image_size": [size, size], "color_mode": "rgb", "test_fraction": 0.1},
            "model": {"name": "mlp", "hidden_units": [32]},
            "train": {"epochs": 1, "batch_size": 128, "optimizer": "adam"}}
    spec_path = runs.parent / f"images-{count}.yaml"
    runs.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec))  # JSON is YAML
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "kexp", "train", str(spec_path), "--runs-dir", str(runs), "--log-format", "plain"],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"kexp train on {count} images failed: {result.stdout[-1500:]} {result.stderr[-1500:]}")
    metrics = json.loads((printed_run_dir(result.stdout) / "metrics.json").read_text())
    train_rows = metrics["data"]["train_size"]
    return {"images": count, "train_images": train_rows, "seconds": round(seconds, 1), "fit_seconds": round(metrics["fit_seconds"], 1),
            "train_images_per_second": round(train_rows / metrics["fit_seconds"]), "test_accuracy": round(metrics["test"]["accuracy"], 4),
            "startup_seconds": round(metrics["timing"]["startup_seconds"], 1), "peak_rss_mb": peak_rss_mb(result.stderr),
            "float32_array_mb": round(count * size * size * 3 * 4 / 2**20)}  # what the pixels would hold as an in-memory Split


# The other way to read a folder: every image decoded into one float32 array first (as a Split of
# pixels would hold it), in a process of its own, with TensorFlow imported as training would.
IN_MEMORY = """
import sys, time, numpy as np, tensorflow as tf
from pathlib import Path
from PIL import Image
started = time.perf_counter()
files = sorted(p for p in Path(sys.argv[1]).rglob("*.png"))
x = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files])
print(len(files), x.nbytes, time.perf_counter() - started)
"""


def load_in_memory(folder: Path, env: dict) -> dict:
    """Peak RSS and seconds of decoding the whole folder into a float32 NumPy array (no training)."""
    result = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", IN_MEMORY, str(folder)], capture_output=True, text=True, cwd=ROOT, env=env)
    if result.returncode != 0:
        sys.exit(f"loading {folder} into memory failed: {result.stderr[-1500:]}")
    count, nbytes, seconds = result.stdout.split()
    return {"images": int(count), "array_mb": round(int(nbytes) / 2**20), "load_seconds": round(float(seconds), 1),
            "peak_rss_mb": peak_rss_mb(result.stderr)}


if __name__ == "__main__":
    main()
