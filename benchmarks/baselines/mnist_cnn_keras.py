"""The Keras MNIST convnet tutorial as a plain script, 3 epochs (the benchmark's length):
Conv32-Conv64-MaxPool-Dropout(0.25)-Dense128-Dropout(0.5)-10, adam, batch 128.

    python benchmarks/baselines/mnist_cnn_keras.py ../shared/data/mnist [--seed S]
"""

import gzip

import keras
import numpy as np
from bench_hooks import DATA, SEED, FirstBatch, report


def load_idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


folder = DATA
x_train = load_idx(f"{folder}/train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1).astype("float32") / 255
y_train = keras.utils.to_categorical(load_idx(f"{folder}/train-labels-idx1-ubyte.gz", 8), 10)
x_test = load_idx(f"{folder}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1).astype("float32") / 255
y_test = keras.utils.to_categorical(load_idx(f"{folder}/t10k-labels-idx1-ubyte.gz", 8), 10)

keras.utils.set_random_seed(SEED)
model = keras.Sequential([
    keras.Input((28, 28, 1)),
    keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
    keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
    keras.layers.MaxPooling2D(pool_size=(2, 2)),
    keras.layers.Dropout(0.25),
    keras.layers.Flatten(),
    keras.layers.Dense(128, activation="relu"),
    keras.layers.Dropout(0.5),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=128, epochs=3, callbacks=[FirstBatch()])
score = model.evaluate(x_test, y_test, verbose=0)
print(f"Test accuracy: {score[1]:.4f}")
report(score[1])
