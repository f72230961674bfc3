"""The only instrumentation in the baseline scripts: a seed from the command line, the moment of
the first training batch (start-up = process start to it), and the metric as one line.

    python benchmarks/baselines/<script>.py DATA_PATH [SEED]
"""

import sys
import time

import keras

SEED = int(sys.argv[2]) if len(sys.argv) > 2 else 0


class FirstBatch(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if not hasattr(self, "seen"):
            self.seen = time.time()
            print(f"BENCH first_batch {self.seen}", flush=True)


def report(metric: float) -> None:
    print(f"BENCH metric {metric}", flush=True)
