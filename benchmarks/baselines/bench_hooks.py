"""The only instrumentation in the baseline scripts: their two arguments (the data path and
`--seed S`), a callback that prints the moment of the first training batch (start-up = process
start to it), and the metric printed as one line. Nothing else differs from the tutorials.

    python benchmarks/baselines/<script>.py DATA_PATH [--seed S]
"""

import argparse
import time

import keras

_parser = argparse.ArgumentParser()
_parser.add_argument("data", help="the data file or folder the tutorial reads")
_parser.add_argument("--seed", type=int, default=0)
_args = _parser.parse_args()
DATA, SEED = _args.data, _args.seed


class FirstBatch(keras.callbacks.Callback):
    """Prints `BENCH first_batch <epoch seconds>` once, at the first training batch."""

    def on_train_batch_begin(self, batch, logs=None):
        if not hasattr(self, "seen"):
            self.seen = time.time()
            print(f"BENCH first_batch {self.seen}", flush=True)


def report(metric: float) -> None:
    """Prints `BENCH metric <value>`, the number benchmarks/run.py compares."""
    print(f"BENCH metric {metric}", flush=True)
