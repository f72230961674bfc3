"""The MNIST dense tutorial as a plain Keras script: 784-100(sigmoid)-10, adam, 20 epochs, batch 128.

    python benchmarks/baselines/mnist_mlp_keras.py ../shared/data/mnist [--seed S]

keras.datasets.mnist.load_data() needs the internet, so the four IDX files are read with numpy.
"""

import gzip

import keras
import numpy as np
from bench_hooks import DATA, SEED, FirstBatch, report


def load_idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


folder = DATA
x_train = load_idx(f"{folder}/train-images-idx3-ubyte.gz", 16).reshape(-1, 784).astype("float32") / 255
y_train = load_idx(f"{folder}/train-labels-idx1-ubyte.gz", 8)
x_test = load_idx(f"{folder}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784).astype("float32") / 255
y_test = load_idx(f"{folder}/t10k-labels-idx1-ubyte.gz", 8)

keras.utils.set_random_seed(SEED)
model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(100, activation="sigmoid"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, epochs=20, batch_size=128, callbacks=[FirstBatch()])
loss, accuracy = model.evaluate(x_test, y_test)
print(f"test accuracy {accuracy:.4f}")
report(accuracy)
