"""The MNIST tutorial's sweep as one plain Keras process (the baseline `kexp sweep` is timed against).

784-M(sigmoid)-10, adam, 20 epochs, batch 128, seed 1, for M = 10, 25, 50, 100, 150, 200
one after another; train and test accuracy of each. One JSON line per M, then one with the totals.

    KEXP_DATA_DIR=../shared/data python benchmarks/baselines/mnist_sweep_keras.py [--units 10 --epochs 1]

Reads LeCun's four IDX .gz files from $KEXP_DATA_DIR/mnist/; --units and --epochs only shorten it
for a smoke test (the defaults are the tutorial's settings). The final line's seconds count from
after `import keras`; benchmarks/sweep.py times the whole process.
"""

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

start = time.perf_counter()
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--units", type=int, nargs="+", default=[10, 25, 50, 100, 150, 200], help="hidden units to sweep")
parser.add_argument("--epochs", type=int, default=20)
args = parser.parse_args()
if not os.environ.get("KEXP_DATA_DIR"):
    sys.exit("set KEXP_DATA_DIR to the folder holding mnist/train-images-idx3-ubyte.gz etc.")
folder = Path(os.environ["KEXP_DATA_DIR"]) / "mnist"


def read_idx(name):
    """An IDX file: magic (2 zero bytes, type, ndim), ndim big-endian uint32 sizes, then uint8 data."""
    with gzip.open(folder / f"{name}.gz", "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


x_train = read_idx("train-images-idx3-ubyte").reshape(-1, 784).astype("float32") / 255
y_train = read_idx("train-labels-idx1-ubyte")
x_test = read_idx("t10k-images-idx3-ubyte").reshape(-1, 784).astype("float32") / 255
y_test = read_idx("t10k-labels-idx1-ubyte")
read_seconds = time.perf_counter() - start

for units in args.units:
    t = time.perf_counter()
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(units, activation="sigmoid"), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=0)
    fit_seconds = time.perf_counter() - t
    _, train_accuracy = model.evaluate(x_train, y_train, verbose=0)
    _, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(json.dumps({"units": units, "epochs": args.epochs, "train_accuracy": round(train_accuracy, 6), "test_accuracy": round(test_accuracy, 6),
                      "fit_seconds": round(fit_seconds, 2), "seconds": round(time.perf_counter() - t, 2)}), flush=True)
print(json.dumps({"total_wall_seconds": round(time.perf_counter() - start, 2), "read_seconds": round(read_seconds, 2), "units": args.units}), flush=True)
