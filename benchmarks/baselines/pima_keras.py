"""The Pima tutorial as a plain Keras script (the baseline kexp is timed against).

    python benchmarks/baselines/pima_keras.py ../shared/data/pima-indians-diabetes.data.csv [--seed S]
"""

import keras
from bench_hooks import DATA, SEED, FirstBatch, report
from numpy import loadtxt

keras.utils.set_random_seed(SEED)
dataset = loadtxt(DATA, delimiter=",")
X, y = dataset[:, 0:8], dataset[:, 8]
model = keras.Sequential(
    [keras.Input((8,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1, activation="sigmoid")]
)
model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
model.fit(X, y, epochs=150, batch_size=10, callbacks=[FirstBatch()])
_, accuracy = model.evaluate(X, y)
print(f"Accuracy: {accuracy * 100:.2f}")
report(accuracy)
